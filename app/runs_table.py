"""The Runs page's table and the figures it can export. No Streamlit."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from wanda_engine.core.names import text_title
from wanda_engine.core.status import RunStatus
from wanda_engine.outputs.bundle import same_model_runs
from wanda_engine.outputs.figures import catalog
from wanda_engine.store.run_record import RunRecord
from wanda_engine.store.matrix_records import MatrixRecord
from wanda_engine.store.run_store import Run

COLUMNS = ["name", "status", "method", "target", "pattern", "group", "achieved", "perplexity", "dense ppl", "eval",
           "calibration", "model", "created", "time (s)", "error"]
STATUS_MARK = {RunStatus.COMPLETE: "✔ complete", RunStatus.FAILED: "✘ failed", RunStatus.CANCELLED: "■ cancelled",
               RunStatus.RUNNING: "… running", RunStatus.INTERRUPTED: "✘ interrupted", RunStatus.CORRUPT: "✘ corrupt"}


def model_runs(run: Run, complete: list[Run]) -> list[RunRecord]:
    """`run`'s record first, then those of every other finished run of the same model."""
    return same_model_runs([run], complete)


def build_figure(which: str, run: Run, compare: Run | None, record: MatrixRecord | None,
                 complete: list[Run]) -> go.Figure:
    """Figure `which` of the catalog's FIGURES for `run` (and `compare`); `record`: the matrix, for
    MATRIX_FIGURES; `complete`: every finished run, for the perplexity-versus-sparsity line of the run's model."""
    matrices = run.records() if which in ("sparsity_heatmap", "overlap") else ()
    return catalog.build_figure(which, run.record, compare.record if compare is not None else None,
                                matrices=matrices, matrix=record, model_runs=model_runs(run, complete))


def _eval_text(record: RunRecord, done: bool) -> str:
    """What the run's perplexity was measured on or, unless it finished, was to be measured on."""
    ev, asked = record.eval, record.request.eval
    if done and ev is not None:
        return f"{text_title(ev.dataset)} {ev.windows}×{ev.seqlen} = {ev.tokens:,} tok"
    return f"{asked.dataset} ×{asked.seqlen}" if asked is not None else "none"


def _row(record: RunRecord, done: bool) -> dict[str, Any]:
    """The settings and, if `done` (complete and undamaged), the results of one run."""
    prune = record.request.prune
    calib = Path(prune.calib).name if "/" in prune.calib else prune.calib
    return {
        "method": prune.method_name,
        "target": prune.target_sparsity,
        "pattern": prune.pattern,
        "group": prune.resolved_group,
        # a structure remover's achieved ratio is the share of the blocks' parameters it removed (its zeros: ~0)
        "achieved": (record.structure.removed_fraction if record.structure else record.sparsity) if done else None,
        "perplexity": record.ppl if done else None,
        "dense ppl": record.ppl_dense if done else None,
        "eval": _eval_text(record, done),
        "calibration": f"{calib} {prune.nsamples}×{prune.seqlen}, seed {prune.seed}",
        "model": (record.model.label or record.request.model).split(" (")[0],
        "created": record.created,
        "time (s)": record.timings.get("total_s"),
    }


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run on disk, unreadable ones too (their settings blank, their status and error said)."""
    # Run.status reads 'interrupted' once the process writing a 'running' run is gone, so a run still
    # being written on this machine shows as running.
    rows = [{"name": run.name, "status": STATUS_MARK.get(run.status, run.status),
             **(_row(run.record, run.complete) if run.record is not None else {}), "error": run.error} for run in runs]
    return pd.DataFrame(rows, columns=COLUMNS)
