"""SparseGPT (Frantar & Alistarh 2023) as a solver: choose a mask and update the remaining weights.

Optimal Brain Surgeon over columns, processed in blocks of `blocksize`, with the inverse Hessian's
upper Cholesky factor. Matches the reference implementation's choices: damping percdamp·mean(diag H),
dead inputs (H_jj = 0) zeroed, mask chosen per column block by w²/[H⁻¹]_jj² (unstructured:
lowest fraction within the block; N:M: lowest N in each group of M columns).

Given a mask instead (the Wanda paper's ablation, reference lib/ablate.py: a selector's mask, then this
update of the kept weights), the solver prunes exactly that mask and changes nothing else in its arithmetic,
except one thing: the kept weights of dead inputs stay as they are instead of being zeroed (the mask must not
change; a dead input is uncoupled in H⁻¹, so its weights neither receive nor give an update).
"""
from __future__ import annotations

from typing import Any

import torch

from .scoring import InputStats


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float,
                    nm: tuple[int, int] | None = None, blocksize: int = 128, percdamp: float = 0.01,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """weight: [out, in]; hessian: [in, in] fp32; mask: bool [out, in], True = prune (then `sparsity` and `nm`
    are not used). Returns the pruned, updated weight (fp32, [out, in])."""
    W = weight.detach().float().clone(memory_format=torch.contiguous_format)  # [out, in]
    H = hessian.detach().clone().float()  # [in, in]
    out_features, in_features = W.shape

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    if mask is None:
        W[:, dead] = 0

    damp = percdamp * torch.mean(torch.diag(H))
    H.diagonal().add_(damp)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)  # [in, in]

    for start in range(0, in_features, blocksize):
        end = min(start + blocksize, in_features)
        W_blk = W[:, start:end].clone(memory_format=torch.contiguous_format)  # [out, b]
        Hinv_blk = Hinv[start:end, start:end]  # [b, b]
        err_blk = torch.zeros_like(W_blk)
        d = torch.diag(Hinv_blk)  # [b]

        if mask is not None:
            mask_blk = mask[:, start:end]
        elif nm is None:
            saliency = W_blk**2 / d.view(1, -1) ** 2
            k = int(saliency.numel() * sparsity)
            mask_blk = torch.zeros_like(W_blk, dtype=torch.bool)
            if k:
                mask_blk.view(-1)[torch.topk(saliency.flatten(), k, largest=False).indices] = True
        else:
            mask_blk = torch.zeros_like(W_blk, dtype=torch.bool)

        for i in range(end - start):
            w = W_blk[:, i]  # [out]
            if mask is None and nm is not None and i % nm[1] == 0:
                cols = slice(i, i + nm[1])
                sal = W_blk[:, cols] ** 2 / d[cols].view(1, -1) ** 2
                idx = torch.topk(sal, nm[0], dim=1, largest=False).indices
                mask_blk[:, cols].scatter_(1, idx, True)
            q = w.masked_fill(mask_blk[:, i], 0)
            err = (w - q) / d[i]  # [out]
            # OBS update of the not-yet-processed columns of this block: a fused rank-1 update
            W_blk[:, i:].addr_(err, Hinv_blk[i, i:], alpha=-1)
            W_blk[:, i] = q
            err_blk[:, i] = err

        W[:, start:end] = W_blk
        W[:, end:] -= err_blk @ Hinv[start:end, end:]  # lazy batch update of later columns

    return W


def sparsegpt_solve(weight: torch.Tensor, stats: InputStats, sparsity: float, config: Any) -> torch.Tensor:
    """The table's solver: SparseGPT's mask and update at the run's pattern, column block and damping."""
    return sparsegpt_prune(weight, stats.hessian(), sparsity, config.nm, config.blocksize, config.percdamp)
