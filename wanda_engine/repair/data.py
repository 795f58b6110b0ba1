"""A repair's training text: the run's calibration text by default, never its evaluation text."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..inputs.data import text_tokens, load_text
from ..core.errors import ConfigError, DataError
from ..store.run_record import RunRecord
from .config import RepairConfig
from .train import training_windows


@dataclass(frozen=True)
class TrainingText:
    windows: torch.Tensor  # [n, seqlen] non-overlapping windows in text order (train.batches shuffles them)
    label: str  # e.g. 'austen:emma'
    source: str  # what the config named: the run's calibration source, or a .txt path
    tokens_available: int

    def describe(self, config: RepairConfig) -> dict[str, Any]:
        """The record's `train`: what the repair trained on and how much of it."""
        return {"text": self.label, "source": self.source, "tokens_available": self.tokens_available,
                "windows": len(self.windows), "seqlen": config.seqlen, "batch_size": config.batch_size,
                "tokens": config.tokens(), "passes": round(config.steps * config.batch_size / len(self.windows), 3),
                "seed": config.seed, "order": "non-overlapping windows, shuffled by the seed each pass"}


def training_text(config: RepairConfig, record: RunRecord, tokenizer: Any) -> TrainingText:
    """The windows to train on; ConfigError (one sentence) when the text is the run's evaluation text, is not
    a text, or is shorter than one batch."""
    source = record.request.prune.calib if config.train_text.strip().lower() == "default" else config.train_text
    if source.strip().lower().endswith(".npy"):
        raise ConfigError(f"repair train_text: the run calibrated on a token file ({source}); name a .txt file "
                          "to train on")
    try:
        text, label = load_text(source, "calib")
    except DataError as e:
        raise ConfigError(f"repair train_text: {e}") from None
    if record.request.eval is not None:
        eval_text, eval_label = load_text(record.request.eval.dataset, "eval")
        if eval_text == text:
            raise ConfigError(f"repair train_text {label} is the run's evaluation text ({eval_label}); training on "
                              "it would measure memorisation, not repair: choose another text")
    ids, _ = text_tokens(tokenizer, source, "calib")  # the engine's per-process tokenization cache
    windows = training_windows(ids, config.seqlen)
    if len(windows) < config.batch_size:
        raise ConfigError(f"repair train_text {label} has {ids.numel():,} tokens, fewer than one batch of "
                          f"{config.batch_size} × {config.seqlen} tokens; use a longer text or a smaller batch_size or seqlen")
    return TrainingText(windows, label, source, int(ids.numel()))
