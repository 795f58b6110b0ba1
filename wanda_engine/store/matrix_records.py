"""What each pruned matrix leaves behind: small plain data, never the full masks.

Records serialise to JSON (scalars, histograms, summaries) plus one .npz of small arrays
(density maps, channel norms, a mask crop) and load back with numpy alone: figures and the
app never need torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import math
from typing import Any

import numpy as np

# Mask-crop codes (MatrixRecord arrays["mask_crop"]): how each weight fared under the run's
# method versus the reference method (magnitude, or Wanda for a magnitude run).
KEPT, PRUNED_BOTH, PRUNED_ONLY_METHOD, PRUNED_ONLY_REFERENCE = 0, 1, 2, 3
MASK_CODE_NAMES = {KEPT: "kept by both", PRUNED_BOTH: "pruned by both",
                   PRUNED_ONLY_METHOD: "pruned only by method", PRUNED_ONLY_REFERENCE: "pruned only by reference"}
# The metrics whose masks every record decomposes by input channel (ARRAY_KINDS "channel_error_<metric>").
ERROR_METRICS = ("magnitude", "wanda")
ARRAY_KINDS = ("density", "channel_norms", "row_sparsity", "mask_crop", "crop_rows", "crop_cols", "row_pruned",
               "channel_pruned",
               *(f"channel_error_{metric}" for metric in ERROR_METRICS))


# How a page or a figure says which mask a number belongs to: the metric and the group its mask was chosen in.
METRIC_NAMES = {"magnitude": "magnitude", "wanda": "Wanda"}
GROUP_WORDS = {"row": "per output row", "matrix": "per matrix", "nm": "per N:M group"}


def mask_label(metric: str, group: str) -> str:
    """'magnitude, per matrix', 'Wanda, per output row': one metric's mask, named with its comparison group."""
    return f"{METRIC_NAMES.get(metric, metric)}, {GROUP_WORDS.get(group, f'per {group} group')}"


def top1pct_count(channels: int) -> int:
    """How many input channels 'the top 1%' means for a matrix with `channels` inputs: at least one."""
    return max(1, math.ceil(0.01 * channels))


@dataclass(frozen=True)
class MaskOverlap:
    """The run's mask against the reference mask on the same weights; the shares are fractions of all weights."""

    reference: str  # the reference metric: 'magnitude', or 'wanda' for a magnitude run
    group: str  # the comparison group the run's mask was chosen in (the reference's: MatrixRecord.group_of)
    jaccard: float  # of the two pruned sets (1.0 when both are empty)
    both: float  # pruned by both
    only_method: float  # pruned by the run's method alone
    only_reference: float  # pruned by the reference alone

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MaskOverlap":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class MatrixRecord:
    """One pruned weight matrix, viewed as [out, in].

    hist: {"wanda": H, "magnitude": H} with H = {"edges": log10 bin edges, "pruned": counts,
          "kept": counts, "cutoff": log10 of the threshold (per matrix, or the median over rows)} — both
          metrics on the same weights, each split by its own mask (the run's mask for its method, the
          other metric's mask for the other). "wanda" is absent when no activation statistics exist.
    groups: the comparison group of each metric's mask: the run's group for its own method, the metric's own
          default group for the others (magnitude per matrix, Wanda per output row: the mask the Compare's run
          of that metric has); None in records written before, where every mask was chosen in `group`.
    overlap: the run's mask vs the reference mask (None without a reference mask).
    channels: activation-norm summary of the input channels: {"top_index", "top_norm",
          "top1pct_share", "max_over_median"}.
    by_metric: for each of ERROR_METRICS, its mask on these same weights (the run's own mask for the
          run's method, else the metric's own mask, in its group of `groups`): {"proxy_error": that
          mask's relative proxy error, "top1pct_pruned": the fraction of the weights feeding the
          top1pct_count channels (by norm) it prunes}. None without activation statistics, and in
          runs recorded before it existed. arrays["channel_error_<metric>"][j] is channel j's part of
          that proxy error, ‖ΔW_:j‖²·‖X_j‖² / Σ W²‖X‖² (float32 [in]; it sums to the proxy error).
    arrays: small numpy arrays, keyed by ARRAY_KINDS; stored in the run's arrays.npz. "row_pruned"[i] and
          "channel_pruned"[j] count the pruned weights of output row i and input channel j (uint16; absent in
          runs recorded before them).
    """

    block: int
    name: str  # inside the block, e.g. "self_attn.q_proj"
    full_name: str  # inside the model, e.g. "model.layers.0.self_attn.q_proj"
    shape: tuple[int, int]
    method: str
    group: str  # "row", "matrix" or "nm"
    sparsity: float
    row_sparsity: dict[str, float]  # min, max, mean, std over output rows
    proxy_error: float | None  # Σ ΔW²‖X_j‖² / Σ W²‖X_j‖²: Wanda's per-output objective, relative
    hist: dict[str, dict[str, Any]] = field(default_factory=dict)
    overlap: MaskOverlap | None = None
    channels: dict[str, Any] | None = None
    by_metric: dict[str, dict[str, float]] | None = None
    groups: dict[str, str] | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        return f"{self.block}/{self.name}"

    def group_of(self, metric: str) -> str:
        """The comparison group `metric`'s mask was chosen in (records written before `groups`: the run's)."""
        return (self.groups or {}).get(metric, self.group)

    def mask_label(self, metric: str) -> str:
        """'magnitude, per matrix': which of this record's masks a number belongs to."""
        return mask_label(metric, self.group_of(metric))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("arrays")
        d["shape"] = list(self.shape)
        if d["groups"] is None:  # a record read from before `groups` writes back as it was
            d.pop("groups")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> "MatrixRecord":
        known = set(cls.__dataclass_fields__) - {"arrays"}
        rec = cls(**{k: v for k, v in d.items() if k in known})
        rec.shape = tuple(rec.shape)
        rec.overlap = MaskOverlap.from_dict(rec.overlap) if rec.overlap else None
        rec.arrays = arrays or {}
        return rec


@dataclass
class BlockRecord:
    block: int
    sparsity: float
    block_error: float | None  # ‖y_pruned − y_dense‖² / ‖y_dense‖² over the calibration windows; None without them
    seconds: float
    target: float | None = None  # the sparsity asked of this block (OWL gives each block its own)
    outlier_ratio: float | None = None  # OWL's LOD: share of Wanda scores above M x their matrix's mean

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def arrays_to_npz_dict(records: list[MatrixRecord]) -> dict[str, np.ndarray]:
    return {f"{r.key}/{kind}": arr for r in records for kind, arr in r.arrays.items()}


def attach_arrays(records: list[MatrixRecord], npz: Any) -> None:
    """Fill each record's arrays from a loaded .npz mapping (keys '{block}/{name}/{kind}')."""
    by_key = {r.key: r for r in records}
    for k in npz.keys():
        rec_key, _, kind = k.rpartition("/")
        if rec_key in by_key:
            by_key[rec_key].arrays[kind] = np.asarray(npz[k])
