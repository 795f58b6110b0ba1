"""The structure removers' kind in the one layer-by-layer loop: per block, score its KV groups and MLP channels (or
its influence), and remove them physically.

    uniform width   per block: calibrate -> score -> take the same number of groups and channels from every block
                    (methods.structure.uniform_counts) -> compensate -> remove -> propagate the pruned block
    global width    per block: calibrate -> score -> propagate the *dense* block (one dense pass, like OWL's);
    depth           then `finish`: every block's scores compete (standardized, FLAP) or blocks are ranked by
                    influence (ShortGPT), and the chosen structures are removed. The dense pass costs what the
                    uniform loop's calibration costs; the pruned blocks are never run again (no block error).

A KV group (a KV head and the query heads sharing it) is the unit of attention removed: every block keeps
num_attention_heads a multiple of num_key_value_heads, k, v and the KV cache shrink with q and o, and it is never
coarser than removing one query head from every group whenever the groups hold fewer query heads than there are KV
heads (with MHA a group is one head). Bias compensation (FLAP) adds W[:, removed]·mean(x_removed) to the output
projection's bias, from the same calibration statistics the scores came from.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from .blocks import PruningRun, block_held, calibrate, propagate
from .capture import Chunk
from ..config import PruneConfig
from ..core.errors import ConfigError, NumericalError
from ..core.events import BlockFinished, MatrixPruned
from ..inputs.anatomy import BlockAnatomy, add_to_bias, block_anatomy, keep_channels, keep_groups, remove_blocks
from ..inputs.layers import find_blocks
from ..inputs.offload import has_offloaded_weights
from ..inputs.shrunk import add_zero_biases, align_config, bias_flags
from ..methods.scoring import InputStats
from ..methods.structure import (cut_in_order, global_selection, group_scores, lowest, standardized,
                                 uniform_counts)
from ..methods.table import Structure
from ..store.matrix_records import BlockRecord
from ..store.shrink_record import StructureRecord
from .shrink_records import structure_record


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_removable(model: nn.Module, config: PruneConfig) -> None:
    """ConfigError, before any weight changes, when the model's blocks cannot lose what `config` asks."""
    name = type(model).__name__
    if has_offloaded_weights(model):
        raise ConfigError(f"method {config.method!r} replaces whole weight matrices, which accelerate's offload hooks "
                          "hold; load the model without offloading it")
    _, blocks = find_blocks(model)
    ratio = float(config.sparsity)
    if config.structure is Structure.DEPTH:
        count = cut_in_order(torch.zeros(len(blocks)), torch.tensor([float(_params(b)) for b in blocks]),
                             ratio * sum(_params(b) for b in blocks))
        if count == 0 or count == len(blocks):
            raise ConfigError(f"ratio {ratio:g} would remove {'no' if count == 0 else 'every'} decoder block of "
                              f"{len(blocks)} (each is {1 / len(blocks):.1%} of their parameters); use a "
                              f"{'larger' if count == 0 else 'smaller'} ratio")
        return
    anatomies = [block_anatomy(block, model.config, name) for block in blocks]
    sizes = [(a.group_params(b), a.channel_params(b), _params(b)) for a, b in zip(anatomies, blocks)]
    if config.allocation == "uniform":
        for a, (group, channel, total) in zip(anatomies, sizes):
            uniform_counts(config.target, ratio, a.kv_heads, a.heads_per_group, a.channels, group, channel, total)
    else:
        budget = ratio * sum(total for *_, total in sizes)
        most = sum((a.kv_heads - 1) * g + (a.channels - 1) * c for a, (g, c, _) in zip(anatomies, sizes))
        if budget > most:
            raise ConfigError(f"ratio {ratio:g} asks more than every block's heads and MLP channels but one group and "
                              f"one channel each; use a ratio below {most / (budget / ratio):.3f}")
    if config.bias_compensation:
        prefix = find_blocks(model)[0] + ".0."
        bias_flags(model, [prefix + anatomies[0].attention_out, prefix + anatomies[0].mlp_out])


@dataclass
class _Scored:
    """One block's scores and what its removal needs, kept until the block is removed."""

    index: int
    params_dense: int
    anatomy: BlockAnatomy | None = None
    groups: torch.Tensor | None = None  # per KV group, on the scale the selection compares
    channels: torch.Tensor | None = None  # per MLP channel, on the same scale
    attention_mean: torch.Tensor | None = None  # mean of the output projections' inputs (compensation)
    mlp_mean: torch.Tensor | None = None
    influence: float | None = None
    removed_groups: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    removed_channels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    removed: bool = False  # depth
    params_kept: int = 0
    error: float | None = None
    seconds: float = 0.0


class Shrinker:
    """The structure removers' step of the pipeline's loop (`prune_block`) and what follows it (`finish`)."""

    def __init__(self, run: PruningRun, model: nn.Module, chunks: list[Chunk] | None):
        self.run, self.config, self.chunks = run, run.config, chunks
        self.model_name, self.model_config = type(model).__name__, model.config
        self.model_params_dense = _params(model)
        self.dense_first = self.config.allocation == "global" or self.config.structure is Structure.DEPTH
        self.scored: list[_Scored] = []
        self.cutoff: float | None = None  # global allocation: the highest standardized score removed

    def prune_block(self, block: nn.Module, index: int) -> None:
        """Score block `index`; remove its structures now (uniform) or keep its scores for `finish`."""
        started = time.perf_counter()
        scored = _Scored(index, _params(block))
        home = next(block.parameters()).device
        with block_held(self.run, block, index) as linears:
            stats, outputs = self._calibrate(block, index)
            if self.config.structure is Structure.DEPTH:
                scored.influence = self._influence(outputs)
            else:
                self._score_width(scored, block, linears, stats)
            if self.dense_first:
                for chunk, out in zip(self.chunks or (), outputs):
                    chunk.hidden = out  # the next block sees the dense model's activations
            else:
                a = scored.anatomy
                counts = uniform_counts(self.config.target, float(self.config.sparsity), a.kv_heads,
                                        a.heads_per_group, a.channels, a.group_params(block), a.channel_params(block),
                                        scored.params_dense)
                scored.removed_groups = lowest(scored.groups, counts[0])
                scored.removed_channels = lowest(scored.channels, counts[1])
                self._remove_width(block, linears, scored)
                if self.chunks is not None:
                    with self.run.timed("propagate_s"):
                        err, norm = propagate(block, index, self.chunks, outputs, self.run)
                    if not math.isfinite(err):
                        raise NumericalError(f"block {index}: the pruned block's outputs contain NaN or Inf")
                    scored.error = err / norm if norm else 0.0
        _send_home(block, home)
        scored.seconds = time.perf_counter() - started
        self.scored.append(scored)
        if not self.dense_first:  # removed now: its progress now, as a mask run's block reports it
            self._block_finished(len(self.scored) - 1)

    def _block_finished(self, position: int) -> None:
        """BlockFinished of the `position`-th scored block: the share of its parameters removed, and of all so far."""
        s, upto = self.scored[position], self.scored[: position + 1]
        so_far = sum(x.params_dense - x.params_kept for x in upto) / sum(x.params_dense for x in upto)
        self.run.on_event(BlockFinished(self.run.elapsed(), s.index, self.run.num_blocks,
                                        1 - s.params_kept / s.params_dense, s.error, so_far))

    def _calibrate(self, block: nn.Module, index: int) -> tuple[dict[str, InputStats] | None, list[torch.Tensor]]:
        if self.chunks is None:  # from the weights alone (magnitude-sp, calibrate=False)
            return None, []
        with self.run.timed("calibrate_s"):
            # with the mean and the squared deviations of every input (FLAP's fluctuation, the compensation): one
            # more reduction per layer input beside Wanda's Σx², little next to the block's forward
            return calibrate(block, index, self.chunks, self.run.device, False, self.run.storage, with_sum=True)

    def _influence(self, outputs: list[torch.Tensor]) -> float:
        """ShortGPT's BI of the block: 1 − cos(x_in, x_out) averaged over every calibration token (of every rank)."""
        method = self.config.method_entry
        total = torch.zeros(2, dtype=torch.float64)
        for chunk, out in zip(self.chunks, outputs):
            per_token = method.block_score(chunk.hidden.to(out.device), out)
            total += torch.tensor([float(per_token.double().sum()), per_token.numel()], dtype=torch.float64)
        if self.run.world > 1:
            dist.all_reduce(total)
        return float(total[0] / total[1])

    def _score_width(self, scored: _Scored, block: nn.Module, linears: dict[str, nn.Module],
                     stats: dict[str, InputStats] | None) -> None:
        with self.run.timed("select_s"):
            a = scored.anatomy = block_anatomy(block, self.model_config, self.model_name)
            method = self.config.method_entry
            out, down = linears[a.attention_out], linears[a.mlp_out]
            attention = method.channel_score(out.weight.data, stats[a.attention_out] if stats else None).double().cpu()
            channels = method.channel_score(down.weight.data, stats[a.mlp_out] if stats else None).double().cpu()
            if self.config.allocation == "global":  # FLAP: each block's channels standardized, a group their mean
                scored.groups = group_scores(standardized(attention), a.head_dim, a.heads_per_group, "mean")
                scored.channels = standardized(channels)
            else:
                scored.groups, scored.channels = group_scores(attention, a.head_dim, a.heads_per_group), channels
            if self.config.bias_compensation:
                scored.attention_mean = stats[a.attention_out].mean
                scored.mlp_mean = stats[a.mlp_out].mean

    def _remove_width(self, block: nn.Module, linears: dict[str, nn.Module], scored: _Scored) -> None:
        """Compensate, then remove the scored block's chosen groups and channels; events and kept parameters."""
        a, run = scored.anatomy, self.run
        with run.timed("select_s"):
            hd, per = a.head_dim, a.heads_per_group
            group_channels = (scored.removed_groups.view(-1, 1) * per * hd + torch.arange(per * hd).view(1, -1)).reshape(-1)
            if self.config.bias_compensation:
                for layer, columns, mean in ((linears[a.attention_out], group_channels, scored.attention_mean),
                                             (linears[a.mlp_out], scored.removed_channels, scored.mlp_mean)):
                    if len(columns):  # FLAP: the removed channels' average contribution stays in the bias
                        weight = layer.weight.data.index_select(1, columns.to(layer.weight.device)).double()
                        add_to_bias(layer, weight @ mean.index_select(0, columns.to(mean.device)).to(weight.device))
            kept_groups = _complement(a.kv_heads, scored.removed_groups)
            anatomy = keep_groups(block, a, kept_groups)
            keep_channels(block, anatomy, _complement(a.channels, scored.removed_channels))
        scored.params_kept = _params(block)
        for part, fraction in (("attention heads", len(scored.removed_groups) / a.kv_heads),
                               ("MLP channels", len(scored.removed_channels) / a.channels)):
            run.on_event(MatrixPruned(run.elapsed(), scored.index, run.num_blocks, part, fraction))

    def finish(self, model: nn.Module) -> tuple[list[BlockRecord], StructureRecord]:
        """Remove what the dense pass chose (global, depth), then the records of every block and of the run."""
        blocks_path, blocks = find_blocks(model)
        if self.config.structure is Structure.DEPTH:
            self._remove_blocks(model, blocks_path, blocks)
        elif self.dense_first:
            self._remove_globally(blocks)
        if self.config.structure is Structure.WIDTH:
            if self.config.bias_compensation:
                self._config_biases(model, blocks)
            align_config(model, self.model_name)  # uniform widths: the config says them, as from_pretrained will
        records = []
        for position, s in enumerate(self.scored):
            fraction = 1 - s.params_kept / s.params_dense
            records.append(BlockRecord(s.index, fraction, s.error, round(s.seconds, 4), target=float(self.config.sparsity)))
            if self.dense_first:  # removed only now
                self._block_finished(position)
        return records, structure_record(self.config, self.scored, self.model_params_dense, _params(model),
                                         self.dense_first, self.cutoff)

    def _config_biases(self, model: nn.Module, blocks: nn.ModuleList) -> None:
        """The config flags that give the compensated projections their biases, and the zero biases those flags give
        other layers too (Llama's attention_bias: q, k and v), so that the model is what its config describes."""
        biased = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.bias is not None]
        flags = bias_flags(model, biased)
        add_zero_biases(model, flags)
        for flag in flags:
            setattr(model.config, flag, True)
        for s in self.scored:
            s.params_kept = _params(blocks[s.index])

    def _remove_globally(self, blocks: nn.ModuleList) -> None:
        scored = self.scored
        budget = float(self.config.sparsity) * sum(s.params_dense for s in scored)
        groups, channels, self.cutoff = global_selection(
            [s.groups for s in scored], [s.channels for s in scored],
            [s.anatomy.group_params(blocks[s.index]) for s in scored],
            [s.anatomy.channel_params(blocks[s.index]) for s in scored], budget)
        for s, g, c in zip(scored, groups, channels):
            s.removed_groups, s.removed_channels = g, c
            home = next(blocks[s.index].parameters()).device
            with block_held(self.run, blocks[s.index], s.index) as linears:
                self._remove_width(blocks[s.index], linears, s)
            _send_home(blocks[s.index], home)

    def _remove_blocks(self, model: nn.Module, blocks_path: str, blocks: nn.ModuleList) -> None:
        influence = torch.tensor([s.influence for s in self.scored], dtype=torch.float64)
        params = torch.tensor([float(s.params_dense) for s in self.scored], dtype=torch.float64)
        count = cut_in_order(influence, params, float(self.config.sparsity) * float(params.sum()))
        removed = set(lowest(influence, count).tolist())
        for s in self.scored:
            s.removed, s.params_kept = s.index in removed, 0 if s.index in removed else s.params_dense
        remove_blocks(model, blocks_path, [i for i in range(len(blocks)) if i not in removed])


def _send_home(block: nn.Module, home: torch.device) -> None:
    """The tensors removal made on the compute device go where the block lives (block_held moves back only the
    tensors it moved)."""
    for tensor in list(block.parameters()) + list(block.buffers()):
        if tensor.device != home:
            tensor.data = tensor.data.to(home)


def _complement(size: int, removed: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(size, dtype=torch.bool)
    keep[removed] = False
    return keep.nonzero().view(-1)

