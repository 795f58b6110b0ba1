"""Live job progress: polled fragments that read the shared runner's state (never block the page)."""
from __future__ import annotations

import streamlit as st

from app import ui
from app.jobs import PRUNE, REPAIR, JobView
from app.messages import ENDED, JobStatus
from wanda_engine.config import GenerateRequest
from wanda_engine.core.stages import label as stage_label
from wanda_engine.outputs import figures

BATCHES = "_batches"  # batch id -> {"kind": "compare"|"sweep"|"single", "jobs": [ids]}, submitted by this session
SEEN = "_seen_finished"  # id of the newest finished job this session has reloaded for
BUSY_SEEN = "_busy_seen"  # whether the runner was busy when this session's page last ran in full
COMPARE_DONE = "_compare_done"  # the sentence that says what this session's last Compare took


def watch(job_ids: list[int], kind: str) -> None:
    """Remember jobs this session submitted, to select their runs once they finish."""
    batches = st.session_state.setdefault(BATCHES, {})
    batch = f"b{min(job_ids)}"
    batches[batch] = {"kind": kind, "jobs": list(job_ids)}


def _finish_batches() -> bool:
    """Select the runs of this session's finished batches. True if the whole page should reload."""
    runner = ui.job_runner()
    batches: dict[str, dict] = st.session_state.get(BATCHES, {})
    changed = False
    for batch, info in list(batches.items()):
        jobs = [j for j in (runner.job(i) for i in info["jobs"]) if j is not None]  # None: forgotten (server cache cleared)
        if any(j.status not in ENDED for j in jobs):
            continue
        done = [j for j in jobs if j.status == JobStatus.COMPLETE and j.run_name]
        if info["kind"] == "compare" and len(done) == 2:
            by_method = {j.request.prune.method: j.run_name for j in done}
            ui.select_runs(current=by_method.get("wanda", done[-1].run_name),
                           compare=by_method.get("magnitude", done[0].run_name))
            st.session_state[COMPARE_DONE] = compare_total(done)
        elif done and info["kind"] not in ("sweep", "score", "generate"):  # these leave the selection as it was
            ui.select_runs(current=done[-1].run_name)
        del batches[batch]
        changed = True
    history = runner.history()
    newest = history[0].id if history else None
    if st.session_state.get(SEEN, newest) != newest:  # someone's job finished: the run lists changed
        changed = True
    st.session_state[SEEN] = newest
    return changed


def compare_total(jobs: list[JobView]) -> str:
    """'Compare finished in 1:12: magnitude 50% 0:18, then wanda 50% 0:54 (the dense model's evaluation 0:30 of
    it)': what the pair took, measured here, from the first start to the last end."""
    jobs = sorted(jobs, key=lambda j: j.started or 0.0)
    total = max(j.finished or 0.0 for j in jobs) - min(j.started or 0.0 for j in jobs)
    parts = ", then ".join(f"{j.label} {ui.fmt_seconds(j.elapsed_s)}" for j in jobs)
    dense = [(j.label, j.stage_seconds["eval-dense"]) for j in jobs if j.stage_seconds.get("eval-dense", 0.0) >= 1.0]
    dense_txt = "".join(f" (the dense model's evaluation {ui.fmt_seconds(s)} of {label}'s; cached from now on)"
                        for label, s in dense)
    return f"Compare finished in {ui.fmt_seconds(total)}: {parts}{dense_txt}."


def _batch_line(info: dict) -> None:
    """A running Compare as one: which of its runs, the time so far and the time left for both."""
    runner = ui.job_runner()
    jobs = [j for j in (runner.job(i) for i in info["jobs"]) if j is not None]
    running = next((j for j in jobs if j.status == JobStatus.RUNNING), None)
    if running is None or running.batch is None:
        return
    so_far = sum(j.elapsed_s for j in jobs if j.started)
    left = runner.batch_time_left(running.batch)
    position = sorted(j.id for j in jobs).index(running.id) + 1
    st.markdown(f"**Compare**: run {position} of {len(jobs)} · {ui.fmt_seconds(so_far)} so far · "
                + (f"~{ui.fmt_seconds(left)} left for both" if left is not None else
                   "time left for both not yet measured on this machine"))


def _progress_text(job: JobView) -> tuple[float, str]:
    stage = job.stage
    if job.kind == REPAIR and job.step:
        return job.step / job.steps, f"step {job.step}/{job.steps} · loss {job.losses[-1][1]:.3f}"
    if stage == "prune" and job.num_blocks:
        block = min(job.block + 1, job.num_blocks)
        matrix = f" · {job.matrix}" if job.matrix else ""
        return job.prune_fraction, f"block {block}/{job.num_blocks}{matrix}"
    if job.stage_total:  # an evaluation, window by window
        return job.stage_done / job.stage_total, f"{stage_label(stage)}: window {job.stage_done}/{job.stage_total}"
    if stage in ("eval", "save"):
        return 1.0, stage_label(stage)
    return 0.0, stage_label(stage)


def time_left_text(job: JobView) -> tuple[str, str]:
    """(label, value) of the time left: the run's ('~1:10', '~0:40 + eval'), else the current stage's own
    ('Time left in this stage', '~25 s'), else '…'."""
    if job.time_left_s is not None:
        return "Time left (estimate)", f"~{ui.fmt_seconds(job.time_left_s)}" + (" + eval" if job.time_left_partial else "")
    if job.stage_left_s is not None:
        return "Time left in this stage", f"~{ui.fmt_seconds(job.stage_left_s)}"
    return "Time left (estimate)", "…"


def _job_line(job: JobView) -> str:
    model = job.model if job.model != "default" else "embedded SmolLM2-135M"
    if "/" in model and len(model) > 40:
        model = "…" + model[-38:]
    return f"**{job.label}** on `{model}`, started by {ui.who(job.owner)}"


def _running(job: JobView, live_chart: bool = True) -> None:
    fraction, text = _progress_text(job)
    st.markdown(f":material/hourglass_top: Running {_job_line(job)} · {stage_label(job.stage)}")
    st.progress(fraction, text=text)
    c1, c2, c3, c4 = st.columns([1, 1, 1, 1])
    c1.metric("Elapsed", ui.fmt_seconds(job.elapsed_s))
    c2.metric(*time_left_text(job),
              help="Pruning extrapolated from the blocks done so far, an evaluation from its windows; the other "
                   "stages from the last run alike on this server, else from this machine's past runs alike. "
                   "Nothing is promised for a stage no run alike has measured here.")
    if job.kind == REPAIR and job.evals:
        c3.metric("Last perplexity", f"{job.evals[-1][2]:.2f}", help=f"after step {job.evals[-1][0]}, on the "
                  "pruned run's evaluation windows (see the Repair page)")
    structured = job.kind == PRUNE and job.request.prune.structure is not None  # its blocks report what they lost
    if job.blocks:
        c3.metric("Removed so far" if structured else "Sparsity so far", f"{job.blocks[-1].sparsity_so_far:.1%}",
                  help="Of the decoder blocks' parameters pruned so far" if structured else None)
        error = job.blocks[-1].block_error
        why_none = ("every block is scored on the dense model and pruned at the end" if structured
                    else "pruned from the weights alone, without calibration")
        c4.metric("Last block's output error", "—" if error is None else f"{error:.4f}",
                  help="‖y_pruned − y_dense‖² / ‖y_dense‖² of the block on the calibration windows"
                       + (f"; none here: {why_none}" if error is None else ""))
    if job.cancel_requested:
        st.caption("Cancelling: the " + ("repair stops after the current step." if job.kind == REPAIR
                                        else "run stops at the next block or stage boundary."))
    else:
        c4.button("Cancel run", key=f"cancel_{job.id}", icon=":material/stop:", on_click=ui.job_runner().cancel,
                  args=(job.id,), help="Stops at the next block or stage; the run is kept, marked cancelled.")
    if live_chart and job.blocks:
        fig = figures.block_progress(job.blocks, structured=structured)
        if job.num_blocks:  # the whole model's width from the start: the chart fills in block by block
            fig.update_xaxes(range=[-0.5, job.num_blocks - 0.5])
        ui.chart(fig, key=f"live_blocks_{job.id}")


def _queued(queued: list[JobView]) -> None:
    if not queued:
        return
    st.markdown(f"**Queue** ({len(queued)} waiting; one run at a time on this server)")
    for job in queued:
        c1, c2 = st.columns([5, 1])
        c1.markdown(f":material/schedule: Queued: {_job_line(job)}")
        c2.button("Remove", key=f"unqueue_{job.id}", on_click=ui.job_runner().cancel, args=(job.id,))


def _made(job: JobView) -> str:
    """What a finished job left in the store: its run, a repair of a run, or a generation record."""
    if isinstance(job.request, GenerateRequest):
        return f" → generation `{job.request.name}`" if job.request.name else ""
    repair = f", repair `{job.repair_name}`" if job.repair_name else ""
    return f" → run `{job.run_name}`{repair}" if job.run_name else ""


def _recent(history: list[JobView]) -> None:
    if total := st.session_state.get(COMPARE_DONE):
        st.success(total, icon=":material/timer:")
    mine = [j for j in history if j.owner == ui.session_id()][:4]
    for job in mine:
        if job.status == JobStatus.COMPLETE:
            st.success(f"Finished **{job.label}** in {ui.fmt_seconds(job.elapsed_s)}{_made(job)}",
                       icon=":material/check_circle:")
        elif job.status == JobStatus.FAILED:
            st.error(f"{job.label} failed: {job.error}")
        elif job.status == JobStatus.CANCELLED:
            st.warning(f"{job.label} was cancelled: {job.error}")


def _panel(live: bool) -> None:
    runner = ui.job_runner()
    if live and (_finish_batches() or runner.busy != st.session_state.get(BUSY_SEEN)):
        st.rerun()
    current, queued = runner.current(), runner.queued()
    if current is None and not queued:
        _recent(runner.history())
        return
    for info in st.session_state.get(BATCHES, {}).values():
        if info["kind"] == "compare":
            _batch_line(info)
    if current is not None:
        _running(current)
    _queued(queued)
    _recent(runner.history())


@st.fragment(run_every=2.0)
def _live_panel() -> None:
    _panel(live=True)


@st.fragment
def _idle_panel() -> None:
    _panel(live=False)


def sync() -> None:
    """At the top of every full script run, before the run selectors exist: select the runs of this
    session's finished batches and note whether the runner is busy. The polling fragments compare
    against this and reload the page only when something changed since (never during a full run,
    where a rerun would swallow the click that started it)."""
    _finish_batches()
    st.session_state[BUSY_SEEN] = ui.job_runner().busy


def job_panel() -> None:
    """The Prune page's progress area: live (polled every second) while anything runs or waits."""
    busy = ui.job_runner().busy or bool(st.session_state.get(BATCHES))
    (_live_panel if busy else _idle_panel)()


def _sidebar_body() -> None:
    runner = ui.job_runner()
    if _finish_batches() or runner.busy != st.session_state.get(BUSY_SEEN):
        st.rerun()  # a run started or ended (maybe another session's): reload the page and its run lists
    current, queued = runner.current(), runner.queued()
    if current is None:
        st.caption(f"{len(queued)} run(s) queued" if queued else "Idle — start runs on the Prune page.")
        return
    fraction, text = _progress_text(current)
    st.progress(fraction, text=f"{current.label}: {text}")
    st.caption(f"started by {ui.who(current.owner)}" + (f" · {len(queued)} queued" if queued else ""))


@st.fragment(run_every=4.0)
def _sidebar_live() -> None:
    _sidebar_body()


@st.fragment(run_every=5.0)
def _sidebar_idle() -> None:
    _sidebar_body()


def sidebar_job_status() -> None:
    """The job line in the shared sidebar, polled on every page: live while busy, a slow check otherwise."""
    st.markdown("### Job")
    (_sidebar_live if st.session_state.get(BUSY_SEEN) or st.session_state.get(BATCHES) else _sidebar_idle)()
