"""Progress is data: the pipeline emits these typed events to one callback.

The CLI draws a progress bar from them, the app polls them from its worker, tests assert on them.
Every event carries `elapsed_s` since the pipeline started.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Event:
    elapsed_s: float

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class StageStarted(Event):
    """A coarse stage, named in stages.STAGES: 'load', 'calibration-data', 'capture', 'prune', 'eval', ..."""

    stage: str
    detail: str = ""


@dataclass(frozen=True)
class BlockStarted(Event):
    block: int  # 0-based
    num_blocks: int


@dataclass(frozen=True)
class MatrixPruned(Event):
    block: int
    num_blocks: int
    matrix: str  # name inside the block, e.g. "self_attn.q_proj"
    sparsity: float  # achieved on this matrix


@dataclass(frozen=True)
class BlockFinished(Event):
    block: int
    num_blocks: int
    sparsity: float  # achieved over this block's pruned matrices
    block_error: float | None  # relative output error of the pruned block vs dense, on calibration data;
    # None when pruned from the weights alone (calibrate=False): no activations to measure it on
    sparsity_so_far: float  # over all matrices pruned so far


@dataclass(frozen=True)
class WindowsEvaluated(Event):
    """An evaluation's progress in the stage now running ('eval-dense' or 'eval'): `done` of `windows` windows
    scored; the app draws its progress bar and extrapolates the time left from it."""

    done: int
    windows: int


@dataclass(frozen=True)
class PruneFinished(Event):
    num_blocks: int
    sparsity: float


EventCallback = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The default callback."""
