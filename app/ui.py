"""Shared Streamlit pieces: cached resources, the run selection, captions that say what a number measured."""
from __future__ import annotations


import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageDraw
from streamlit.runtime.scriptrunner import get_script_run_ctx

from app.jobs import JobRunner
from app.worker import WorkerProcess
from wanda_engine.core.errors import EngineError
from wanda_engine.outputs.figures import PLOTLY_CONFIG
from wanda_engine.outputs.figures.style import on_screen
from wanda_engine.store.run_record import RunRecord
from wanda_engine.store.matrix_records import MatrixRecord
from wanda_engine.store.run_store import Run, RunStore, load_run

CURRENT, COMPARE, PENDING = "current_run", "compare_run", "_pending_selection"
NONE = "(none)"


# --- cached resources (one per server) ------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def job_runner() -> JobRunner:
    """ONE job at a time per server, in one worker process that keeps the dense models loaded: a second
    job waits in the queue. The server process itself never holds a model."""
    return JobRunner(executor=WorkerProcess(), store_factory=RunStore)


def store() -> RunStore:
    return RunStore()  # $WANDA_RUNS or ./runs, read each time so tests can point it elsewhere


def session_id() -> str:
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "?"


def who(owner: str) -> str:
    return "you" if owner == session_id() else f"another session ({owner[:8]})"


@st.cache_resource(show_spinner=False)
def favicon() -> Image.Image:
    """A small drawn icon: a material-icon favicon would be fetched from Google's servers, an image is served locally."""
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((2, 2, 62, 62), radius=12, fill=(0, 114, 178, 255))
    for x in range(10, 56, 9):  # a sparse weight matrix: some cells pruned
        for y in range(10, 56, 9):
            if (x * 7 + y * 3) % 5 < 3:
                d.rectangle((x, y, x + 6, y + 6), fill=(255, 255, 255, 255))
    return img


# --- figures --------------------------------------------------------------------------------------
def chart(fig: go.Figure, key: str | None = None, rows: int | None = None, narrow: bool = False) -> None:
    """Every chart goes through here, sized as `style.on_screen` says: `rows`, a heatmap's row count; `narrow`,
    the chart sits in a half-width column."""
    st.plotly_chart(on_screen(fig, rows, narrow), config=PLOTLY_CONFIG, key=key)


def num_blocks(run: Run) -> int:
    return len({r.block for r in run.records()})


# --- runs -------------------------------------------------------------------------------------------
def all_runs() -> list[Run]:
    return store().list()


def complete_runs() -> list[Run]:
    return [r for r in all_runs() if r.complete]


@st.cache_resource(show_spinner=False, max_entries=16)
def _loaded_run(path: str, stamp: float) -> Run:
    run = load_run(path)
    run.records()  # load records and arrays once
    return run


def get_run(name: str | None) -> Run | None:
    """A complete run with its records loaded (cached until its run.json changes), or None."""
    if not name or name == NONE:
        return None
    try:
        path = store().path_for(name)
        stamp = (path / "run.json").stat().st_mtime
    except Exception:  # noqa: BLE001 - a deleted or renamed run
        return None
    try:
        run = _loaded_run(str(path), stamp)
    except EngineError:  # records damaged in place (same size): the Runs page lists it as corrupt
        return None
    return run if run.complete else None


def select_runs(current: str | None = None, compare: str | None = None) -> None:
    """Ask for a new selection; applied before the sidebar's widgets exist on the next script run."""
    pending = st.session_state.get(PENDING, {})
    if current is not None:
        pending[CURRENT] = current
    if compare is not None:
        pending[COMPARE] = compare
    st.session_state[PENDING] = pending


def current_run() -> Run | None:
    return get_run(st.session_state.get(CURRENT))


def compare_run() -> Run | None:
    return get_run(st.session_state.get(COMPARE))


def run_label(run: Run) -> str:
    """A finished run as the sidebar lists it: 'owl-wanda 70% · ppl 41.3 · SmolLM2-135M · NAME'."""
    record = run.record
    ppl = f" · ppl {record.ppl:.1f}" if record.ppl is not None else ""
    model = (record.model.label or record.request.model).split(" ")[0]
    return f"{record.label()}{ppl} · {model} · {run.name}"


# --- what a number was measured on ------------------------------------------------------------------
def eval_caption(record: RunRecord) -> str:
    ev = record.eval
    if ev is None:
        return "perplexity not measured (evaluation was skipped)"
    return f"perplexity on {ev.describe()}"


def calib_caption(record: RunRecord) -> str:
    prune = record.request.prune
    if not prune.calibrate:
        return "pruned from the weights alone (no calibration)"
    return f"calibrated on {prune.nsamples} × {prune.seqlen} tokens of {record.calibration.text_name(prune.calib)}, seed {prune.seed}"


def measured_on(record: RunRecord) -> str:
    return f"{record.model.label or record.request.model} · {calib_caption(record)} · {eval_caption(record)}"


def run_caption(run: Run) -> None:
    st.caption(f"Run **{run.name}** — {measured_on(run.record)}")


def require_current_run() -> Run | None:
    run = current_run()
    if run is None:
        st.info("No finished run is selected. Start one on the **Prune** page (try *Compare magnitude vs Wanda*), "
                "then pick it as the current run in the sidebar.")
    return run


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "…"
    s = max(round(s), 0)
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s} s"


def pick_matrix(run: Run, key: str, default: MatrixRecord | None = None) -> MatrixRecord | None:
    """Block and matrix selectors for the run's records; returns the chosen MatrixRecord (or None).
    `default`: the record selected first (else block 0's first matrix)."""
    records = run.records()
    if not records:
        st.info("This run has no per-matrix records.")
        return None
    blocks = sorted({r.block for r in records})
    by_key = {(r.block, r.name): r for r in records}
    if st.session_state.get(f"{key}_run") != run.name:  # a new run: start at the default matrix
        st.session_state[f"{key}_run"] = run.name
        if default is not None:
            st.session_state[f"{key}_block"], st.session_state[f"{key}_matrix"] = default.block, default.name
    if st.session_state.get(f"{key}_block") not in blocks:
        st.session_state[f"{key}_block"] = blocks[0]
    c1, c2 = st.columns([1, 2])
    block = c1.selectbox("Block", blocks, key=f"{key}_block", format_func=lambda b: f"block {b}")
    names = [r.name for r in records if r.block == block]
    if st.session_state.get(f"{key}_matrix") not in names:
        st.session_state[f"{key}_matrix"] = names[0]
    name = c2.selectbox("Matrix", names, key=f"{key}_matrix")
    return by_key.get((block, name))
