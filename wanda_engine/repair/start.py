"""The model a repair starts from: the run's saved pruned model, or its pruned model re-created from the record
(the request's model, pruned with the record's settings on the recorded calibration windows, the mask checked
against the run's mask_sha256), or, for the dense reference, the unpruned model itself."""
from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..pruning.checks import mask_checksum
from ..inputs.data import calibration_windows, windows_checksum
from ..core.errors import EngineError
from ..inputs.models import LoadedModel, load_model
from ..pruning.pipeline import prune_model
from ..store.run_record import RunRecord
from ..runner.execute import check_model_matches
from .record import STARTS

SAVED, RECREATED, DENSE = STARTS


@dataclass
class Start:
    model: Any  # ours to train: never the caller's loaded model, never written back to the run
    tokenizer: Any
    how: str  # SAVED | RECREATED | DENSE
    detail: str
    mask_verified: bool | None  # the mask equals the run's mask_sha256; None: the run recorded none (or dense)


def _dense(record: RunRecord, loaded: LoadedModel | None) -> LoadedModel:
    if loaded is not None:
        check_model_matches(loaded, record.request)
        return LoadedModel(copy.deepcopy(loaded.model), loaded.tokenizer, loaded.source, loaded.label, loaded.info,
                           loaded.spec)
    r = record.request
    return load_model(r.model, dtype=r.dtype, trust_remote_code=r.trust_remote_code, offload=r.offload)


def recorded_windows(run_dir: Path, record: RunRecord, tokenizer: Any) -> tuple[torch.Tensor, str]:
    """The run's calibration windows: its calibration.npy, else re-drawn from its seeded text source; checked
    against the recorded checksum when the run has one."""
    cal, pc = record.calibration, record.request.prune
    if cal.file and (run_dir / cal.file).is_file():
        windows, where = torch.from_numpy(np.load(run_dir / cal.file, allow_pickle=False).astype(np.int64)), cal.file
    elif not pc.calib.strip().lower().endswith(".npy"):
        windows, _ = calibration_windows(tokenizer, pc.calib, pc.nsamples, pc.seqlen, pc.seed)
        where = f"{pc.calib} re-drawn with seed {pc.seed}"
    else:
        raise EngineError(f"run {record.name!r} has no saved model and no calibration.npy, and its calibration "
                          f"token file cannot be re-drawn; its pruned model cannot be re-created")
    if cal.sha256 and windows_checksum(windows) != cal.sha256:
        raise EngineError(f"the calibration windows of run {record.name!r} ({where}) do not match the checksum "
                          "it recorded; its pruned model cannot be re-created")
    return windows, where


def _check_mask(model: Any, record: RunRecord, what: str) -> bool | None:
    if record.mask_sha256 is None:
        return None
    if mask_checksum(model) != record.mask_sha256:
        raise EngineError(f"the {what} of run {record.name!r} does not have the run's mask (its mask checksum "
                          f"differs from mask_sha256 in run.json); the weights or the code changed since the run")
    return True


def start_model(run_dir: Path, record: RunRecord, dense: bool, device: str, loaded: LoadedModel | None = None,
                cancel: threading.Event | None = None) -> Start:
    """The model to repair (see the module docstring); EngineError in one sentence when there is none."""
    saved = Path(record.saved_model) if record.saved_model else None
    if not dense and saved is not None and saved.is_dir():
        got = load_model(str(saved), dtype=record.request.dtype, trust_remote_code=record.request.trust_remote_code)
        return Start(got.model, got.tokenizer, SAVED, str(saved), _check_mask(got.model, record, "saved model"))
    base = _dense(record, loaded)
    if dense:
        return Start(base.model, base.tokenizer, DENSE, base.label, None)
    windows, where = recorded_windows(run_dir, record, base.tokenizer)
    pc = dataclasses.replace(record.request.prune, device=device)
    prune_model(base.model, windows, pc, cancel=cancel, record=False)
    return Start(base.model, base.tokenizer, RECREATED, f"{pc.label} on {where}",
                 _check_mask(base.model, record, "re-created pruned model"))
