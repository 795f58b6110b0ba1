"""What every kind of pruning does to one block, shared by the mask loop (`pipeline`) and the structure removers
(`structure`): the run's state and clock (`PruningRun`), holding one block on the compute device (`block_held`), the
calibration pass that feeds each linear's InputStats (`calibrate`), the propagation pass whose outputs are the next
block's inputs (`propagate`), and each torch.distributed rank's share of the windows.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .capture import Chunk, run_block
from .checks import check_finite_weights
from ..config import PruneConfig
from ..core.errors import ConfigError, NumericalError
from ..core.events import BlockStarted, EventCallback
from ..inputs.layers import find_linears, weight_of
from ..inputs.offload import block_on_device
from ..methods.scoring import InputStats
from ..store.matrix_records import MatrixRecord


def distributed() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, or (0, 1) when it is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def calibrate(block: nn.Module, index: int, chunks: list[Chunk], device: torch.device, with_gram: bool,
              keep: torch.device | None, with_sum: bool = False) -> tuple[dict[str, InputStats], list[torch.Tensor]]:
    """Run the dense block over every chunk with hooks feeding each linear's InputStats (with the Gram matrix, or
    the running sum of the inputs, where asked).

    Returns the statistics (summed over torch.distributed ranks) and, if `keep`, the dense outputs there.
    """
    linears = find_linears(block)
    stats = {name: InputStats(weight_of(layer).shape[1], device, with_gram, with_sum)
             for name, layer in linears.items()}
    # Layers fed the very same tensor (q/k/v, gate/up) share one InputStats: Σx² (and SparseGPT's
    # Gram matrix) is computed once per input instead of once per layer.
    fed: dict[tuple, tuple[torch.Tensor, InputStats]] = {}  # this chunk's inputs -> the stats they went to

    def hook(name: str):
        def add(module: nn.Module, inputs: tuple, output: Any) -> None:
            x = inputs[0]
            key = (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype)
            if key in fed:
                if stats[name] is not fed[key][1]:
                    stats[name] = fed[key][1]  # first chunk: share from now on
                return
            stats[name].add(x)
            fed[key] = (x, stats[name])  # holding x keeps its memory from being reused within the chunk
        return add

    handles = [layer.register_forward_hook(hook(name)) for name, layer in linears.items()]
    outputs = []
    try:
        for chunk in chunks:
            fed.clear()
            out = run_block(block, index, chunk, device)
            outputs.append(out.to(keep) if keep is not None else out)
        fed.clear()
    finally:
        for h in handles:
            h.remove()
    if distributed()[1] > 1:
        for st in {id(st): st for st in stats.values()}.values():  # each shared InputStats once
            st.all_reduce()
    for name, st in stats.items():
        if not st.is_finite():
            raise NumericalError(f"block {index} {name}: calibration activations contain NaN or Inf "
                                 "(the inputs of this block overflowed or the model is broken)")
    return stats, outputs


@dataclass
class PruningRun:
    """What every block of one pruning shares: its settings, where tensors live, the clock and the tallies."""

    config: PruneConfig
    device: torch.device
    storage: torch.device  # where the calibration activations stay between blocks
    blocks_path: str
    num_blocks: int
    on_event: EventCallback
    record: bool
    world: int
    offloaded: bool  # accelerate offloaded some weights: each block's are checked as it loads
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(
        default_factory=lambda: {"capture_s": 0.0, "calibrate_s": 0.0, "select_s": 0.0, "propagate_s": 0.0})
    records: list[MatrixRecord] = field(default_factory=list)
    zeros: float = 0.0  # over the matrices pruned so far
    total: int = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t


def propagate(block: nn.Module, index: int, chunks: list[Chunk], dense_outputs: list[torch.Tensor],
               run: PruningRun) -> tuple[float, float]:
    """Run the pruned block over every chunk: its outputs become the next block's inputs.

    Returns ‖pruned − dense‖² and ‖dense‖² over the calibration windows of every rank."""
    err = torch.zeros(2, dtype=torch.float64)
    for chunk, dense in zip(chunks, dense_outputs):
        out = run_block(block, index, chunk, run.device)
        dense = dense.to(run.device)
        err += torch.stack([torch.sub(out, dense).float().pow_(2).sum(), dense.float().pow(2).sum()]).double().cpu()
        chunk.hidden = out.to(run.storage)
    if run.world > 1:
        dist.all_reduce(err)
    return float(err[0]), float(err[1])


@contextlib.contextmanager
def block_held(run: PruningRun, block: nn.Module, index: int) -> Iterator[dict[str, nn.Module]]:
    """Announce the block and hold only it on the compute device (read from accelerate's offload, if the model
    has one); yields its prunable linears."""
    run.on_event(BlockStarted(run.elapsed(), index, run.num_blocks))
    linears = find_linears(block)
    with block_on_device(block, run.device, write_back=linears.values()):
        if run.offloaded:
            check_finite_weights(block, f"block {index}")
        yield linears


def rank_share(windows: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's contiguous share of the calibration windows."""
    if world == 1:
        return windows
    if len(windows) < world:
        raise ConfigError(f"nsamples {len(windows)} is smaller than the {world} ranks sharing the calibration")
    return windows.tensor_split(world)[rank]
