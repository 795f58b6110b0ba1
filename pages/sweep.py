"""Sweep: a grid of methods × sparsities × patterns (× calibration sizes × layerwise allocation), queued as one
batch on the shared job runner, and the paper's figures drawn from the sweep's runs."""
from __future__ import annotations

import streamlit as st

from app import forms, ui
from app.bundle_controls import export_all_controls
from app.export_controls import export_controls
from app.jobs import MAX_QUEUE
from app.progress import job_panel, watch
from wanda_engine.core.parsing import parse_fraction, parse_list
from wanda_engine.sweep import grid as sw
from wanda_engine.outputs.bundle import SweepSource, build_bundle
from wanda_engine.core.errors import ConfigError, EngineError
from wanda_engine.core.status import SweepStatus
from wanda_engine.outputs.figures.catalog import sweep_figures
from wanda_engine.sweep.cost import estimate_work

st.title("Sweep")
st.markdown(
    "Prune the same model over a grid of settings — one run per point, all reusing the loaded model — and "
    "draw the Wanda paper's figures: **perplexity versus sparsity**, one line per method with the dense model "
    "as a reference, and **perplexity versus calibration samples** (the paper finds Wanda robust with few "
    "samples, SparseGPT much less so)."
)

PATTERN_CHOICES = ["unstructured", "2:4", "4:8"]
LAYERWISE = {"uniform": "Uniform (every block at the target)", "owl": "OWL (per-block, from outlier ratios)"}


def _base_values() -> dict:
    """The Prune page's settings (model, calibration, evaluation); the grid overrides the rest."""
    values = {k: st.session_state.get(f"f_{k}", v) for k, v in forms.DEFAULTS.items()}
    return {**values, "run_name": "", "pattern": "unstructured", "group": "default", "method": "wanda"}


def _config(name: str | None = None) -> sw.SweepConfig:
    values = _base_values()
    if values["calib"] == "upload":
        raise ConfigError("sweeps cannot use an uploaded calibration file; choose another calibration text on the Prune page")
    base = forms.build_request(values, ui.store())
    nsamples = parse_list(st.session_state.get("sw_nsamples", ""), "calibration sizes", int) or None
    return sw.SweepConfig(
        methods=st.session_state.get("sw_methods") or [], sparsities=parse_list(st.session_state.get("sw_sparsities", ""), "sweep sparsities", parse_fraction),
        patterns=st.session_state.get("sw_patterns") or [], nsamples=nsamples,
        layerwise=st.session_state.get("sw_layerwise") or [], base=base.prune, eval=base.eval, model=base.model,
        dtype=base.dtype, name=name)


def _queue() -> None:
    """Plan, write the manifest, queue every point as one batch; one sentence on bad input."""
    runner = ui.job_runner()
    try:
        store = ui.store()
        name = (st.session_state.get("sw_name") or "").strip() or sw.new_sweep_name(store)
        cfg = _config(name)
        plan = sw.plan_sweep(cfg)
        if not plan.requests:
            raise ConfigError("the grid plans no runs: every combination is invalid")
        if len(runner.queued()) + len(plan) > MAX_QUEUE:
            raise EngineError(f"the queue holds {len(runner.queued())} runs; {len(plan)} more would pass its "
                              f"limit of {MAX_QUEUE}. Wait for some to finish or shrink the grid")
        sw.write_manifest(store, cfg, plan, status=SweepStatus.QUEUED)
        jobs = [runner.submit(r, owner=ui.session_id(), label=f"{lab} · {name}", batch=name)
                for r, lab in zip(plan.requests, plan.labels)]
    except EngineError as e:
        st.session_state["_sweep_error"] = str(e)
        return
    st.session_state.pop("_sweep_error", None)
    st.session_state["sw_selected"] = name
    st.session_state["_sweep_queued"] = f"Queued sweep {name}: {len(jobs)} runs. Progress shows below and in the sidebar."
    watch([j.id for j in jobs], "sweep")


# --- the grid ------------------------------------------------------------------------------------------
st.subheader("Grid")
v = _base_values()
model = v["model_text"] if v["model_kind"] != "default" else "the embedded SmolLM2-135M"
evaluation = ("no perplexity" if v["eval_dataset"] == "none"
              else f"perplexity on {forms.EVAL_SOURCES.get(v['eval_dataset'], v['eval_dataset'])}, "
                   f"{v['eval_windows'] or 'all'} windows × {v['eval_seqlen']} tokens")
st.caption(f"Model, calibration and evaluation come from the **Prune** page: {model} · calibration "
           f"{v['nsamples']} × {v['seqlen']} tokens of {forms.CALIB_SOURCES.get(v['calib'], v['calib'])}, seed {v['seed']} · "
           f"{evaluation}.")
c1, c2 = st.columns(2)
methods = forms.method_choices()
c1.multiselect("Methods", list(methods), default=["magnitude", "wanda"], format_func=methods.get, key="sw_methods")
c2.text_input("Sparsities", value="0.5, 0.6, 0.7", key="sw_sparsities",
              help="Comma-separated fractions or percentages. N:M patterns fix the sparsity at N/M and ignore these.")
c1.multiselect("Patterns", PATTERN_CHOICES, default=["unstructured"], key="sw_patterns",
               help="N:M prunes N weights in every M consecutive inputs of each row.")
c2.text_input("Calibration sizes (optional)", value="", key="sw_nsamples", placeholder="e.g. 8, 32, 128",
              help="Numbers of calibration samples, each a point on the calibration-size axis; empty: the Prune page's "
                   f"{v['nsamples']}.")
c1.multiselect("Layerwise sparsity", list(LAYERWISE), default=["uniform"], format_func=LAYERWISE.get,
               key="sw_layerwise", help="OWL gives blocks with more outlier activations a lower sparsity (unstructured only).")
c2.text_input("Sweep name (optional)", key="sw_name", placeholder="named automatically",
              help="Letters, digits, '.', '_' and '-'; its runs are named after it.")

plan, plan_error = None, None
try:
    plan = sw.plan_sweep(_config())
except EngineError as e:
    plan_error = str(e)
if plan is not None:
    work = estimate_work(plan, [r.record for r in ui.complete_runs()])
    m1, m2, m3 = st.columns(3)
    m1.metric("Runs planned", work["runs"], help="One run per valid point of the grid; the dense model is measured once.")
    others = work["runs"] - work["calibrating_runs"]
    m2.metric("Calibration tokens", f"{work['calibration_tokens']:,}",
              help=f"Summed over the {work['calibrating_runs']} runs that calibrate"
                   + (f"; {others} prune from the weights alone and read none." if others else
                      "; every point calibrates, magnitude's too: its records compare its mask with Wanda's on the "
                      "same activations."))
    m3.metric("Estimated time", "unknown" if work["seconds"] is None else f"~{ui.fmt_seconds(work['seconds'])}",
              help="From this machine's past runs of this model alike (a Compare at these settings measures both "
                   "kinds of selection), the dense model's evaluation once unless cached; unknown until such runs "
                   "exist.")
    if work["unmeasured"]:
        st.caption("No time is estimated until a run like each of these has finished on this machine: "
                   + "; ".join(work["unmeasured"]) + ".")
    if plan.skipped:
        with st.expander(f"{len(plan.skipped)} combination(s) left out"):
            for label, why in plan.skipped:
                st.markdown(f"- **{label}**: {why}")
else:
    st.warning(plan_error)
busy = ui.job_runner().busy
st.button("Queue sweep" + (" (after the current run)" if busy else ""), type="primary", icon=":material/grid_view:",
          key="b_sweep", on_click=_queue, disabled=plan is None or not plan.requests)
if err := st.session_state.pop("_sweep_error", None):
    st.error(err)
if msg := st.session_state.pop("_sweep_queued", None):
    st.success(msg)

job_panel()


# --- the sweeps on disk -----------------------------------------------------------------------------------
st.subheader("Sweeps")
sweeps = sw.list_sweeps(ui.store())
if not sweeps:
    st.info("No sweep yet: choose a grid above and queue it.")
else:
    by_name = {s.name: s for s in sweeps}
    if st.session_state.get("sw_selected") not in by_name:
        st.session_state["sw_selected"] = sweeps[0].name

    def describe(name: str) -> str:  # fixed facts only: a label that changed as runs finish would reset the widget
        s = by_name[name]
        return f"{name} · {len(s.manifest['points'])} runs · {s.manifest.get('model', '?')} · {s.created.replace('T', ' ')}"

    sweep = by_name[st.selectbox("Sweep", list(by_name), key="sw_selected", format_func=describe)]
    points = sweep.points()
    done = sum(p["status"] == SweepStatus.COMPLETE for p in points)
    st.caption(f"Status: **{sweep.status}** · {done} of {len(points)} runs complete · manifest `{sweep.path}`")
    st.dataframe([{"point": p["label"], "status": p["status"], "perplexity": p.get("ppl"), "run": p["run"],
                   "error": p.get("error") or ""} for p in points], hide_index=True, width="stretch",
                 column_config={"perplexity": st.column_config.NumberColumn(format="%.2f")})
    if any(p["status"] == "planned" for p in points) and not ui.job_runner().busy:
        st.caption("Points marked 'planned' have no run: they were removed from the queue, or the server restarted.")
    complete = sweep.complete_runs()
    finished = [r.record for r in complete]
    if finished:
        for kind, fig in sweep_figures(finished).items():
            ui.chart(fig, key=f"sweep_fig_{kind}")
            export_controls(fig, f"{sweep.name}-ppl-vs-{kind}", f"sw_exp_{kind}")
        if len({p['nsamples'] for p in points}) < 2:
            st.caption("Give several calibration sizes to draw perplexity versus calibration samples as well.")
        st.markdown("**Export all** — the sweep's figures at print size, the grid as a LaTeX / Markdown / CSV "
                    "table, each run's calibration windows and REPRODUCE.md (the sweep command and one prune "
                    f"command per run); {len(complete)} of {len(points)} runs are complete and bundled.")
        source = SweepSource(sweep.name, sweep.manifest, tuple(complete))
        export_all_controls(sweep.name, "sw_all", lambda **kw: build_bundle(sweep=source, **kw))
    else:
        st.info("No point of this sweep has finished yet.")
