"""Perplexity over non-overlapping windows (the reference's protocol): of a model as it is (`perplexity`) or with a
run's evaluation settings on its compute device (`perplexity_on_device`), and whether a text holds the windows
asked for (`check_windows`)."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EvalConfig
from ..core.errors import DataError, NumericalError, PruneCancelled
from ..inputs.layers import check_context
from ..inputs.offload import model_on_device

WindowsCallback = Callable[[int, int], None]  # (windows done, windows in all)


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
               cancel: threading.Event | None = None, on_windows: WindowsCallback | None = None) -> Perplexity:
    """exp(mean next-token loss) over the first `windows` non-overlapping windows of `seqlen` tokens.

    tokens: [1, T]. Like the reference, each window is scored independently (no context carried over).
    `on_windows(done, total)` after each batch of windows: the progress a caller shows.
    """
    check_context(model, seqlen, "eval seqlen")
    n = check_windows(tokens, seqlen, windows, dataset)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batches = tokens.view(-1)[: n * seqlen].view(n, seqlen).split(batch_size)  # [n, seqlen]
    t0 = time.perf_counter()
    nll_sum, count = 0.0, 0
    if on_windows is not None:
        on_windows(0, n)  # how many there are, before the first batch takes its time
    with torch.inference_mode():
        for batch in batches:
            if cancel is not None and cancel.is_set():
                raise PruneCancelled(f"evaluation on {dataset} was cancelled")
            batch = batch.to(device)
            logits = model(input_ids=batch, use_cache=False).logits  # [b, seqlen, vocab]
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum")
            nll_sum += float(loss)
            count += batch[:, 1:].numel()
            if on_windows is not None:
                on_windows(count // (seqlen - 1), n)  # each window scores seqlen - 1 next tokens
            if not math.isfinite(nll_sum):
                raise NumericalError(f"the model's loss on {dataset} is {nll_sum} (NaN or Inf logits) after "
                                     f"{count} tokens; its weights or activations overflowed")
    return Perplexity(ppl=math.exp(nll_sum / count), dataset=dataset, seqlen=seqlen, windows=n,
                      tokens=n * seqlen, seconds=round(time.perf_counter() - t0, 3))


def perplexity_on_device(model: nn.Module, tokens: torch.Tensor, label: str, ev: EvalConfig, device: torch.device,
                         cancel: threading.Event | None = None, on_windows: WindowsCallback | None = None) -> Perplexity:
    """`perplexity` with a run's evaluation settings, the model on `device` for the duration (a model accelerate
    dispatched stays where it was placed): the dense and the pruned model are measured alike."""
    with model_on_device(model, device):
        return perplexity(model, tokens, ev.seqlen, label, ev.windows, ev.batch_size, device, cancel, on_windows)
