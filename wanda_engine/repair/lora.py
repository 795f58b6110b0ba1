"""LoRA adapters on the decoder blocks' linears (peft), and the masked merge that keeps every pruned zero.

peft's own merge adds the low-rank update B·A·scaling to the whole weight: the update is dense, so every
pruned weight comes back (the sparsity users report losing after a merge). The masked merge adds it only
where the pruned weight is nonzero, W + (B A · scaling) ⊙ (W ≠ 0), then removes the adapters unmerged.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from ..core.errors import ConfigError
from ..inputs.layers import Conv1D, find_blocks, find_linears
from .config import RepairConfig

ADAPTER = "default"  # peft's name for the one adapter


def target_names(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """The full module names to adapt: every decoder linear, or those of `targets` (names inside a block)."""
    blocks_path, blocks = find_blocks(model)
    inside = list(find_linears(blocks[0]))
    unknown = [t for t in targets if t not in inside]
    if unknown:
        raise ConfigError(f"repair lora_targets {unknown[0]!r} is not a linear of the decoder blocks "
                          f"(they are: {', '.join(inside)})")
    chosen = targets or tuple(inside)
    return [f"{blocks_path}.{i}.{name}" for i in range(len(blocks)) for name in chosen]


def add_adapters(model: nn.Module, config: RepairConfig) -> Any:
    """`model` with LoRA adapters on its decoder linears (a peft model; only the adapters train).

    B starts at zero (peft's default, as in Hu et al. 2021), so the adapted model starts as the pruned one."""
    names = target_names(model, config.lora_targets)
    wanted = set(names)
    transposed = any(isinstance(m, Conv1D) for n, m in model.named_modules() if n in wanted)  # GPT-2's [in, out]
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=names, lora_dropout=0.0,
                      bias="none", fan_in_fan_out=transposed)
    with warnings.catch_warnings():  # peft 0.21 asks transformers' deprecated is_gradient_checkpointing: not the user's to fix
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, lora)


def adapted_layers(peft_model: Any) -> list[tuple[str, LoraLayer]]:
    return [(name, m) for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)]


@torch.no_grad()
def masked_merge(peft_model: Any) -> nn.Module:
    """The base model with each adapter merged as W + ΔW ⊙ (W ≠ 0), the adapters removed: exactly the zeros of W."""
    for _, layer in adapted_layers(peft_model):
        weight = layer.get_base_layer().weight
        delta = layer.get_delta_weight(ADAPTER).to(weight.dtype)  # in the weight's own layout (Conv1D too)
        weight.add_(delta * (weight != 0))
    return peft_model.unload()


@contextmanager
def merged_for_evaluation(peft_model: Any, masked: bool = True) -> Iterator[Any]:
    """The model as the merge will deliver it, for an evaluation mid-training: each weight temporarily
    W + ΔW (⊙ (W ≠ 0) when `masked`), the adapters disabled; the weights restored bit for bit afterwards."""
    saved = []
    with torch.no_grad():
        for _, layer in adapted_layers(peft_model):
            weight = layer.get_base_layer().weight
            saved.append((weight, weight.detach().clone()))
            delta = layer.get_delta_weight(ADAPTER).to(weight.dtype)
            weight.add_(delta * (weight != 0) if masked else delta)
    try:
        with peft_model.disable_adapter():
            yield peft_model
    finally:
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


@torch.no_grad()
def dense_merge(peft_model: Any) -> nn.Module:
    """peft's plain merge (W + ΔW everywhere), for the dense reference: its weights have no zeros to keep."""
    return peft_model.merge_and_unload()
