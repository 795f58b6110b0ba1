"""The speed a pruned model buys, measured beside the dense model in one process: prefill tokens/s (one window of the
evaluation length, batch 1, no cache) and decode tokens/s (greedy new tokens, batch 1, with the KV cache), the two
models taking turns (ABBA: the order flips every round, so a drift of the machine falls on both alike) and each
number the median over the rounds; parameters, weight bytes, the KV cache's bytes and, on CUDA, peak memory.

The ideal speed-up is counted, not measured: matmul FLOPs per token, 2 per stored weight of every linear in the
decoder blocks and of the LM head (a weight stored as a zero still costs a dense kernel its multiply, so
unstructured and N:M runs have an ideal of 1.0 on dense kernels). Not a timed test: a record the run keeps.
"""
from __future__ import annotations

import inspect
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import SpeedConfig
from ..inputs.layers import find_blocks, find_linears, weight_of
from ..store.shrink_record import SpeedRecord, SpeedSample

PROMPT_TOKENS = 16  # the decode's prompt: the first tokens of the prefill window


def matmul_flops_per_token(model: nn.Module) -> int:
    """2 × the weights of every linear in the decoder blocks and of the LM head: one multiply-add each per token."""
    _, blocks = find_blocks(model)
    weights = sum(weight_of(layer).numel() for block in blocks for layer in find_linears(block).values())
    head = model.get_output_embeddings()
    return 2 * (weights + (head.weight.numel() if head is not None else 0))


def device_name(device: torch.device) -> str:
    """'cpu (x86_64)', 'cuda:0 (NVIDIA H100 80GB HBM3)': what the numbers were measured on."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.machine() or platform.processor() or 'unknown'})"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a clock read after it has seen it done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, work: Callable[[], Any]) -> float:
    sync(device)
    started = time.perf_counter()
    work()
    sync(device)
    return time.perf_counter() - started


def _cache_bytes(cache: Any) -> int:
    return sum(t.numel() * t.element_size() for layer in getattr(cache, "layers", ())
               for t in vars(layer).values() if isinstance(t, torch.Tensor))


def cache_argument(model: nn.Module) -> str:
    """The name the model's forward gives its KV cache: 'cache' or 'past_key_values'."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(out: Any) -> Any:
    """The KV cache a forward pass returned."""
    return getattr(out, "cache", None) or out.past_key_values


class _Decoder:
    """Greedy decoding with the KV cache, the cache argument named as the model's forward names it."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.cache_arg = cache_argument(model)
        self.cache_bytes = 0

    def __call__(self, prompt: torch.Tensor, new_tokens: int) -> Callable[[], None]:
        """The timed part: `new_tokens` decode steps after the prompt's prefill (done here, untimed)."""
        out = self.model(prompt, use_cache=True)
        state = {"cache": cache_of(out), "logits": out.logits}

        def decode() -> None:
            for _ in range(new_tokens):
                token = state["logits"][:, -1:].argmax(dim=-1)
                step = self.model(token, use_cache=True, **{self.cache_arg: state["cache"]})
                state["logits"] = step.logits
            self.cache_bytes = _cache_bytes(state["cache"])
        return decode


def _sample(model: nn.Module, prefill_s: list[float], decode_s: list[float], tokens: int, new_tokens: int,
            cache_bytes: int, peak: int | None) -> SpeedSample:
    params = list(model.parameters())
    return SpeedSample(
        prefill_tokens_per_s=round(tokens / statistics.median(prefill_s), 2),
        decode_tokens_per_s=round(new_tokens / statistics.median(decode_s), 2),
        prefill_s=tuple(round(t, 6) for t in prefill_s), decode_s=tuple(round(t, 6) for t in decode_s),
        params=sum(p.numel() for p in params), weight_bytes=sum(p.numel() * p.element_size() for p in params),
        flops_per_token=matmul_flops_per_token(model), kv_cache_bytes=cache_bytes, peak_device_bytes=peak,
        pid=os.getpid())


@torch.inference_mode()
def measure_speed(dense: nn.Module, pruned: nn.Module, window: torch.Tensor, config: SpeedConfig,
                  device: torch.device) -> SpeedRecord:
    """The dense and the pruned model's speed on `device`: prefill of `window` [1, tokens], decode of
    config.decode_tokens greedy tokens after its first PROMPT_TOKENS; config.repeats interleaved rounds after one
    warm-up each. Both models must already be on `device`."""
    window = window[:1].to(device)
    prompt = window[:, :PROMPT_TOKENS]
    models = {"dense": dense, "pruned": pruned}
    decoders = {name: _Decoder(m) for name, m in models.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"prefill": [], "decode": []} for name in models}
    peaks: dict[str, int | None] = dict.fromkeys(models)
    for name, model in models.items():  # warm-up: allocator, kernels, caches
        model(window, use_cache=False)
        decoders[name](prompt, 2)()
    for round_ in range(config.repeats):
        for name in (("dense", "pruned") if round_ % 2 == 0 else ("pruned", "dense")):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            # prefill without a cache, whatever the model's config says (the engine's loader turns it off)
            times[name]["prefill"].append(_timed(device, lambda: models[name](window, use_cache=False)))
            times[name]["decode"].append(_timed(device, decoders[name](prompt, config.decode_tokens)))
            if device.type == "cuda":
                peaks[name] = max(peaks[name] or 0, torch.cuda.max_memory_allocated(device))
    samples = {name: _sample(models[name], times[name]["prefill"], times[name]["decode"], window.shape[1],
                             config.decode_tokens, decoders[name].cache_bytes, peaks[name]) for name in models}
    return SpeedRecord(device=device_name(device), threads=torch.get_num_threads(),
                       dtype=str(next(pruned.parameters()).dtype).replace("torch.", ""), prefill_batch=1,
                       prefill_tokens=int(window.shape[1]), prompt_tokens=int(prompt.shape[1]),
                       decode_tokens=config.decode_tokens, repeats=config.repeats,
                       order="interleaved: dense, pruned; then pruned, dense; alternating each round",
                       dense=samples["dense"], pruned=samples["pruned"])
