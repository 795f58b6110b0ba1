"""A repair's progress events (the engine's Event: elapsed_s first), next to StageStarted for its stages."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.events import Event


@dataclass(frozen=True)
class RepairStep(Event):
    """One optimizer step done."""

    step: int  # 1-based
    steps: int
    loss: float  # the step's mean next-token loss on its training batch
    lr: float  # the learning rate the step used
    tokens_seen: int  # training tokens so far


@dataclass(frozen=True)
class RepairEval(Event):
    """A perplexity on the run's evaluation windows, after `step` steps (0: before training)."""

    step: int
    ppl: float
