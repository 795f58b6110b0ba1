"""Per-layer calibration statistics and the scores that rank weights.

A forward hook feeds every calibration input of a layer to its InputStats; a scorer turns the
layer's weight [out, in], those statistics and the run's settings into one score per weight (low = prune
first). The table of methods (table.py) names each method's scorer.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class InputStats:
    """Running statistics of one layer's inputs, accumulated in fp32.

    sq_sum[j]  = Σ over calibration tokens of x_j²            (Wanda's ‖X_j‖₂²)
    sum[j]     = Σ over calibration tokens of x_j             (FLAP's mean, if asked)
    m2[j]      = Σ over calibration tokens of (x_j − x̄_j)²    (FLAP's fluctuation, with the sum)
    gram[i, j] = Σ over calibration tokens of x_i·x_j          (SparseGPT's Hessian, if asked)

    m2 is not Σx² − N·x̄²: that cancels catastrophically for a channel whose mean dwarfs its spread (a massive
    activation; a constant channel). Each batch's own squared deviations are combined with Chan et al.'s update.
    """

    def __init__(self, in_features: int, device: torch.device, with_gram: bool = False, with_sum: bool = False):
        # fp64 across batches: the sum then hardly depends on how the windows were split into
        # batches or ranks (each batch's own sum stays one fp32 reduction).
        self.sq_sum = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.sum = torch.zeros(in_features, dtype=torch.float64, device=device) if with_sum else None
        self.m2 = torch.zeros(in_features, dtype=torch.float64, device=device) if with_sum else None
        self.gram = torch.zeros(in_features, in_features, dtype=torch.float32, device=device) if with_gram else None
        self.nsamples = 0  # calibration windows seen
        self.ntokens = 0

    def add(self, x: torch.Tensor) -> None:
        """x: the layer input [batch, seq, in] (or [tokens, in])."""
        batch = x.shape[0] if x.dim() > 2 else 1
        x = x.reshape(-1, x.shape[-1]).float()  # [tokens, in]
        self.sq_sum += x.pow(2).sum(dim=0)  # fp32 per batch, added in fp64
        if self.sum is not None:
            self._add_moments(x.shape[0], x.mean(dim=0), (x - x.mean(dim=0)).pow(2).sum(dim=0))
        if self.gram is not None:
            self.gram.addmm_(x.t(), x)
        self.nsamples += batch
        self.ntokens += x.shape[0]  # after the moments: they read the tokens seen before this batch

    def _add_moments(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Fold in n tokens of mean `mean` and squared deviations `m2` (Chan, Golub & LeVeque 1979)."""
        before = self.ntokens
        delta = mean.double() - self.sum / max(before, 1)
        self.m2 += m2.double() + delta.pow(2) * (before * n / (before + n))
        self.sum += mean.double() * n

    def all_reduce(self) -> None:
        """Sum the statistics over the ranks of torch.distributed (data-parallel calibration)."""
        if self.sum is not None:  # the moments of every rank, folded in one by one (every rank alike)
            moments = torch.stack([torch.full_like(self.sum, float(self.ntokens)), self.sum, self.m2])
            gathered = [torch.empty_like(moments) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, moments)
            self.sum.zero_(), self.m2.zero_()
            local, self.ntokens = self.ntokens, 0
            for n, total, m2 in gathered:
                if int(n[0]):
                    self._add_moments(int(n[0]), total / n[0], m2)
                    self.ntokens += int(n[0])
            self.ntokens = local  # the counts below are summed over the ranks
        counts = torch.tensor([self.nsamples, self.ntokens], dtype=torch.float64, device=self.sq_sum.device)
        for t in (self.sq_sum, counts) + tuple(t for t in (self.gram,) if t is not None):
            dist.all_reduce(t)
        self.nsamples, self.ntokens = int(counts[0]), int(counts[1])

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.sq_sum).all())

    @property
    def scaler_row(self) -> torch.Tensor:
        """The reference's `scaler_row`: mean over calibration windows of ‖X_j‖² within a window."""
        return (self.sq_sum / max(self.nsamples, 1)).float()

    @property
    def channel_norms(self) -> torch.Tensor:
        """‖X_j‖₂ per input channel, in the reference's scale (sqrt of scaler_row)."""
        return self.scaler_row.sqrt()

    @property
    def mean(self) -> torch.Tensor:
        """X̄_j: the mean of input channel j over the calibration tokens (fp64)."""
        assert self.sum is not None, "the sum was not collected"
        return self.sum / max(self.ntokens, 1)

    @property
    def variance(self) -> torch.Tensor:
        """FLAP's fluctuation of input channel j: 1/(N−1) Σ_n (X_nj − X̄_j)² over the N calibration tokens (fp64)."""
        assert self.m2 is not None, "the moments were not collected"
        return self.m2 / max(self.ntokens - 1, 1)

    def hessian(self) -> torch.Tensor:
        """SparseGPT's H = 2/n · Σ x xᵀ over the n calibration windows (reference scaling)."""
        assert self.gram is not None, "gram was not collected"
        return self.gram * (2.0 / max(self.nsamples, 1))


def magnitude_score(weight: torch.Tensor, stats: InputStats | None, config: Any = None) -> torch.Tensor:
    """|W_ij|."""
    return weight.abs().float()


def wanda_score(weight: torch.Tensor, stats: InputStats | None, config: Any = None) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ (paper eq. 1)."""
    if stats is None:
        raise ValueError("wanda needs activation statistics")
    return weight.abs().float() * stats.channel_norms.to(weight.device).view(1, -1)


def ria_score(weight: torch.Tensor, stats: InputStats | None, power: float = 0.5) -> torch.Tensor:
    """RIA (Zhang et al. 2024, eq. 4): (|W_ij| / Σ_k |W_kj| + |W_ij| / Σ_k |W_ik|) · ‖X_j‖₂^a.

    The relative importance of a weight within its input column and its output row, times the
    activation norm to the power a (the paper's a = 0.5).
    """
    if stats is None:
        raise ValueError("ria needs activation statistics")
    magnitude = weight.abs().float()  # [out, in]
    column_sum = magnitude.sum(dim=0, keepdim=True).clamp_min(1e-30)  # Σ_k |W_kj|  [1, in]
    row_sum = magnitude.sum(dim=1, keepdim=True).clamp_min(1e-30)  # Σ_k |W_ik|  [out, 1]
    return (magnitude / column_sum + magnitude / row_sum) * stats.channel_norms.to(weight.device).pow(power).view(1, -1)


def ria_score_at(weight: torch.Tensor, stats: InputStats | None, config: Any) -> torch.Tensor:
    """RIA at the run's exponent a = config.ria_power (the table's scorer)."""
    return ria_score(weight, stats, config.ria_power)
