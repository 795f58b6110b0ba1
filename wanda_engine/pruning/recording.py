"""Turn one pruned matrix into a MatrixRecord: histograms, summaries, overlap, each metric's proxy error by
input channel, small arrays.

Computed on the compute device from tensors already there; only small results move to the CPU.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..store.matrix_records import (ERROR_METRICS, KEPT, PRUNED_BOTH, PRUNED_ONLY_METHOD, PRUNED_ONLY_REFERENCE, MatrixRecord,
                      MaskOverlap, top1pct_count)
from ..methods.scoring import InputStats

HIST_BINS = 60
DENSITY_TILES = 64
CROP = 64
TOP_CHANNELS = 16
ROW_HIST_BINS = 20


def _group_cutoff(score: torch.Tensor, mask: torch.Tensor, group: str) -> float:
    """The largest pruned score: per matrix, or the median over rows of each row's largest pruned score.

    Only for masks that come without one (SparseGPT, the variant); `selection.select` returns it.
    """
    pruned = torch.where(mask, score, torch.full_like(score, -math.inf))
    if group == "matrix":
        return float(pruned.max())
    per_row = pruned.max(dim=1).values
    per_row = per_row[torch.isfinite(per_row)]
    return float(per_row.median()) if per_row.numel() else float("nan")


def _log_hist(score: torch.Tensor, mask: torch.Tensor, cutoff: float) -> dict:
    """Histogram of log10(score) over the nonzero scores, split into pruned and kept weights.

    One bincount over bin index + HIST_BINS·pruned; zero scores (log10 = -inf) land in bin 0 and
    are moved to their own count afterwards, which costs a pass only when the minimum is zero.
    """
    flat, pruned = score.flatten(), mask.flatten()
    smallest, largest = (float(v) for v in torch.aminmax(flat))
    zeros_pruned = zeros_kept = 0
    if smallest <= 0:  # quantized weights hold exact zeros: the smallest *positive* score sets the range
        is_zero = flat <= 0
        zeros_pruned = int(torch.count_nonzero(is_zero & pruned))
        zeros_kept = int(torch.count_nonzero(is_zero)) - zeros_pruned
        smallest = float(torch.where(is_zero, largest, flat).min()) if largest > 0 else 0.1
        largest = max(largest, smallest)
    lo, hi = math.log10(smallest), math.log10(largest) if largest > 0 else 0.0
    if hi <= lo:
        hi = lo + 1e-6
    # bin indices below 2·HIST_BINS fit a byte: the conversion and the add write a quarter of int32's bytes
    bins = torch.log10(flat).sub_(lo).mul_(HIST_BINS / (hi - lo)).clamp_(0, HIST_BINS - 1).to(torch.uint8)
    counts = torch.bincount(bins.add_(pruned, alpha=HIST_BINS), minlength=2 * HIST_BINS).cpu().tolist()
    counts[0] -= zeros_kept
    counts[HIST_BINS] -= zeros_pruned
    edges = torch.linspace(lo, hi, HIST_BINS + 1)
    return {
        "edges": [round(float(e), 5) for e in edges],
        "kept": counts[:HIST_BINS],
        "pruned": counts[HIST_BINS : 2 * HIST_BINS],
        "zero_weights": zeros_kept + zeros_pruned,
        "cutoff": math.log10(cutoff) if cutoff > 0 else float("nan"),
    }


def _density_map(mask: torch.Tensor) -> np.ndarray:
    """Fraction pruned per tile, at most DENSITY_TILES x DENSITY_TILES tiles."""
    rows, cols = min(DENSITY_TILES, mask.shape[0]), min(DENSITY_TILES, mask.shape[1])
    if mask.shape[0] % rows == 0 and mask.shape[1] % cols == 0:  # equal tiles: a sum over a view, no float copy
        r, c = mask.shape[0] // rows, mask.shape[1] // cols
        tiles = mask.view(rows, r, cols, c).sum(dim=(1, 3), dtype=torch.int32).float() / (r * c)
    else:
        tiles = F.adaptive_avg_pool2d(mask.float()[None, None], (rows, cols))[0, 0]
    return tiles.cpu().numpy().astype(np.float32)


def _channel_summary(norms: torch.Tensor) -> dict:
    energy = norms.double() ** 2
    total = float(energy.sum()) or 1.0
    k = min(TOP_CHANNELS, norms.numel())
    top = torch.topk(norms, k)
    n_top1pct = top1pct_count(norms.numel())
    median = float(norms.median())
    return {
        "top_index": [int(i) for i in top.indices],
        "top_norm": [float(v) for v in top.values],
        "top1pct_share": float(torch.topk(energy, n_top1pct).values.sum()) / total,
        "max_over_median": float(norms.max()) / median if median > 0 else float("inf"),
    }


def _proxy_errors(original: torch.Tensor, mask: torch.Tensor, pruned: torch.Tensor | None, norms: torch.Tensor,
                  method: str, masks_by_metric: dict[str, torch.Tensor]) -> tuple[float, dict, dict[str, np.ndarray]]:
    """The run's relative proxy error Σ_ij ΔW_ij²·‖X_j‖² / Σ_ij W_ij²·‖X_j‖², and, for each of ERROR_METRICS,
    its mask's proxy error split by input channel and the share of the top-1% channels' weights it prunes.

    Σ_ij ΔW_ij²·‖X_j‖² = Σ_j ‖X_j‖²·‖ΔW_:j‖²: the weights squared once, a masked column sum per mask, then a
    dot product.
    """
    energy = norms.double() ** 2
    squares = original.square()  # once: every mask's column sums read it

    def removed(mask: torch.Tensor) -> torch.Tensor:
        return (squares * mask).sum(dim=0).double()

    dense = (squares.sum(dim=0).double() @ energy).clamp_min(1e-30)
    own = removed(mask) if pruned is None else (original - pruned).square().sum(dim=0).double()
    top = torch.topk(norms, top1pct_count(norms.numel())).indices
    by_metric, arrays = {}, {}
    for metric in (m for m in ERROR_METRICS if m in masks_by_metric):
        metric_mask = masks_by_metric[metric]
        columns = own if metric == method else removed(metric_mask)
        feeding_top = metric_mask[:, top]
        by_metric[metric] = {"proxy_error": float((columns @ energy) / dense),
                             "top1pct_pruned": int(torch.count_nonzero(feeding_top)) / feeding_top.numel()}
        arrays[f"channel_error_{metric}"] = (columns * energy / dense).float().cpu().numpy()
    return float((own @ energy) / dense), by_metric, arrays


def _mask_crop(mask: torch.Tensor, reference: torch.Tensor, norms: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CROPxCROP window of weights, coded KEPT / PRUNED_BOTH / ONLY_METHOD / ONLY_REFERENCE.

    Rows are the first CROP; columns are centred on the input channel with the largest activation
    norm (where Wanda and magnitude disagree most), or the first CROP without statistics.
    """
    out_f, in_f = mask.shape
    n_rows, n_cols = min(CROP, out_f), min(CROP, in_f)
    centre = int(torch.argmax(norms)) if norms is not None else 0
    c0 = min(max(0, centre - n_cols // 2), in_f - n_cols)
    m = mask[:n_rows, c0 : c0 + n_cols]
    r = reference[:n_rows, c0 : c0 + n_cols]
    code = torch.full(m.shape, KEPT, dtype=torch.uint8, device=m.device)
    code[m & r] = PRUNED_BOTH
    code[m & ~r] = PRUNED_ONLY_METHOD
    code[~m & r] = PRUNED_ONLY_REFERENCE
    return code.cpu().numpy(), np.arange(n_rows, dtype=np.int32), np.arange(c0, c0 + n_cols, dtype=np.int32)


def _overlap(mask: torch.Tensor, ref_mask: torch.Tensor, reference: str, group: str) -> MaskOverlap:
    """The run's pruned set against the reference metric's: Jaccard, and the shares pruned by both or by one."""
    numel = mask.numel()
    n_method, n_ref = int(torch.count_nonzero(mask)), int(torch.count_nonzero(ref_mask))
    both = int(torch.count_nonzero(mask & ref_mask))
    only_m, only_r = n_method - both, n_ref - both
    union = both + only_m + only_r
    return MaskOverlap(reference=reference, group=group, jaccard=both / union if union else 1.0,
                       both=both / numel, only_method=only_m / numel, only_reference=only_r / numel)


def record_matrix(*, block: int, name: str, full_name: str, method: str, group: str,
                  original: torch.Tensor, mask: torch.Tensor, pruned: torch.Tensor | None,
                  stats: InputStats | None, masks_by_metric: dict[str, torch.Tensor],
                  scores_by_metric: dict[str, torch.Tensor], reference: str,
                  cutoffs_by_metric: dict[str, float] | None = None,
                  groups_by_metric: dict[str, str] | None = None) -> MatrixRecord:
    """original/pruned: [out, in] fp32 weights before/after (pruned=None: original with the mask's
    entries zeroed, no update of the others); mask: True = pruned by the run.

    masks_by_metric / scores_by_metric: each metric's own score and mask at the run's settings
    ('magnitude' always, 'wanda' when stats exist); `reference` names the metric to overlap with (no overlap and
    no mask crop where its mask is absent: a magnitude run without statistics has no Wanda mask).
    cutoffs_by_metric: each mask's cut-off score where the selection gave it; computed otherwise.
    groups_by_metric: the comparison group each metric's mask was chosen in (default: every one in `group`).
    """
    numel = mask.numel()
    row_counts = mask.sum(dim=1, dtype=torch.int32)
    row_sp = row_counts.float() / mask.shape[1]
    row_hist = torch.histc(row_sp.cpu(), bins=ROW_HIST_BINS, min=0.0, max=1.0)
    norms = stats.channel_norms if stats is not None else None

    proxy_error, by_metric, error_arrays = None, None, {}
    if norms is not None:
        proxy_error, by_metric, error_arrays = _proxy_errors(original, mask, pruned, norms, method, masks_by_metric)

    ref_mask = masks_by_metric.get(reference)  # absent without statistics: Wanda's mask needs activations
    overlap = _overlap(mask, ref_mask, reference, group) if ref_mask is not None else None

    groups = {metric: group for metric in scores_by_metric} | dict(groups_by_metric or {})
    cutoffs = dict(cutoffs_by_metric or {})
    for metric, score in scores_by_metric.items():
        if metric not in cutoffs or cutoffs[metric] != cutoffs[metric]:  # missing or nan
            cutoffs[metric] = _group_cutoff(score, masks_by_metric[metric], groups[metric])

    # where the zeros fall, per output row and per input channel (the Sparsity page's side-by-side view): counts
    # as uint16 (a matrix side is far below 65,536), the column count being one more pass over the mask
    arrays = {"density": _density_map(mask), "row_pruned": row_counts.to(torch.int32).cpu().numpy().astype(np.uint16),
              "channel_pruned": mask.sum(dim=0, dtype=torch.int32).cpu().numpy().astype(np.uint16)}
    if ref_mask is not None:
        arrays["mask_crop"], arrays["crop_rows"], arrays["crop_cols"] = _mask_crop(mask, ref_mask, norms)
    if norms is not None:
        arrays["channel_norms"] = norms.float().cpu().numpy()
    arrays.update(error_arrays)

    return MatrixRecord(
        block=block, name=name, full_name=full_name, shape=tuple(mask.shape), method=method, group=group,
        sparsity=int(row_counts.sum()) / numel,
        row_sparsity={"min": float(row_sp.min()), "max": float(row_sp.max()), "mean": float(row_sp.mean()),
                      "std": float(row_sp.std()) if row_sp.numel() > 1 else 0.0,
                      "hist": [int(c) for c in row_hist]},
        proxy_error=proxy_error,
        hist={metric: _log_hist(scores_by_metric[metric], masks_by_metric[metric], cutoffs[metric]) for metric in scores_by_metric},
        overlap=overlap,
        channels=_channel_summary(norms) if norms is not None else None,
        by_metric=by_metric,
        groups={metric: groups[metric] for metric in masks_by_metric},
        arrays=arrays,
    )
