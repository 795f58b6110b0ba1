"""The training loop of a repair: seeded non-overlapping windows, AdamW, warmup + schedule, and the zeros kept.

Sparse full fine-tuning (the Wanda reference's dense_ft with the pruned weights' gradients zeroed) trains every
parameter of the decoder blocks; the pruned weights get a zero gradient from a hook, so AdamW's moments stay
zero for them, its update m / (sqrt(v) + eps) is zero, and its decoupled weight decay multiplies zero. The mask
is re-applied after each step as a guard, and what the guard had to change is counted (it must stay 0).
"""
from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import NumericalError, PruneCancelled
from ..inputs.layers import find_blocks, find_linears
from .config import RepairConfig
from .events import RepairStep

# One window per forward and backward, gradients accumulated over the batch: the same mean loss as the whole
# batch at once (equal-length windows), with half the activations alive at a time (host memory, issue 14).
MICRO_BATCH = 1


@dataclass
class Training:
    """What a training loop measured (each step's loss went to `on_step`)."""

    seconds: float = 0.0
    guard_changed: int = 0  # pruned weights the after-step guard found nonzero (sparse fine-tuning: must be 0)


def training_windows(ids: torch.Tensor, seqlen: int) -> torch.Tensor:
    """Every non-overlapping `seqlen`-token window of a 1-D token tensor, in text order: [n, seqlen]."""
    n = ids.numel() // seqlen
    return ids[: n * seqlen].view(n, seqlen)


def batches(windows: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Batches of windows forever: each pass over the windows in a new order drawn from `seed` (the global
    RNG untouched); a pass's last incomplete batch is left for the next order."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(windows)))
        rng.shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield windows[order[i: i + batch_size]]


def lr_factor(config: RepairConfig, step: int) -> float:
    """The learning rate's multiplier at 0-based `step`: linear warmup (warmup_steps, at most a tenth of the steps),
    then cosine or linear decay towards 0, or constant."""
    warmup = min(config.warmup_steps, config.steps // 10)  # a short run still spends most steps at its peak
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(config.steps - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * progress)) if config.schedule == "cosine" else 1.0 - progress


def pruned_masks(model: nn.Module) -> dict[nn.Parameter, torch.Tensor]:
    """Each decoder-block prunable weight's keep mask (weight != 0), keyed by the parameter."""
    _, blocks = find_blocks(model)
    return {layer.weight: layer.weight.detach() != 0 for block in blocks for layer in find_linears(block).values()}


def block_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What sparse and dense fine-tuning train: every parameter of the decoder blocks. Embeddings, the final
    norm and the head stay frozen: the head is the embedding in tied models and holds a third of a small
    model's weights, whose Adam moments would not fit the host-memory budget."""
    _, blocks = find_blocks(model)
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(blocks.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def _mask_gradients(masks: dict[nn.Parameter, torch.Tensor]) -> list:
    return [p.register_hook(lambda grad, keep=keep: grad * keep) for p, keep in masks.items()]


@torch.no_grad()
def _apply_guard(masks: dict[nn.Parameter, torch.Tensor]) -> int:
    changed = 0
    for p, keep in masks.items():
        changed += int(((p != 0) & ~keep).sum())
        p.mul_(keep)
    return changed


def train(model: nn.Module, params: list[nn.Parameter], windows: torch.Tensor, config: RepairConfig,
          device: torch.device, masks: dict[nn.Parameter, torch.Tensor] | None = None,
          on_step: Callable[[RepairStep], None] = lambda e: None, cancel: threading.Event | None = None,
          evaluate_at: Callable[[int], None] = lambda step: None, clock: Callable[[], float] = time.perf_counter,
          ) -> Training:
    """`config.steps` AdamW steps on `params` over batches of `windows`; `masks` keeps the pruned weights zero.

    `evaluate_at(step)` runs after every eval_every-th step but the last (its time is not training time);
    cancel is checked before each step and raises PruneCancelled."""
    out = Training()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=False)
    hooks = _mask_gradients(masks) if masks else []
    feed = batches(windows, config.batch_size, config.seed)
    try:
        for step in range(config.steps):
            if cancel is not None and cancel.is_set():
                raise PruneCancelled(f"the repair was cancelled after {step} of {config.steps} steps")
            t = time.perf_counter()
            lr = config.lr * lr_factor(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = _step(model, next(feed).to(device), optimizer)
            if masks:
                out.guard_changed += _apply_guard(masks)
            out.seconds += time.perf_counter() - t
            on_step(RepairStep(clock(), step + 1, config.steps, loss, lr, (step + 1) * config.batch_size * config.seqlen))
            if (step + 1) % config.eval_every == 0 and step + 1 < config.steps:  # the last: after any merge
                evaluate_at(step + 1)
    finally:
        for hook in hooks:
            hook.remove()
        del optimizer  # its moments (twice the trained weights) go before the final evaluation and merge
    out.seconds = round(out.seconds, 3)
    return out


def _step(model: nn.Module, batch: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
    model.train()
    total = 0.0
    parts = batch.split(MICRO_BATCH)
    for part in parts:
        loss = model(input_ids=part, labels=part, use_cache=False).loss
        if not torch.isfinite(loss):
            raise NumericalError(f"the training loss is {float(loss)} (NaN or Inf); try a smaller learning rate")
        (loss / len(parts)).backward()
        total += float(loss.detach()) / len(parts)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return total
