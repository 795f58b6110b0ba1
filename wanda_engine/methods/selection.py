"""Mask selectors: given a score per weight [out, in], choose which weights to prune.

`select` returns a bool mask, True = prune, with exactly the requested count per comparison
group (ties broken by torch.topk, deterministic for a given input and device). Wanda's variant,
`prune_adaptive_alpha`, is the reference's threshold search instead, ties and all.
With `protect_channels`, the `*_protected` selectors never prune the weights of the input
channels with the highest activation norms and take each group's whole count from the others.
Nothing here loops in Python over rows or groups.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch


class Selection(NamedTuple):
    """A mask and its cut-off, read off the selection itself (no second pass over the scores)."""

    mask: torch.Tensor  # [out, in] bool, True = prune
    cutoff: float  # the largest pruned score of the group (median over rows for row and N:M groups); nan if none


def _per_row(score: torch.Tensor, sparsity: float) -> Selection:
    """Wanda's default group: in each output row, prune the int(in·sparsity) lowest scores."""
    out_features, in_features = score.shape
    k = int(in_features * sparsity)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k == 0:
        return Selection(mask, float("nan"))
    values, idx = torch.topk(score, k, dim=1, largest=False, sorted=False)  # [out, k]
    mask.scatter_(1, idx, True)
    return Selection(mask, float(values.amax(dim=1).median()))


def _in_matrix(score: torch.Tensor, sparsity: float) -> Selection:
    """The reference's magnitude group: prune the int(numel·sparsity) lowest scores of the matrix.

    (The reference prunes `score <= sorted[k]`, one weight more than k when no ties; we prune exactly k.)
    """
    k = int(score.numel() * sparsity)
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k == 0:
        return Selection(mask.view_as(score), float("nan"))
    values, idx = torch.topk(score.flatten(), k, largest=False, sorted=False)
    mask[idx] = True
    return Selection(mask.view_as(score), float(values.max()))


def _n_of_m(score: torch.Tensor, n: int, m: int) -> Selection:
    """N:M: in every group of M consecutive inputs of a row, prune the N lowest scores."""
    out_features, in_features = score.shape
    if in_features % m:
        raise ValueError(f"input width {in_features} is not a multiple of M={m}")
    groups = score.view(out_features, in_features // m, m)  # [out, in/M, M]
    values, idx = torch.topk(groups, n, dim=2, largest=False, sorted=False)  # [out, in/M, N]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, idx, True)
    return Selection(mask.view(out_features, in_features), float(values.flatten(1).amax(dim=1).median()))


def select(score: torch.Tensor, sparsity: float, group: str, nm: tuple[int, int] | None = None) -> Selection:
    """Dispatch on the comparison group: 'row', 'matrix', or 'nm' (with nm=(N, M); `sparsity` unused)."""
    if group == "nm":
        assert nm is not None
        return _n_of_m(score, *nm)
    if group == "row":
        return _per_row(score, sparsity)
    if group == "matrix":
        return _in_matrix(score, sparsity)
    raise ValueError(f"unknown comparison group {group!r}")


def _mask_at_alpha(alpha: float, sorted_scores: torch.Tensor, score: torch.Tensor, cumsum: torch.Tensor,
                   row_total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's `return_given_alpha`: per row, the threshold is the largest sorted score whose
    cumulative sum stays within alpha × the row's total; prune every score <= it (ties included).
    Returns the mask and the matrix's sparsity (a tensor in the default float dtype, as there)."""
    within = cumsum <= (row_total * alpha).reshape(-1, 1)
    count = within.sum(dim=1, keepdim=True)
    # The reference gathers at count - 1 and fails on a row where even the lowest score exceeds
    # alpha × the total; such a row prunes nothing here.
    threshold = torch.gather(sorted_scores, 1, (count - 1).clamp(min=0))
    mask = (score <= threshold) & (count > 0)
    return mask, mask.sum() / mask.numel()


def prune_adaptive_alpha(score: torch.Tensor, sparsity: float) -> tuple[torch.Tensor, float]:
    """Wanda's variant (reference `prune_wanda` with `--use_variant`): one alpha per matrix, and in
    each row prune the lowest scores whose cumulative sum stays within alpha × the row's total.

    The reference's search, step for step and in the scores' own dtype: alpha starts at 0.4 in the
    bracket [0, 0.8] and moves halfway towards the bracket's end that brings the sparsity nearer the
    target, until it is within 0.001 of it or the bracket is narrower than 0.001 (then it stops
    where it is, off the target). Ties with the threshold are pruned, so a row may prune more than
    its count. Returns (mask, alpha).
    """
    sorted_scores = torch.sort(score, dim=-1, stable=True).values
    cumsum = torch.cumsum(sorted_scores, dim=1)
    row_total = score.sum(dim=1)
    alpha, lo, hi = 0.4, 0.0, 0.8
    mask, current = _mask_at_alpha(alpha, sorted_scores, score, cumsum, row_total)
    while torch.abs(current - sparsity) > 0.001 and hi - lo >= 0.001:
        if current > sparsity:
            alpha, hi = (alpha + lo) / 2.0, alpha
        else:
            alpha, lo = (alpha + hi) / 2.0, alpha
        mask, current = _mask_at_alpha(alpha, sorted_scores, score, cumsum, row_total)
    return mask, alpha


def protected_count(in_features: int, fraction: float) -> int:
    """How many input channels `protect_channels=fraction` keeps whole: ceil(fraction · in_features),
    so that any fraction above 0 protects at least one channel."""
    # the 1e-9 absorbs the product's rounding: 0.07 · 100 is 7.000000000000001, and protects 7
    return math.ceil(fraction * in_features - 1e-9) if fraction > 0 else 0


def protected_channels(norms: torch.Tensor, fraction: float) -> torch.Tensor:
    """The indices of the `protected_count` channels with the highest activation norms ‖X_j‖₂
    (equal norms: the lower channel index first)."""
    order = torch.sort(norms, descending=True, stable=True).indices
    return order[: protected_count(norms.numel(), fraction)]


def protection_shortfall(shape: tuple[int, int], sparsity: float, fraction: float, group: str) -> str | None:
    """Why an [out, in] matrix cannot prune `sparsity` of each group (row or matrix) from its
    unprotected weights alone; None when it can."""
    out_features, in_features = shape
    protected = protected_count(in_features, fraction)
    if group == "matrix":
        need, have = int(out_features * in_features * sparsity), out_features * (in_features - protected)
    else:
        need, have = int(in_features * sparsity), in_features - protected
    if need <= have:
        return None
    return (f"protect_channels {fraction:g} keeps {protected} of the {in_features} input channels of a "
            f"{out_features}x{in_features} matrix whole, leaving {have} unprotected weights per {group}, fewer than "
            f"the {need} that sparsity {sparsity:g} prunes there")


def select_protected(score: torch.Tensor, norms: torch.Tensor, sparsity: float, group: str,
                     fraction: float) -> Selection:
    """`select` ('row' or 'matrix') with the weights of the top `fraction` of input channels by norm
    never pruned: their scores are raised to +inf, so the same selector, pruning its group's full
    count, takes all of it from the other channels. Each row (or the matrix) still prunes exactly
    int(size · sparsity); the cut-off is the largest pruned score, as without protection."""
    why = protection_shortfall(tuple(score.shape), sparsity, fraction, group)
    if why is not None:
        raise ValueError(why)
    return select(score.index_fill(1, protected_channels(norms, fraction), math.inf), sparsity, group)


def prune_adaptive_alpha_protected(score: torch.Tensor, norms: torch.Tensor, sparsity: float,
                                   fraction: float) -> tuple[torch.Tensor, float]:
    """Wanda's variant with the top `fraction` of input channels by norm protected: those columns are
    kept whole, and the reference's alpha search runs over the other columns alone (their row sums
    are what alpha is a share of), its target raised to sparsity · in / unprotected so that the
    whole matrix lands at `sparsity`: within 0.001 of it where the search lands within 0.001 of the
    raised target, off it where the search stops off target (as without protection). Returns (mask, alpha)."""
    why = protection_shortfall(tuple(score.shape), sparsity, fraction, "row")
    if why is not None:
        raise ValueError(why)
    in_features = score.shape[1]
    unprotected = torch.ones(in_features, dtype=torch.bool, device=score.device)
    unprotected[protected_channels(norms, fraction)] = False
    columns = unprotected.nonzero().squeeze(1)
    part, alpha = prune_adaptive_alpha(score[:, columns], sparsity * in_features / columns.numel())
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask[:, columns] = part
    return mask, alpha
