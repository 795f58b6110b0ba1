"""Perplexity: the current run against its comparison (or every run), and perplexity over sparsity."""
from __future__ import annotations

import streamlit as st

from app import ui
from app.runs_table import model_runs
from wanda_engine.outputs import figures

st.title("Perplexity")
st.markdown("Perplexity of the pruned models next to the dense model, measured on the same windows "
            "(lower is better). Runs evaluated on different text or windows are grouped apart, never mixed.")
cur, cmp = ui.current_run(), ui.compare_run()
complete = ui.complete_runs()

show_all = st.toggle("Show every finished run", key="ppl_all", value=False)
shown = [r.record for r in reversed(complete)] if show_all else [r.record for r in (cmp, cur) if r is not None]
if shown:
    ui.chart(figures.perplexity_bars(shown, log_y=st.session_state.get("ppl_log", False)), key="ppl_bars")
    st.toggle("Logarithmic axis", key="ppl_log", value=False)
    if cur is not None:
        st.caption(f"Current run: {ui.measured_on(cur.record)}")
else:
    st.info("No finished run yet: start one on the Prune page, or queue a sweep on the Sweep page.")

st.subheader("Perplexity versus sparsity")
ref = cur or (complete[0] if complete else None)
if ref is not None:
    ui.chart(figures.perplexity_vs_sparsity(model_runs(ref, complete)), key="ppl_vs_sparsity")
    st.caption(f"Every finished run of {ref.record.model.label or ref.record.request.model} evaluated like "
               f"{ref.name} ({ui.eval_caption(ref.record)}); queue a sweep on the Sweep page to fill in the lines.")

st.subheader("Sweep")
st.markdown("A grid of methods × sparsities × patterns (and calibration sizes), queued as one batch, with the "
            "paper-style figures: see the **Sweep** page in the navigation.")
