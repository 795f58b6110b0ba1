"""Continuing a prompt with a model, timed: the prompt's forward pass (which gives the first new token), then one
forward pass per later token with the KV cache, greedy (argmax) or sampled from a generator seeded for this one
generation, stopping at `max_new_tokens` or an end-of-sequence token. An untimed warm-up of WARMUP_TOKENS runs first
(allocator, kernels), so the seconds are the generation's own. The same ids and seed give the same tokens.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .speed import cache_argument, cache_of, sync

WARMUP_TOKENS = 2


@dataclass(frozen=True)
class Continuation:
    """What one generation made: the new tokens' ids, why it stopped, and its seconds."""

    tokens: tuple[int, ...]
    stopped: str  # 'max_new_tokens' or 'eos'
    prefill_s: float
    decode_s: float


def _next_token(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """[1, 1]: the argmax at temperature 0, else a draw from softmax(logits / temperature)."""
    if temperature == 0:
        return logits[:, -1:].argmax(dim=-1)
    probs = torch.softmax(logits[:, -1].double() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.inference_mode()
def _continue(model: nn.Module, ids: torch.Tensor, new_tokens: int, temperature: float, seed: int,
              stop: frozenset[int]) -> Continuation:
    device = ids.device
    generator = torch.Generator(device=device).manual_seed(seed) if temperature else None
    cache_arg = cache_argument(model)
    sync(device)
    started = time.perf_counter()
    out = model(ids, use_cache=True)
    token = _next_token(out.logits, temperature, generator)
    sync(device)
    prefill = time.perf_counter() - started
    tokens, cache = [int(token)], cache_of(out)
    started = time.perf_counter()
    while len(tokens) < new_tokens and tokens[-1] not in stop:
        out = model(token, use_cache=True, **{cache_arg: cache})
        cache = cache_of(out)
        token = _next_token(out.logits, temperature, generator)
        tokens.append(int(token))
    sync(device)
    return Continuation(tuple(tokens), "eos" if tokens[-1] in stop else "max_new_tokens", prefill,
                        time.perf_counter() - started)


def continue_prompt(model: nn.Module, ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                    seed: int = 0, stop: Iterable[int] = ()) -> Continuation:
    """`ids` [1, T] (on the model's device) continued by up to `max_new_tokens` tokens, stopping after any of `stop`
    (the tokenizer's end-of-sequence ids); greedy at temperature 0. Timed after an untimed warm-up."""
    stop = frozenset(int(t) for t in stop)
    _continue(model, ids, min(WARMUP_TOKENS, max_new_tokens), temperature, seed, frozenset())
    return _continue(model, ids, max_new_tokens, temperature, seed, stop)
