"""The model a repair starts from: the run's pruned model (its saved model, or re-created from the record and
checked against the run's mask_sha256: runner/recreate.py), or, for the dense reference, the unpruned model itself."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..inputs.models import LoadedModel
from ..runner.recreate import dense_copy, pruned_model
from ..store.run_record import RunRecord
from .record import STARTS

SAVED, RECREATED, DENSE = STARTS


@dataclass
class Start:
    model: Any  # ours to train: never the caller's loaded model, never written back to the run
    tokenizer: Any
    how: str  # SAVED | RECREATED | DENSE
    detail: str
    mask_verified: bool | None  # the mask equals the run's mask_sha256; None: the run recorded none (or dense)


def start_model(run_dir: Path, record: RunRecord, dense: bool, device: str, loaded: LoadedModel | None = None,
                cancel: threading.Event | None = None) -> Start:
    """The model to repair (see the module docstring); EngineError in one sentence when there is none."""
    if dense:
        base = dense_copy(record, loaded)
        return Start(base.model, base.tokenizer, DENSE, base.label, None)
    got = pruned_model(run_dir, record, device, loaded, cancel)
    return Start(got.model, got.tokenizer, SAVED if got.saved else RECREATED, got.detail, got.mask_verified)
