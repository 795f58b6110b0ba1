"""The Repair page's pieces (no Streamlit, no torch): the form's values -> a RepairRequest, the run pruned alike
with the OBS weight update, and the repair jobs of a run in the shared job runner."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.jobs import REPAIR, JobRunner, JobView
from app.messages import JobStatus
from wanda_engine.config import RunRequest
from wanda_engine.core.errors import ConfigError
from wanda_engine.store.run_record import RunRecord
from wanda_engine.repair.config import RepairConfig, RepairRequest
from wanda_engine.store.run_store import Run

REPAIRS = {  # the form's choice -> its plain words
    "finetune": "Sparse fine-tune (every kept weight trains, every pruned weight stays exactly zero)",
    "lora": "LoRA + masked merge (W + BA ⊙ mask: exactly the pruned zeros)",
    "lora-adapter": "LoRA, unmerged adapter (its low-rank update is dense: the zeros are not kept)",
    "dense": "Dense fine-tune, the same budget (the fair reference, not a repair)",
}
_BUDGET = RepairConfig()  # the engine's default budget: under 10 minutes on 2 cores for the embedded model
DEFAULTS: dict[str, Any] = {"kind": "lora", "steps": _BUDGET.steps, "batch": _BUDGET.batch_size,
                            "seqlen": _BUDGET.seqlen, "lr": 0.0, "rank": _BUDGET.lora_rank,
                            "alpha": _BUDGET.lora_alpha, "eval_every": _BUDGET.eval_every, "train_text": ""}
# settings that do not change which weights a run keeps or how it was measured, or that the OBS twin must differ in
_NOT_COMPARED = ("weight_update", "calibrate", "save_model")


def build_request(run: Run, values: dict[str, Any]) -> RepairRequest:
    """The form's values (DEFAULTS' keys) as a validated RepairRequest on `run`; ConfigError in one sentence."""
    if run.record is None or run.record.ppl is None or run.record.eval is None:
        raise ConfigError(f"run {run.name!r} has no perplexity to repair against; choose a run that was evaluated")
    kind = values["kind"]
    if kind not in REPAIRS:
        raise ConfigError(f"repair must be one of {', '.join(REPAIRS)}, got {kind!r}")
    text = str(values.get("train_text") or "").strip()
    if text and not (text.endswith(".txt") and Path(text).expanduser().is_file()):
        raise ConfigError(f"training text {text!r} is not a .txt file on this machine; leave it empty to train on "
                          "the run's calibration text")
    config = RepairConfig(method="lora" if kind.startswith("lora") else "finetune", steps=int(values["steps"]),
                          batch_size=int(values["batch"]), seqlen=int(values["seqlen"]),
                          lr=float(values["lr"]) or None, lora_rank=int(values["rank"]),
                          lora_alpha=float(values["alpha"]), evaluate="adapter" if kind == "lora-adapter" else "merged",
                          train_text=str(Path(text).expanduser().resolve()) if text else "default",
                          eval_every=int(values["eval_every"]), dense=kind == "dense")
    return RepairRequest(run=str(run.path), config=config)


def _compared(request: RunRequest) -> dict[str, Any]:
    return {k: v for k, v in request.to_dict().items() if k not in _NOT_COMPARED}


def _windows(record: RunRecord) -> str | None:
    return record.eval.describe() if record.eval is not None else None


def obs_twin(record: RunRecord, runs: Sequence[Run]) -> RunRecord | None:
    """The newest complete run pruned like `record` but with the kept weights updated by OBS
    (weight_update 'obs'), on the same model and evaluated on the same windows; None if there is none."""
    want = _compared(record.request)
    for run in runs:  # the store lists the newest first
        other = run.record
        if (run.complete and other is not None and other.request.prune.weight_update == "obs"
                and _compared(other.request) == want and _windows(other) == _windows(record)):
            return other
    return None


def obs_request(record: RunRecord) -> RunRequest:
    """The prune that measures '+weight update' for `record`: its settings, the kept weights updated by OBS."""
    prune = replace(record.request.prune, weight_update="obs", calibrate=True)
    return replace(record.request, prune=prune, name=None, save_model=None)


def repair_jobs(runner: JobRunner, run_name: str) -> list[JobView]:
    """The running and queued repair jobs of `run_name`, the running one first."""
    current = runner.current()
    jobs = ([current] if current is not None else []) + runner.queued()
    return [j for j in jobs if j.kind == REPAIR and j.run_name == run_name
            and j.status in (JobStatus.QUEUED, JobStatus.RUNNING)]


def last_repair_job(runner: JobRunner, run_name: str, owner: str) -> JobView | None:
    """The newest finished repair job `owner` submitted on `run_name`, or None."""
    return next((j for j in runner.history() if j.kind == REPAIR and j.run_name == run_name and j.owner == owner),
                None)


def minutes(seconds: float) -> str:
    """'about 7 min', 'under a minute': a time said as roughly as it is known."""
    if seconds < 60:
        return "under a minute"
    return f"about {round(seconds / 60)} min"
