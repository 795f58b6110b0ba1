"""A finished run's pruned model again: its saved model, or its dense model pruned anew with the run's recorded
settings on its recorded calibration windows (its calibration.npy, or its seeded text re-drawn and checked against
the windows' sha256); either way its mask checked against the run's mask_sha256. A repair starts from it
(repair/start.py); scoring an existing run on zero-shot tasks evaluates it (runner/score.py)."""
from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import EngineError
from ..inputs.data import calibration_windows, windows_checksum
from ..inputs.models import LoadedModel, load_model
from ..pruning.checks import mask_checksum
from ..pruning.pipeline import prune_model
from ..store.run_record import RunRecord
from .execute import check_model_matches


@dataclass
class Recreated:
    model: Any  # the caller's to change: never the loaded dense model handed in, never written back to the run
    tokenizer: Any
    saved: bool  # loaded from the run's saved model (else pruned anew from the record)
    detail: str  # where it came from: the saved folder, or 'wanda 50% on calibration.npy'
    mask_verified: bool | None  # the mask equals the run's mask_sha256; None: the run recorded none


def dense_copy(record: RunRecord, loaded: LoadedModel | None) -> LoadedModel:
    """The run's dense model, ours to prune: a copy of `loaded` (which must match the run's model spec), or loaded."""
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


def check_mask(model: Any, record: RunRecord, what: str) -> bool | None:
    """True when `model`'s zeros are the run's mask (mask_sha256); None when the run recorded no checksum;
    EngineError in one sentence otherwise."""
    if record.mask_sha256 is None:
        return None
    if mask_checksum(model) != record.mask_sha256:
        raise EngineError(f"the {what} of run {record.name!r} does not have the run's mask (its mask checksum "
                          f"differs from mask_sha256 in run.json); the weights or the code changed since the run")
    return True


def pruned_model(run_dir: Path, record: RunRecord, device: str, loaded: LoadedModel | None = None,
                 cancel: threading.Event | None = None) -> Recreated:
    """The run's pruned model (see the module docstring); EngineError in one sentence when there is none."""
    saved = Path(record.saved_model) if record.saved_model else None
    if saved is not None and saved.is_dir():
        got = load_model(str(saved), dtype=record.request.dtype, trust_remote_code=record.request.trust_remote_code)
        return Recreated(got.model, got.tokenizer, True, str(saved), check_mask(got.model, record, "saved model"))
    base = dense_copy(record, loaded)
    windows, where = recorded_windows(run_dir, record, base.tokenizer)
    pc = dataclasses.replace(record.request.prune, device=device)
    prune_model(base.model, windows, pc, cancel=cancel, record=False)
    return Recreated(base.model, base.tokenizer, False, f"{pc.label} on {where}",
                     check_mask(base.model, record, "re-created pruned model"))
