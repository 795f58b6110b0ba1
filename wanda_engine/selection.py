"""Mask selectors: given a score per weight [out, in], choose which weights to prune.

Every selector returns a bool mask, True = prune, with exactly the requested count per
comparison group (ties broken by torch.topk, deterministic for a given input and device).
Nothing here loops in Python over rows or groups.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class Selection(NamedTuple):
    """A mask and its cut-off, read off the selection itself (no second pass over the scores)."""

    mask: torch.Tensor  # [out, in] bool, True = prune
    cutoff: float  # the largest pruned score of the group (median over rows for row and N:M groups); nan if none


def _per_row(score: torch.Tensor, sparsity: float) -> Selection:
    out_features, in_features = score.shape
    k = int(in_features * sparsity)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k == 0:
        return Selection(mask, float("nan"))
    values, idx = torch.topk(score, k, dim=1, largest=False, sorted=False)  # [out, k]
    mask.scatter_(1, idx, True)
    return Selection(mask, float(values.amax(dim=1).median()))


def prune_lowest_per_row(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Wanda's default group: in each output row, prune the int(in·sparsity) lowest scores."""
    return _per_row(score, sparsity).mask


def _in_matrix(score: torch.Tensor, sparsity: float) -> Selection:
    k = int(score.numel() * sparsity)
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k == 0:
        return Selection(mask.view_as(score), float("nan"))
    values, idx = torch.topk(score.flatten(), k, largest=False, sorted=False)
    mask[idx] = True
    return Selection(mask.view_as(score), float(values.max()))


def prune_lowest_in_matrix(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The reference's magnitude group: prune the int(numel·sparsity) lowest scores of the matrix.

    (The reference prunes `score <= sorted[k]`, one weight more than k when no ties; we prune exactly k.)
    """
    return _in_matrix(score, sparsity).mask


def _n_of_m(score: torch.Tensor, n: int, m: int) -> Selection:
    out_features, in_features = score.shape
    if in_features % m:
        raise ValueError(f"input width {in_features} is not a multiple of M={m}")
    groups = score.view(out_features, in_features // m, m)  # [out, in/M, M]
    values, idx = torch.topk(groups, n, dim=2, largest=False, sorted=False)  # [out, in/M, N]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, idx, True)
    return Selection(mask.view(out_features, in_features), float(values.flatten(1).amax(dim=1).median()))


def prune_n_of_m(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M: in every group of M consecutive inputs of a row, prune the N lowest scores."""
    return _n_of_m(score, n, m).mask


def prune_adaptive_alpha(score: torch.Tensor, sparsity: float, tolerance: float = 0.001) -> tuple[torch.Tensor, float]:
    """Wanda's variant (reference `--use_variant`): per row, prune the lowest scores whose cumulative
    sum stays within alpha × the row's total; one alpha per matrix, bisected until the matrix's
    sparsity is within `tolerance` of the target. Returns (mask, alpha).
    """
    sorted_scores, order = torch.sort(score, dim=1, stable=True)  # [out, in] ascending
    cumsum = torch.cumsum(sorted_scores.double(), dim=1)
    row_total = cumsum[:, -1:]  # [out, 1]
    numel = score.numel()

    def count_per_row(alpha: float) -> torch.Tensor:  # [out, 1]: how many of the lowest to prune
        return (cumsum <= row_total * alpha).sum(dim=1, keepdim=True)

    # Bisection over alpha in [0, 1]; the reference starts at 0.4 within [0, 0.8].
    lo, hi, alpha = 0.0, 1.0, 0.4
    counts = count_per_row(alpha)
    for _ in range(60):
        current = counts.sum().item() / numel
        if abs(current - sparsity) <= tolerance or hi - lo < 1e-9:
            break
        if current > sparsity:
            hi = alpha
        else:
            lo = alpha
        alpha = (lo + hi) / 2
        counts = count_per_row(alpha)
    positions = torch.arange(score.shape[1], device=score.device).expand_as(score)
    sorted_mask = positions < counts  # prune the first `count` of each row in sorted order
    mask = torch.zeros_like(sorted_mask).scatter_(1, order, sorted_mask)
    return mask, alpha


def select(score: torch.Tensor, sparsity: float, group: str, nm: tuple[int, int] | None = None) -> Selection:
    """Dispatch on the comparison group: 'row', 'matrix', or 'nm' (with nm=(N, M))."""
    if group == "nm":
        assert nm is not None
        return _n_of_m(score, *nm)
    if group == "row":
        return _per_row(score, sparsity)
    if group == "matrix":
        return _in_matrix(score, sparsity)
    raise ValueError(f"unknown comparison group {group!r}")


def select_mask(score: torch.Tensor, sparsity: float, group: str, nm: tuple[int, int] | None = None) -> torch.Tensor:
    """The mask alone of `select`."""
    return select(score, sparsity, group, nm).mask
