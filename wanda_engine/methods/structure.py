"""The structure removers' math: a score per input channel of an output projection (width) or per decoder block
(depth), a KV group's score from its channels', FLAP's standardization, and how many structures a target takes.

Width scores rank the input channels of the two output projections of a block: o_proj's inputs are the attention
heads' outputs (head h owns channels h·head_dim … (h+1)·head_dim − 1), down_proj's inputs are the MLP's
intermediate channels. Removing a channel removes its column of the output projection and the rows of the layers
that produce it (q/k/v rows for a head, gate/up rows for an MLP channel). With grouped KV heads the engine removes
whole KV groups (a KV head and the query heads that share it): `group_scores` sums a group's channels.

Pure tensor functions of weights and statistics; imports only `core`. The table of methods names the scorers;
the pipeline (`pruning.structure`) calls them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core.errors import ConfigError
from .table import PER_BLOCK


def wanda_sp_score(weight: torch.Tensor, stats: Any) -> torch.Tensor:
    """Wanda-sp: Σ_i |W_ij|·‖X_j‖₂ over the output rows i, per input channel j [in].

    Wanda's score (Sun et al. 2023, eq. 1) aggregated over the rows a channel feeds; FLAP's reference code
    (CASIA-IVA-Lab/FLAP lib/prune.py, prune_wanda_sp) takes the mean over the rows, which ranks alike."""
    if stats is None:
        raise ValueError("wanda-sp needs activation statistics")
    return weight.abs().float().sum(dim=0) * stats.channel_norms.to(weight.device)


def flap_score(weight: torch.Tensor, stats: Any) -> torch.Tensor:
    """FLAP's fluctuation metric (An et al., AAAI 2024, eq. 4): S_j = 1/(N−1) Σ_n (X_nj − X̄_j)² · ‖W_:,j‖₂², the
    variance of input channel j over the N calibration tokens times its column's squared norm [in].

    (The reference code also squares o_proj's channel scores before a head sums them; we follow the paper.)"""
    if stats is None or stats.sum is None:
        raise ValueError("flap needs the mean and variance of the activations")
    return stats.variance.float().to(weight.device) * weight.float().pow(2).sum(dim=0)


def magnitude_sp_score(weight: torch.Tensor, stats: Any = None) -> torch.Tensor:
    """Magnitude-sp: ‖W_:,j‖₂, the norm of input channel j's column [in] (FLAP's data-free baseline, prune_magnitude_sp)."""
    return weight.float().norm(dim=0)


def block_influence(block_input: torch.Tensor, block_output: torch.Tensor) -> torch.Tensor:
    """ShortGPT's block influence per token (Men et al. 2024, eq. 1): 1 − cos(x_in, x_out) [tokens]; the block's
    BI is its mean over the calibration tokens. A block that barely turns its input (BI near 0) goes first."""
    x_in = block_input.reshape(-1, block_input.shape[-1]).float()
    x_out = block_output.reshape(-1, block_output.shape[-1]).float()
    return 1.0 - torch.nn.functional.cosine_similarity(x_in, x_out, dim=-1)


def group_scores(channel_scores: torch.Tensor, head_dim: int, heads_per_group: int, reduce: str = "sum") -> torch.Tensor:
    """One score per KV group from o_proj's channel scores [heads·head_dim]: a head sums its head_dim channels (the
    reference's per-head sum, with head_dim read from the model instead of 128) and a group its heads; `reduce`
    'mean' averages them instead (FLAP's global allocation averages standardized scores)."""
    per_group = channel_scores.reshape(-1, heads_per_group * head_dim)
    return per_group.mean(dim=1) if reduce == "mean" else per_group.sum(dim=1)


def standardized(scores: torch.Tensor) -> torch.Tensor:
    """(s − mean(s)) / std(s) within one block's structures of one kind (FLAP's global allocation: the
    reference standardizes each layer's head and channel scores before they compete). All-equal scores -> 0."""
    scores = scores.double()
    std = scores.std() if scores.numel() > 1 else scores.new_tensor(0.0)
    centred = scores - scores.mean()
    return centred / std if float(std) > 0 else torch.zeros_like(centred)


def lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """The indices of the `count` lowest scores, lowest first (ties: the lower index first)."""
    return torch.argsort(scores.double(), stable=True)[:count]


def uniform_counts(target: str, ratio: float, groups: int, heads_per_group: int, channels: int, group_params: int,
                   channel_params: int, block_params: int) -> tuple[int, int]:
    """(KV groups, MLP channels) that every block loses under a uniform allocation; ConfigError when that removes
    all of a block's heads or channels, breaks the grouping of query heads, or removes nothing.

    target 'params': the groups that bring the attention closest to losing `ratio` of it, and the MLP channels
    that bring the block's parameters closest to losing `ratio` of them (the channels absorb the groups'
    rounding). target 'per-block': the published tables' `pruning_ratio` (FLAP, Wanda-sp): int(ratio·heads) query
    heads, in whole groups, and int(ratio·channels) channels."""
    heads = groups * heads_per_group
    if target == PER_BLOCK:
        removed_heads, removed_channels = int(ratio * heads), int(ratio * channels)
        if removed_heads % heads_per_group:
            raise ConfigError(
                f"target per-block removes int({ratio:g} × {heads}) = {removed_heads} query heads per block, not a whole "
                f"number of KV groups ({heads_per_group} query heads share each KV head), which would break the "
                f"model's grouped attention; use a ratio whose int(ratio × {heads}) is a multiple of "
                f"{heads_per_group}, or target 'params'")
        removed_groups = removed_heads // heads_per_group
    else:
        removed_groups = math.floor(ratio * groups + 0.5)
        left = ratio * block_params - removed_groups * group_params
        removed_channels = max(0, math.floor(left / channel_params + 0.5))
    if removed_groups >= groups:
        raise ConfigError(f"ratio {ratio:g} would remove all {groups} KV head groups of every block ({heads} query "
                          f"heads); use a ratio below {(groups - 0.5) / groups:.3g}")
    if removed_channels >= channels:
        raise ConfigError(f"ratio {ratio:g} would remove all {channels} MLP channels of every block; use a smaller ratio")
    if removed_groups == removed_channels == 0:
        raise ConfigError(f"ratio {ratio:g} removes no head group and no MLP channel of a block; use a larger ratio")
    return removed_groups, removed_channels


def cut_in_order(scores: torch.Tensor, params: torch.Tensor, budget: float) -> int:
    """How many of the structures, taken lowest score first, remove the parameter count closest to `budget`
    (FLAP's global threshold: the cut whose cumulative parameters are nearest the target). 0 … len(scores)."""
    order = torch.argsort(scores.double(), stable=True)
    removed = torch.cat([params.new_zeros(1), params[order].cumsum(0)]).double()
    return int(torch.argmin((removed - budget).abs()))


def global_selection(group_scores: Sequence[torch.Tensor], channel_scores: Sequence[torch.Tensor],
                     group_params: Sequence[int], channel_params: Sequence[int], budget: float
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Which groups and channels of every block to remove when all compete for one budget of parameters.

    Scores are compared as they come (standardize them first); each block keeps its best-scored group and channel
    (a block without heads or channels would not run). Returns per block the removed group indices and channel
    indices, and the score at the cut (the highest score removed; -inf when nothing is)."""
    candidates, params, owners = [], [], []  # one entry per structure that may go: (block, kind, index)
    for block, (g_scores, c_scores) in enumerate(zip(group_scores, channel_scores)):
        for kind, scores, size in (("group", g_scores, group_params[block]), ("channel", c_scores, channel_params[block])):
            keep = int(torch.argmax(scores.double()))  # ties: the lowest index keeps it
            for index in range(scores.numel()):
                if index != keep:
                    candidates.append(float(scores[index]))
                    params.append(size)
                    owners.append((block, kind, index))
    scores_t = torch.tensor(candidates, dtype=torch.float64)
    count = cut_in_order(scores_t, torch.tensor(params, dtype=torch.float64), budget)
    order = torch.argsort(scores_t, stable=True)[:count].tolist()
    removed_groups = [[] for _ in group_scores]
    removed_channels = [[] for _ in channel_scores]
    for position in order:
        block, kind, index = owners[position]
        (removed_groups if kind == "group" else removed_channels)[block].append(index)
    cutoff = max((candidates[p] for p in order), default=float("-inf"))
    return ([torch.tensor(sorted(r), dtype=torch.long) for r in removed_groups],
            [torch.tensor(sorted(r), dtype=torch.long) for r in removed_channels], cutoff)
