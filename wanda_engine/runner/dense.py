"""The dense model's results, computed once per model and settings: its perplexity and zero-shot scores are
kept in JSON caches in cache_dir(), keyed by a fingerprint of its weights' files and everything they depend on."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import EvalConfig, ZeroShotConfig
from ..core.paths import cache_dir
from ..evaluation.perplexity import Perplexity, WindowsCallback, perplexity_on_device
from ..evaluation.tasks import TaskPlan, plans_stamp
from ..evaluation.zeroshot import evaluate_zeroshot
from ..inputs.models import LoadedModel
from ..store.run_store import atomic_write_json


def model_fingerprint(loaded: LoadedModel) -> str:
    """Identifies the weights for the dense-perplexity cache without hashing gigabytes."""
    src = Path(loaded.source)
    stamp = ""
    if src.exists():
        files = sorted(p for p in (src.iterdir() if src.is_dir() else [src]) if p.is_file())
        stamp = ",".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files)
    return f"{loaded.source}|{loaded.label}|{loaded.info.get('params')}|{loaded.info.get('dtype')}|{stamp}"


def _cached(file: str, key: str, compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """A dense-model result from the JSON cache `file` in cache_dir(), or computed and stored there."""
    path = cache_dir() / file
    try:
        cache = json.loads(path.read_text()) if path.exists() else {}
    except (ValueError, OSError):
        cache = {}
    if key in cache:
        return cache[key], True
    cache[key] = compute()
    try:
        atomic_write_json(path, cache)
    except OSError:
        pass  # a read-only cache only costs a recomputation next time
    return cache[key], False


def dense_perplexity(loaded: LoadedModel, tokens: torch.Tensor, label: str, ev: EvalConfig,
                     device: torch.device, cancel: threading.Event | None = None,
                     on_windows: WindowsCallback | None = None) -> tuple[Perplexity, bool]:
    """The unpruned model's perplexity on the same windows, cached per model and evaluation settings;
    `on_windows(done, total)` as its windows are scored (never, when cached)."""
    key = f"{model_fingerprint(loaded)}|{label}|{tokens.numel()}|{ev.seqlen}|{ev.windows}"
    result, cached = _cached("dense_perplexity.json", key, lambda: perplexity_on_device(
        loaded.model, tokens, label, ev, device, cancel, on_windows).to_dict())
    return Perplexity(**result), cached


def dense_zeroshot(loaded: LoadedModel, zc: ZeroShotConfig, plans: list[TaskPlan],
                   device: torch.device) -> tuple[dict[str, Any], bool]:
    """The unpruned model's zero-shot results, cached per model, task settings, harness and local task files."""
    key = f"{model_fingerprint(loaded)}|{json.dumps(zc.to_dict(), sort_keys=True)}|{plans_stamp(plans)}"
    return _cached("dense_zeroshot.json", key, lambda: evaluate_zeroshot(loaded.model, loaded.tokenizer, zc, device, plans))
