"""SparseGPT as a solver: exact budgets, and a lower reconstruction error than Wanda's mask alone."""
from __future__ import annotations

import pytest
import torch

from wanda_engine.methods.scoring import InputStats, wanda_score
from wanda_engine.methods.selection import select
from wanda_engine.methods.sparsegpt import sparsegpt_prune


def correlated_inputs(tokens: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(width, width, generator=g) / width**0.5
    x = torch.randn(tokens, width, generator=g) @ mixing
    x[:, 3] *= 20  # an outlier feature
    return x


def reconstruction_error(w: torch.Tensor, w_pruned: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ w.t() - x @ w_pruned.t()) ** 2).sum() / ((x @ w.t()) ** 2).sum())


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_beats_wanda_on_reconstruction(nm):
    width, out = 96, 48
    x = correlated_inputs(512, width, seed=0)
    w = torch.randn(out, width, generator=torch.Generator().manual_seed(1))
    stats = InputStats(width, torch.device("cpu"), with_gram=True)
    stats.add(x[None])
    w_sgpt = sparsegpt_prune(w, stats.hessian(), 0.5, nm, blocksize=32)
    mask_wanda = select(wanda_score(w, stats), 0.5, "nm" if nm else "row", nm).mask
    w_wanda = w.masked_fill(mask_wanda, 0)
    assert (w_sgpt == 0).float().mean().item() == pytest.approx(0.5, abs=1e-6)
    if nm:
        assert ((w_sgpt == 0).view(out, -1, 4).sum(dim=2) >= 2).all()
    err_sgpt, err_wanda = reconstruction_error(w, w_sgpt, x), reconstruction_error(w, w_wanda, x)
    assert err_sgpt < 0.9 * err_wanda, (err_sgpt, err_wanda)


def test_sparsegpt_leaves_the_input_untouched_and_handles_dead_inputs():
    x = correlated_inputs(256, 32, seed=2)
    x[:, 7] = 0  # a dead input channel: H_77 = 0
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(3))
    w_before = w.clone()
    stats = InputStats(32, torch.device("cpu"), with_gram=True)
    stats.add(x)
    pruned = sparsegpt_prune(w, stats.hessian(), 0.25, None, blocksize=8)
    assert torch.equal(w, w_before)
    assert (pruned[:, 7] == 0).all()
    assert torch.isfinite(pruned).all()
