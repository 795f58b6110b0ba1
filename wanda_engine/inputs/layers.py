"""What to prune in a causal LM, found generically: its decoder blocks and their linear layers.

Decoder blocks are the ModuleList of repeated identical blocks holding most of the parameters;
prunable layers are every nn.Linear and GPT-2-style Conv1D inside a block, weights viewed as [out, in].
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError, ModelLoadError

try:  # GPT-2's transposed linear: weight is [in, out]
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = ()  # type: ignore[assignment]

PRUNABLE_TYPES = (nn.Linear,) + ((Conv1D,) if Conv1D else ())


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks: the ModuleList of same-typed children that holds the most parameters."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if not any(isinstance(m, PRUNABLE_TYPES) for m in module[0].modules()):
            continue
        n_params = sum(p.numel() for p in module.parameters())
        if best is None or n_params > best[0]:
            best = (n_params, name, module)
    if best is None:
        raise ModelLoadError(
            f"{type(model).__name__} has no decoder blocks: no list of repeated layers holding linear weights was found"
        )
    return best[1], best[2]


def find_linears(block: nn.Module) -> dict[str, nn.Module]:
    """Every prunable layer of a block by its name inside the block, in definition order."""
    return {name: m for name, m in block.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def weight_of(layer: nn.Module) -> torch.Tensor:
    """The layer's weight viewed as [out, in] (a view: writing to it writes the layer)."""
    if Conv1D and isinstance(layer, Conv1D):
        return layer.weight.data.t()
    return layer.weight.data


def context_length(model: nn.Module) -> int | None:
    """The longest sequence the model's config admits, or None if it names no limit."""
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context(model: nn.Module, seqlen: int, what: str) -> None:
    """ConfigError if windows of `seqlen` tokens (`what`: 'seqlen', 'eval seqlen', 'repair seqlen') are longer than
    the model's context."""
    limit = context_length(model)
    if limit is not None and seqlen > limit:
        raise ConfigError(f"{what} {seqlen} is longer than the model's context of {limit} tokens")
