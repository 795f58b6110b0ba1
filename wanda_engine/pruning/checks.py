"""Checks over a model's weights: finiteness, sparsity of the decoder blocks, a checksum of the masks and one of
every parameter; and the proof that a model passed the pruning's checks (`CheckedForPruning`)."""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import PruneConfig
from ..core.errors import ModelLoadError, NumericalError
from ..inputs.layers import find_blocks, find_linears, weight_of
from ..inputs.offload import block_on_device, has_offloaded_weights


def _readable(block: nn.Module) -> Any:
    """A context in which the block's weights can be read: accelerate-offloaded ones are loaded to the CPU."""
    return block_on_device(block, torch.device("cpu")) if has_offloaded_weights(block) else contextlib.nullcontext()


def sparsity_of_blocks(model: nn.Module) -> tuple[float, list[dict[str, Any]]]:
    """Fraction of exact zeros over the decoder blocks' prunable weights, and per layer."""
    blocks_path, blocks = find_blocks(model)
    zeros = total = 0
    layers = []
    for i, block in enumerate(blocks):
        with _readable(block):
            for name, layer in find_linears(block).items():
                w = weight_of(layer)
                z = int((w == 0).sum())
                zeros, total = zeros + z, total + w.numel()
                layers.append({"name": f"{blocks_path}.{i}.{name}", "block": i, "matrix": name, "sparsity": z / w.numel()})
    return (zeros / total if total else 0.0), layers


def mask_checksum(model: nn.Module) -> str:
    """sha256 over where the decoder blocks' prunable weights are exactly zero, matrix by matrix in block order.

    Two models with this checksum equal have the same masks (names, shapes and zero positions), whatever
    their kept values: a re-created run, a repaired model or a bundle's reproduction compare it."""
    blocks_path, blocks = find_blocks(model)
    digest = hashlib.sha256()
    for i, block in enumerate(blocks):
        with _readable(block):
            for name, layer in find_linears(block).items():
                zeros = (weight_of(layer) == 0).cpu().numpy()
                digest.update(f"{blocks_path}.{i}.{name}:{zeros.shape}".encode())
                digest.update(np.packbits(zeros).tobytes())
    return digest.hexdigest()


def nonfinite_weights(model: nn.Module, block_label: str | None = None) -> list[str]:
    """Every parameter holding NaN or Inf, named per block and layer ('block 1 self_attn.q_proj: 3 NaN').

    `block_label` names `model` when it is a single block ('block 3'). Weights that accelerate
    offloaded ('meta' here) are skipped: the pipeline checks them as it loads each block."""
    try:
        blocks_path, _ = find_blocks(model)
    except ModelLoadError:
        blocks_path = None
    found = []
    for name, p in model.named_parameters():
        if p.numel() == 0 or not p.dtype.is_floating_point or p.device.type == "meta" or bool(torch.isfinite(p).all()):
            continue
        nan, inf = int(torch.isnan(p).sum()), int(torch.isinf(p).sum())
        owner, _, kind = name.rpartition(".")
        where = owner or name
        if blocks_path and owner.startswith(blocks_path + "."):
            index, _, layer = owner[len(blocks_path) + 1:].partition(".")
            where = f"block {index} {layer}" if layer else f"block {index}"
        elif block_label:
            where = f"{block_label} {where}"
        counts = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)
        found.append(f"{where}: {kind} contains {counts} (of {p.numel():,} values)")
    return found


def check_finite_weights(model: nn.Module, block_label: str | None = None) -> None:
    """NumericalError naming the block and layer if any weight is NaN or Inf: it would poison every
    score, mask and perplexity computed from it."""
    bad = nonfinite_weights(model, block_label)
    if bad:
        more = f"; and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else ""
        raise NumericalError(f"the model's weights are not finite: {bad[0]}{more}")


@dataclass(frozen=True)
class CheckedForPruning:
    """Proof, made by `pipeline.check_for_pruning` only, that a model passed `check_prunable` with `config` and
    `check_finite_weights`: `prune_model` accepts it instead of checking again.

    The runner checks in `prepare`, before its run directory exists, and may then prune a deep copy of the model
    it checked: the proof holds for the model checked or an unchanged copy, recognised by its `layout` (every
    prunable matrix's name and shape). Given no proof, or one that does not fit, `prune_model` checks itself:
    a direct caller gets the same ConfigError or NumericalError before any weight changes."""

    config: PruneConfig
    layout: tuple[tuple[str, tuple[int, ...]], ...]

    def fits(self, model: nn.Module, config: PruneConfig) -> bool:
        return config == self.config and model_layout(model) == self.layout


def model_layout(model: nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Every prunable matrix's full name and [out, in] shape, block by block."""
    blocks_path, blocks = find_blocks(model)
    return tuple((f"{blocks_path}.{i}.{name}", tuple(weight_of(layer).shape))
                 for i, block in enumerate(blocks) for name, layer in find_linears(block).items())

