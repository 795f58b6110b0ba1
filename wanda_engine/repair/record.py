"""A repair's repair.json as one typed record, attached to its pruned run: <run_dir>/repairs/<name>/repair.json.

Torch-free (the app's pages and figures import it). `RepairRecord.from_json` raises RunRecordError with one
sentence when a dict cannot describe a repair; `load_repairs` skips such files.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..core.errors import EngineError
from ..core.status import RECORDED, RunStatus
from ..store.run_record import EvalInfo, RunRecordError
from .config import RepairRequest

REPAIRS_DIR = "repairs"  # inside the pruned run's directory
RECORD_FILE = "repair.json"
STARTS = ("saved model", "re-created from the record", "dense model")
EVALUATED = {"merged": "masked merge", "adapter": "adapter (unmerged)", "finetune": "fine-tuned weights"}


def repairs_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / REPAIRS_DIR


@dataclass(frozen=True)
class RepairRecord:
    """One repair, as repair.json holds it; a repair still running has only what was known when it started."""

    name: str
    status: RunStatus  # one of RECORDED: 'running', 'complete', 'failed' or 'cancelled'
    created: str
    run: str  # the pruned run's name
    request: RepairRequest
    start: str  # one of STARTS
    evaluated: str  # one of EVALUATED's values: which weights the perplexities are of
    finished: str | None = None
    mask_sha256_before: str | None = None  # checks.mask_checksum; equal to _after unless the request is dense
    mask_sha256_after: str | None = None
    mask_verified: bool | None = None  # a re-created model's mask matched the run's mask_sha256 (None: run had none)
    sparsity_before: float | None = None  # zeros over the decoder blocks' prunable weights
    sparsity_after: float | None = None
    losses: tuple[tuple[int, float, float, float], ...] = ()  # (step, loss, lr, elapsed_s)
    evals: tuple[tuple[int, int, float], ...] = ()  # (step, tokens_seen, ppl) on the run's evaluation windows
    eval: EvalInfo | None = None  # what the evals were measured on
    ppl_before: float | None = None
    ppl_after: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: float | None = None  # the process's peak resident memory (ru_maxrss), not this repair's alone
    error: str | None = None
    saved_model: str | None = None
    train: dict[str, Any] = field(default_factory=dict)  # text label, tokens available, windows, tokens, seed, trained
    versions: dict[str, str] = field(default_factory=dict)
    device: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RunStatus(self.status))  # the repair's word becomes its member

    def label(self) -> str:
        return self.request.config.label()

    @property
    def complete(self) -> bool:
        return self.status == RunStatus.COMPLETE

    @property
    def tokens_seen(self) -> int:
        """Training tokens seen by the last evaluation (the budget spent)."""
        return self.evals[-1][1] if self.evals else 0

    @classmethod
    def from_json(cls, d: Any) -> "RepairRecord":
        if not isinstance(d, Mapping):
            raise RunRecordError("repair.json is not an object")
        if d.get("status") not in RECORDED:
            raise RunRecordError(f"repair.json has an unknown status {d.get('status')!r}")
        try:
            request = RepairRequest.from_dict(d.get("request") or {})
            known = {f.name: d[f.name] for f in fields(cls) if f.name in d}
            known.update(
                request=request,
                losses=tuple((int(s), float(loss), float(lr), float(t)) for s, loss, lr, t in d.get("losses") or ()),
                evals=tuple((int(s), int(n), float(p)) for s, n, p in d.get("evals") or ()),
                eval=EvalInfo.from_json(d["eval"]) if d.get("eval") else None,
                timings=dict(d.get("timings") or {}), train=dict(d.get("train") or {}),
                versions=dict(d.get("versions") or {}))
            return cls(**known)
        except (EngineError, TypeError, ValueError) as e:
            raise RunRecordError(f"repair.json does not describe a repair ({e})") from None

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(request=self.request.to_dict(), losses=[list(x) for x in self.losses],
                   evals=[list(x) for x in self.evals], eval=self.eval.to_json() if self.eval else None)
        return out


def load_repairs(run_dir: str | Path) -> list[RepairRecord]:
    """Every repair of a run, oldest first; unreadable or corrupt repair.json files are skipped."""
    found = []
    root = repairs_dir(run_dir)
    for path in sorted(root.glob(f"*/{RECORD_FILE}")) if root.is_dir() else ():
        try:
            found.append(RepairRecord.from_json(json.loads(path.read_text())))
        except (OSError, ValueError, RunRecordError):
            continue
    return sorted(found, key=lambda r: (r.created, r.name))
