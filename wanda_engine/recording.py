"""Turn one pruned matrix into a MatrixRecord: histograms, summaries, overlap, small arrays.

Computed on the compute device from tensors already there; only small results move to the CPU.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .records import KEPT, PRUNED_BOTH, PRUNED_ONLY_METHOD, PRUNED_ONLY_REFERENCE, MatrixRecord
from .scoring import InputStats

HIST_BINS = 60
DENSITY_TILES = 64
CROP = 64
TOP_CHANNELS = 16
ROW_HIST_BINS = 20


def _group_cutoff(score: torch.Tensor, mask: torch.Tensor, group: str) -> float:
    """The largest pruned score: per matrix, or the median over rows of each row's largest pruned score."""
    pruned = torch.where(mask, score, torch.full_like(score, -math.inf))
    if group == "matrix":
        value = pruned.max()
    else:
        per_row = pruned.max(dim=1).values
        per_row = per_row[torch.isfinite(per_row)]
        if per_row.numel() == 0:
            return float("nan")
        value = per_row.median()
    value = float(value)
    return math.log10(value) if value > 0 else float("nan")


def _log_hist(score: torch.Tensor, mask: torch.Tensor, group: str) -> dict:
    """Histogram of log10(score) over the nonzero scores, split into pruned and kept weights.

    One bincount over bin index + HIST_BINS·pruned, instead of two masked copies and histograms.
    """
    flat = score.flatten()
    positive = flat > 0
    logs = torch.log10(flat.clamp_min(1e-30))
    if bool(positive.any()):
        lo, hi = (float(v) for v in torch.aminmax(logs[positive]))
    else:
        lo, hi = -1.0, 0.0
    if hi <= lo:
        hi = lo + 1e-6
    idx = ((logs - lo) * (HIST_BINS / (hi - lo))).long().clamp_(0, HIST_BINS - 1)
    idx += HIST_BINS * mask.flatten()
    idx.masked_fill_(~positive, 2 * HIST_BINS)  # exact zeros go to a separate bin
    counts = torch.bincount(idx, minlength=2 * HIST_BINS + 1).cpu().tolist()
    edges = torch.linspace(lo, hi, HIST_BINS + 1)
    return {
        "edges": [round(float(e), 5) for e in edges],
        "kept": counts[:HIST_BINS],
        "pruned": counts[HIST_BINS : 2 * HIST_BINS],
        "zero_weights": counts[2 * HIST_BINS],
        "cutoff": _group_cutoff(score, mask, group),
    }


def _density_map(mask: torch.Tensor) -> np.ndarray:
    """Fraction pruned per tile, at most DENSITY_TILES x DENSITY_TILES tiles."""
    rows, cols = min(DENSITY_TILES, mask.shape[0]), min(DENSITY_TILES, mask.shape[1])
    tiles = F.adaptive_avg_pool2d(mask.float()[None, None], (rows, cols))[0, 0]
    return tiles.cpu().numpy().astype(np.float32)


def _channel_summary(norms: torch.Tensor) -> dict:
    energy = norms.double() ** 2
    total = float(energy.sum()) or 1.0
    k = min(TOP_CHANNELS, norms.numel())
    top = torch.topk(norms, k)
    n_top1pct = max(1, math.ceil(0.01 * norms.numel()))
    median = float(norms.median())
    return {
        "top_index": [int(i) for i in top.indices],
        "top_norm": [float(v) for v in top.values],
        "top1pct_share": float(torch.topk(energy, n_top1pct).values.sum()) / total,
        "max_over_median": float(norms.max()) / median if median > 0 else float("inf"),
    }


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


def record_matrix(*, block: int, name: str, full_name: str, method: str, group: str,
                  original: torch.Tensor, mask: torch.Tensor, pruned: torch.Tensor,
                  stats: InputStats | None, masks_by_metric: dict[str, torch.Tensor],
                  scores_by_metric: dict[str, torch.Tensor], reference: str) -> MatrixRecord:
    """original/pruned: [out, in] fp32 weights before/after; mask: True = pruned by the run.

    masks_by_metric / scores_by_metric: each metric's own score and mask at the run's settings
    ('magnitude' always, 'wanda' when stats exist); `reference` names the metric to overlap with.
    """
    numel = mask.numel()
    row_sp = mask.float().mean(dim=1)
    row_hist = torch.histc(row_sp.cpu(), bins=ROW_HIST_BINS, min=0.0, max=1.0)
    norms = stats.channel_norms if stats is not None else None

    proxy_error = None
    if norms is not None:
        energy = norms.view(1, -1) ** 2
        proxy_error = float(((original - pruned) ** 2 * energy).sum() / ((original**2 * energy).sum()).clamp_min(1e-30))

    ref_mask = masks_by_metric[reference]
    # one pass: code = 2·method + reference -> counts of kept-by-both, only-reference, only-method, both
    _, only_r, only_m, both = torch.bincount((mask.flatten().long() << 1) | ref_mask.flatten().long(), minlength=4).tolist()
    union = both + only_m + only_r
    overlap = {"reference": reference, "group": group, "jaccard": both / union if union else 1.0,
               "both": both / numel, "only_method": only_m / numel, "only_reference": only_r / numel}

    crop, crop_rows, crop_cols = _mask_crop(mask, ref_mask, norms)
    arrays = {"density": _density_map(mask), "mask_crop": crop, "crop_rows": crop_rows, "crop_cols": crop_cols}
    if norms is not None:
        arrays["channel_norms"] = norms.float().cpu().numpy()

    return MatrixRecord(
        block=block, name=name, full_name=full_name, shape=tuple(mask.shape), method=method, group=group,
        sparsity=float(mask.sum()) / numel,
        row_sparsity={"min": float(row_sp.min()), "max": float(row_sp.max()), "mean": float(row_sp.mean()),
                      "std": float(row_sp.std()) if row_sp.numel() > 1 else 0.0,
                      "hist": [int(c) for c in row_hist]},
        proxy_error=proxy_error,
        hist={metric: _log_hist(scores_by_metric[metric], masks_by_metric[metric], group) for metric in scores_by_metric},
        overlap=overlap,
        channels=_channel_summary(norms) if norms is not None else None,
        arrays=arrays,
    )
