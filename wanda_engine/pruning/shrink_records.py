"""What a structure remover's run leaves behind: per block what it kept and how its structures scored, and the
score distributions of each kind of structure with the cut-off (store.shrink_record's typed records)."""
from __future__ import annotations

from typing import Any

import torch

from ..config import PruneConfig
from ..methods.table import Structure
from ..store.shrink_record import BlockShrink, ScoreHistogram, StructureRecord

BINS = 40
GROUPING = ("whole KV groups: a KV head goes with the {per} query head(s) sharing it, so num_attention_heads stays a "
            "multiple of num_key_value_heads in every block, and k, v and the KV cache shrink with q and o")


def _on_scale(scores: torch.Tensor, log: bool, floor: float, squash: bool = False) -> torch.Tensor:
    """log10 of raw scores (at least `floor`); asinh of standardized ones (`squash`): their tail runs to dozens of
    standard deviations, which on linear bins would leave the bulk of the channels in one or two of them."""
    if log:
        return scores.double().clamp_min(floor).log10()
    return scores.double().asinh() if squash else scores.double()


def _floor(values: list[torch.Tensor]) -> float:
    """The smallest positive score: a zero score is drawn in the lowest bin on a log scale."""
    positive = torch.cat([v.double().reshape(-1) for v in values])
    positive = positive[positive > 0]
    return float(positive.min()) if positive.numel() else 1e-30


def histogram(structure: str, log: bool, values: list[torch.Tensor], removed: list[torch.Tensor],
              cutoff: float | None, edges: tuple[float, ...] | None = None, floor: float | None = None
              ) -> ScoreHistogram:
    """Kept and removed counts of `values` (one tensor per block, raw or standardized) on shared bins: `edges`
    given, or BINS spanning the values (log10 of raw scores, each at least `floor`)."""
    everything = torch.cat([v.double().reshape(-1) for v in values])
    floor = _floor(values) if floor is None else floor
    squash = not log and structure != "block"
    scaled = [_on_scale(v, log, floor, squash) for v in values]
    if edges is None:
        low, high = (float(torch.cat(scaled).min()), float(torch.cat(scaled).max())) if everything.numel() else (0.0, 1.0)
        edges_t = torch.linspace(low, high if high > low else low + 1.0, BINS + 1, dtype=torch.float64)
    else:
        edges_t = torch.tensor(edges, dtype=torch.float64)
    kept = torch.zeros(BINS, dtype=torch.long)
    gone = torch.zeros(BINS, dtype=torch.long)
    for block_values, block_removed in zip(scaled, removed):
        bins = (torch.bucketize(block_values, edges_t, right=True) - 1).clamp(0, BINS - 1)
        mask = torch.zeros(block_values.numel(), dtype=torch.bool)
        mask[block_removed] = True
        gone += torch.bincount(bins[mask], minlength=BINS)
        kept += torch.bincount(bins[~mask], minlength=BINS)
    scale = "log10 score" if log else ("asinh(standardized score)" if squash else "block influence")
    cut = None if cutoff is None else float(_on_scale(torch.tensor([cutoff]), log, floor, squash)[0])
    return ScoreHistogram(structure, scale, tuple(float(e) for e in edges_t), tuple(kept.tolist()),
                          tuple(gone.tolist()), cut)


def _highest(values: torch.Tensor, removed: torch.Tensor) -> float | None:
    return float(values[removed].max()) if len(removed) else None


def structure_record(config: PruneConfig, scored: list[Any], model_params_dense: int, model_params_kept: int,
                     dense_first: bool, global_cutoff: float | None) -> StructureRecord:
    """The run's StructureRecord from the Shrinker's per-block `scored` (pruning.structure._Scored)."""
    dense = sum(s.params_dense for s in scored)
    kept = sum(s.params_kept for s in scored)
    common = dict(method=config.method, structure=config.structure.value, allocation=config.allocation,
                  target=config.target, ratio=float(config.sparsity), bias_compensation=config.bias_compensation,
                  removed_fraction=1 - kept / dense, block_params_dense=dense, block_params_kept=kept,
                  model_params_dense=model_params_dense, model_params_kept=model_params_kept,
                  scored_dense_first=dense_first)
    if config.structure is Structure.DEPTH:
        influence = torch.tensor([s.influence for s in scored], dtype=torch.float64)
        removed = torch.tensor([s.index for s in scored if s.removed], dtype=torch.long)
        blocks = tuple(BlockShrink(s.index, s.removed, s.params_dense, s.params_kept, influence=s.influence)
                       for s in scored)
        return StructureRecord(**common, grouping="whole decoder blocks", blocks=blocks, distributions=(
            histogram("block", False, [influence], [removed], _highest(influence, removed)),))
    log = config.allocation == "uniform"  # raw scores span decades; standardized ones are centred on 0
    channels = [s.channels for s in scored]
    removed_channels = [s.removed_channels for s in scored]
    floor = _floor(channels)
    shared = histogram("MLP channel", log, channels, removed_channels, None, floor=floor).edges
    blocks = tuple(_block(s, log, shared, floor) for s in scored)
    per = scored[0].anatomy.heads_per_group
    cut = global_cutoff if not log else None  # a uniform run cuts each block at its own score (in its blocks)
    return StructureRecord(**common, grouping=GROUPING.format(per=per), blocks=blocks, distributions=(
        histogram("KV group", log, [s.groups for s in scored], [s.removed_groups for s in scored], cut),
        histogram("MLP channel", log, channels, removed_channels, cut)))


def _block(s: Any, log: bool, edges: tuple[float, ...], floor: float) -> BlockShrink:
    """One block's record: the heads it kept (dense numbering), its channels and their scores on the shared bins."""
    a = s.anatomy
    kept_groups = [g for g in range(a.kv_heads) if g not in set(s.removed_groups.tolist())]
    heads_kept = tuple(g * a.heads_per_group + h for g in kept_groups for h in range(a.heads_per_group))
    channel_hist = histogram("MLP channel", log, [s.channels], [s.removed_channels],
                             _highest(s.channels, s.removed_channels), edges, floor)
    return BlockShrink(s.index, False, s.params_dense, s.params_kept, heads=a.heads, kv_heads=a.kv_heads,
                       head_dim=a.head_dim, heads_kept=heads_kept, channels=a.channels,
                       channels_kept=a.channels - len(s.removed_channels),
                       group_scores=tuple(round(float(g), 6) for g in s.groups), channel_scores=channel_hist)
