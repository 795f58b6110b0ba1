"""Perplexity: the current run against its comparison (or every run), perplexity over sparsity, and sweeps."""
from __future__ import annotations

import streamlit as st

from app import forms, ui
from app.progress import watch
from wanda_engine.errors import EngineError

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
        st.info("No finished run yet: start one on the Prune page, or queue a sweep below.")

    st.subheader("Perplexity versus sparsity")
    ref = cur or (complete[0] if complete else None)
    if ref is not None:
        model = ref.config.get("model")
        same_model = [r.meta for r in complete if r.config.get("model") == model and r.name != ref.name]
        ui.chart(figs.perplexity_vs_sparsity([ref.meta] + same_model), key="ppl_vs_sparsity")
        st.caption(f"Every finished run of {(ref.meta.get('model') or {}).get('label', model)} evaluated like "
                   f"{ref.name} ({ui.eval_caption(ref.meta)}); queue a sweep below to fill in the lines.")

st.subheader("Sweep")
st.caption("Queues one run per method and sparsity, with the model, calibration and evaluation settings of the "
           "Prune page (unstructured pattern).")
with st.form("sweep"):
    c1, c2 = st.columns(2)
    methods = c1.multiselect("Methods", [m for m in forms.METHODS], default=["magnitude", "wanda"],
                             format_func=forms.METHODS.get, key="sweep_methods")
    text = c2.text_input("Sparsities", value="0.3, 0.5, 0.6, 0.7", key="sweep_sparsities",
                         help="Comma-separated fractions or percentages, e.g. 0.3, 0.5, 70%")
    submitted = st.form_submit_button("Queue sweep", type="primary")
if submitted:
    try:
        values = {k: st.session_state.get(f"f_{k}", v) for k, v in forms.DEFAULTS.items()}
        values["run_name"] = ""
        if values["calib"] == "upload":
            raise EngineError("sweeps cannot use an uploaded calibration file; choose another calibration text on the Prune page")
        base = forms.build_request({**values, "pattern": "unstructured", "group": "default"}, ui.store())
        reqs = forms.sweep_requests(base, methods, forms.parse_sparsities(text))
        runner = ui.job_runner()
        jobs = [runner.submit(r, owner=ui.session_id()) for r in reqs]
        watch([j.id for j in jobs], "sweep")
        st.success(f"Queued {len(jobs)} runs; follow them in the sidebar or on the Prune page.")
    except EngineError as e:
        st.error(str(e))
