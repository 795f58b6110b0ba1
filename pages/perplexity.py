"""Perplexity: the current run against its comparison (or every run), and perplexity over sparsity."""
from __future__ import annotations

import streamlit as st

from app import ui

st.title("Perplexity")
st.markdown("Perplexity of the pruned models next to the dense model, measured on the same windows "
            "(lower is better). Runs evaluated on different text or windows are grouped apart, never mixed.")
figs = ui.figures()
cur, cmp = ui.current_run(), ui.compare_run()
complete = ui.complete_runs()

if figs is not None:
    show_all = st.toggle("Show every finished run", key="ppl_all", value=False)
    if show_all:
        metas = [r.meta for r in reversed(complete)]
    else:
        metas = [r.meta for r in (cmp, cur) if r is not None]
    if metas:
        ui.chart(figs.perplexity_bars(metas, log_y=st.session_state.get("ppl_log", False)), key="ppl_bars")
        st.toggle("Logarithmic axis", key="ppl_log", value=False)
        if cur is not None:
            st.caption(f"Current run: {ui.measured_on(cur.meta)}")
    else:
        st.info("No finished run yet: start one on the Prune page, or queue a sweep on the Sweep page.")

    st.subheader("Perplexity versus sparsity")
    ref = cur or (complete[0] if complete else None)
    if ref is not None:
        model = ref.config.get("model")
        same_model = [r.meta for r in complete if r.config.get("model") == model and r.name != ref.name]
        ui.chart(figs.perplexity_vs_sparsity([ref.meta] + same_model), key="ppl_vs_sparsity")
        st.caption(f"Every finished run of {(ref.meta.get('model') or {}).get('label', model)} evaluated like "
                   f"{ref.name} ({ui.eval_caption(ref.meta)}); queue a sweep on the Sweep page to fill in the lines.")

st.subheader("Sweep")
st.markdown("A grid of methods × sparsities × patterns (and calibration sizes), queued as one batch, with the "
            "paper-style figures: see the **Sweep** page in the navigation.")
