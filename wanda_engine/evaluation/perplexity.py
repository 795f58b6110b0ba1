"""Perplexity over non-overlapping windows (the reference's protocol) and the sparsity check."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, DataError, NumericalError, PruneCancelled
from ..inputs.layers import context_length


@dataclass(frozen=True)
class Perplexity:
    """A perplexity and what it was measured on."""

    ppl: float
    dataset: str  # label of the evaluated text, e.g. "austen:prideprejudice"
    seqlen: int
    windows: int
    tokens: int  # windows × seqlen tokens fed to the model
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def to_dict(self) -> dict:
        return asdict(self)


def check_windows(tokens: torch.Tensor, seqlen: int, windows: int | None, dataset: str) -> int:
    """How many windows will be evaluated; DataError if the text holds fewer than asked for."""
    available = tokens.numel() // seqlen
    if available < 1:
        raise DataError(f"{dataset} has {tokens.numel()} tokens, fewer than one window of {seqlen}")
    if windows is not None and windows > available:
        raise DataError(f"{dataset} has {available} windows of {seqlen} tokens, fewer than the {windows} asked for")
    return available if windows is None else windows


def perplexity(model: nn.Module, tokens: torch.Tensor, seqlen: int, dataset: str, windows: int | None = None,
               batch_size: int = 4, device: str | torch.device | None = None,
               cancel: threading.Event | None = None) -> Perplexity:
    """exp(mean next-token loss) over the first `windows` non-overlapping windows of `seqlen` tokens.

    tokens: [1, T]. Like the reference, each window is scored independently (no context carried over).
    """
    limit = context_length(model)
    if limit is not None and seqlen > limit:
        raise ConfigError(f"eval seqlen {seqlen} is longer than the model's context of {limit} tokens")
    n = check_windows(tokens, seqlen, windows, dataset)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batches = tokens.view(-1)[: n * seqlen].view(n, seqlen).split(batch_size)  # [n, seqlen]
    t0 = time.perf_counter()
    nll_sum, count = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            if cancel is not None and cancel.is_set():
                raise PruneCancelled(f"evaluation on {dataset} was cancelled")
            batch = batch.to(device)
            logits = model(input_ids=batch, use_cache=False).logits  # [b, seqlen, vocab]
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum")
            nll_sum += float(loss)
            count += batch[:, 1:].numel()
            if not math.isfinite(nll_sum):
                raise NumericalError(f"the model's loss on {dataset} is {nll_sum} (NaN or Inf logits) after "
                                     f"{count} tokens; its weights or activations overflowed")
    return Perplexity(ppl=math.exp(nll_sum / count), dataset=dataset, seqlen=seqlen, windows=n,
                      tokens=n * seqlen, seconds=round(time.perf_counter() - t0, 3))
