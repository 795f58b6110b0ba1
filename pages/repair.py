"""Repair: how much of the pruning damage a weight update, sparse fine-tuning or LoRA undoes, at the same sparsity."""
from __future__ import annotations

from typing import Any

import streamlit as st

from app import repairs, ui
from app.export_controls import export_controls
from app.jobs import JobView
from app.messages import JobStatus
from app.progress import watch
from wanda_engine.outputs import figures
from wanda_engine.core.errors import EngineError
from wanda_engine.outputs.figures.repair import NO_REFERENCE, budget, dense_reference, takes_weight_update
from wanda_engine.repair.estimate import estimate_seconds
from wanda_engine.repair.record import load_repairs
from wanda_engine.store.run_store import Run

ERROR, NOTICE, SEEN_CURRENT = "_repair_error", "_repair_notice", "_repair_seen_current"

st.title("Repair a pruned model")
st.markdown(
    "Wanda prunes without retraining. How much of the damage can be undone **without losing a single zero**? "
    "The Wanda paper tries a **weight update** on the fixed mask (SparseGPT's OBS reconstruction of the kept "
    "weights, its ablation), **sparse fine-tuning** (the pruned weights' gradients zeroed) and **LoRA**; here LoRA "
    "is merged as W + (BA) ⊙ mask, so the merged model keeps exactly the pruned zeros (a plain merge would "
    "fill them in). Training on the same author as the evaluation text also adapts any model to that style: "
    "the **dense model fine-tuned with the same budget** is the fair reference.")


def _pickable(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.record is not None and r.record.ppl is not None and (r.record.sparsity or 0) > 0]


def _choose_run() -> Run | None:
    runs = _pickable(ui.complete_runs())
    if not runs:
        st.info("No finished, evaluated pruned run yet: prune one on the **Prune** page, then come back.")
        return None
    names = [r.name for r in runs]
    current = st.session_state.get(ui.CURRENT)
    if st.session_state.get(SEEN_CURRENT) != current or st.session_state.get("rp_run") not in names:
        st.session_state[SEEN_CURRENT] = current  # the sidebar's current run, whenever it changes
        st.session_state["rp_run"] = current if current in names else names[0]
    labels = {r.name: ui.run_label(r) for r in runs}
    name = st.selectbox("Pruned run to repair", names, key="rp_run", format_func=labels.get)
    return next(r for r in runs if r.name == name)


def _values() -> dict[str, Any]:
    return {k: st.session_state.get(f"rp_{k}", v) for k, v in repairs.DEFAULTS.items()}


def _form() -> None:
    for key, value in repairs.DEFAULTS.items():
        st.session_state.setdefault(f"rp_{key}", value)
    st.radio("Repair", list(repairs.REPAIRS), format_func=repairs.REPAIRS.get, key="rp_kind")
    lora = st.session_state.rp_kind.startswith("lora")
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("Steps", 1, 100_000, step=10, key="rp_steps")
    c2.number_input("Batch (windows per step)", 1, 256, step=1, key="rp_batch")
    c3.number_input("Tokens per window", 8, 8192, step=8, key="rp_seqlen")
    c4.number_input("Evaluate every (steps)", 1, 100_000, step=5, key="rp_eval_every",
                    help="Perplexity on the pruned run's evaluation windows: before training, every K steps, "
                         "at the end.")
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("Learning rate (0 = the method's default)", 0.0, 1.0, step=1e-5, format="%.6f", key="rp_lr")
    c2.number_input("LoRA rank", 1, 1024, step=1, key="rp_rank", disabled=not lora)
    c3.number_input("LoRA alpha", 0.1, 4096.0, step=1.0, key="rp_alpha", disabled=not lora)
    c4.text_input("Training text (.txt, optional)", key="rp_train_text", placeholder="the run's calibration text",
                  help="Empty: the run's calibration text with the evaluation text excluded (for the embedded "
                       "default, Emma to train and Pride and Prejudice to evaluate, never the same windows).")


def _start(run: Run, dense: bool = False) -> None:
    """Queue the form's repair (or, `dense`, the dense fine-tune with the form's budget); one sentence if refused."""
    try:
        values = {**_values(), **({"kind": "dense"} if dense else {})}
        request = repairs.build_request(run, values)
        job = ui.job_runner().submit(request, owner=ui.session_id())
    except EngineError as e:
        st.session_state[ERROR] = str(e)
        return
    st.session_state.pop(ERROR, None)
    watch([job.id], "repair")


def _queue_obs(run: Run) -> None:
    try:
        job = ui.job_runner().submit(repairs.obs_request(run.record), owner=ui.session_id())
    except EngineError as e:
        st.session_state[ERROR] = str(e)
        return
    st.session_state[NOTICE] = f"Queued **{job.label}**: its bar fills in when it finishes."
    watch([job.id], "sweep")  # a comparison point: the current run stays the one being repaired


def _estimate(run: Run, previous: list) -> None:
    try:
        request = repairs.build_request(run, _values())
    except EngineError:  # said in one sentence when Start is pressed
        return
    seconds = estimate_seconds(request, run.record, previous)
    st.caption(f"Budget: {budget(request.config)} ({request.config.label()}). Estimated {repairs.minutes(seconds)} "
               "on this machine: the training at the pace of the last repair alike here (or of the embedded model "
               "on 2 cores), the evaluations at the run's own, and re-creating the pruned model if it was not saved.")


def _show_job(job: JobView, run: Run) -> None:
    if job.status == JobStatus.QUEUED:
        st.markdown(f":material/schedule: Queued: **{job.label}** waits for the job ahead (one job at a time).")
        return
    left = "time left not known yet" if job.time_left_s is None else f"{repairs.minutes(job.time_left_s)} left"
    st.progress(job.step / max(job.steps, 1), text=f"{job.label}: step {job.step}/{job.steps} · "
                f"{job.tokens_seen:,} tokens seen · {left}")
    ui.chart(figures.repair_progress(job.losses, job.evals, job.request.config, run.record),
             key=f"rp_live_{job.id}")
    if job.cancel_requested:
        st.caption("Cancelling: the repair stops after the current step; the pruned run is untouched.")
    else:
        st.button("Cancel repair", key=f"rp_cancel_{job.id}", icon=":material/stop:",
                  on_click=ui.job_runner().cancel, args=(job.id,))


@st.fragment(run_every=2.0)
def _live(run: Run) -> None:
    jobs = repairs.repair_jobs(ui.job_runner(), run.name)
    if not jobs:
        st.rerun()  # it finished since the page last ran in full: reload to show its results
    for job in jobs:
        _show_job(job, run)


def _results(run: Run, previous: list) -> None:
    record = run.record
    obs = repairs.obs_twin(record, ui.complete_runs()) if takes_weight_update(record) else None
    st.subheader("Dense, pruned and repaired, at the same sparsity")
    fig = figures.repair_bars(record, previous, obs)
    ui.chart(fig, key="rp_bars")
    export_controls(fig, f"repair bars {run.name}", key="rp_bars_export")
    if summary := figures.repair_summary(record, previous, obs):
        st.markdown(summary)
    if takes_weight_update(record) and obs is None:
        st.button(f"Queue {repairs.obs_request(record).prune.label} (the +weight update bar)", key="rp_queue_obs",
                  on_click=_queue_obs, args=(run,), help="The same prune with the kept weights updated by "
                  "SparseGPT's OBS solve on the fixed mask.")
    if dense_reference(record, previous) is None:
        st.caption(NO_REFERENCE[0].upper() + NO_REFERENCE[1:] + ".")
        st.button("Queue the dense fine-tune with the budget above", key="rp_queue_dense", on_click=_start,
                  args=(run, True))
    finished = [r for r in previous if r.losses]
    if finished:
        st.subheader("Training loss and perplexity")
        loss = figures.repair_loss(finished)
        ui.chart(loss, key="rp_loss")
        export_controls(loss, f"repair loss {run.name}", key="rp_loss_export")
        st.dataframe([{"repair": r.name, "status": r.status, "what": r.label(), "evaluated": r.evaluated,
                       "start": r.start, "tokens seen": r.tokens_seen, "ppl before": r.ppl_before,
                       "ppl after": r.ppl_after, "sparsity before": r.sparsity_before,
                       "sparsity after": r.sparsity_after,
                       "mask unchanged": r.mask_sha256_before == r.mask_sha256_after if r.mask_sha256_after else None,
                       "train s": r.timings.get("train_s"), "peak RSS MiB": r.peak_rss_mib} for r in previous],
                     hide_index=True)
        st.caption(f"Perplexities on {record.eval.describe() if record.eval else 'its windows'}; sparsity over the "
                   "decoder blocks' prunable weights; 'mask unchanged': the checksum of the zeros before and after "
                   "(a dense fine-tune changes it by design); peak RSS: the worker process's peak resident memory.")


run = _choose_run()
if run is not None:
    ui.run_caption(run)
    previous = load_repairs(run.path)
    _form()
    _estimate(run, previous)
    busy = ui.job_runner().busy
    st.button("Start repair" + (" (queue)" if busy else ""), key="rp_start", type="primary",
              icon=":material/healing:", on_click=_start, args=(run,))
    if err := st.session_state.pop(ERROR, None):
        st.error(err)
    if notice := st.session_state.pop(NOTICE, None):
        st.success(notice)
    if repairs.repair_jobs(ui.job_runner(), run.name):
        _live(run)
    elif (last := repairs.last_repair_job(ui.job_runner(), run.name, ui.session_id())) and last.error:
        (st.warning if last.status == JobStatus.CANCELLED else st.error)(f"{last.label}: {last.error}")
    _results(run, previous)
