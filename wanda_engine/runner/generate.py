"""One prompt through the dense model and the pruned model of chosen runs, side by side: the teacher's most direct
demonstration of what 50% magnitude does to a sentence, and a researcher's sanity check of a smaller model.

Each run's pruned model is its saved model, or its dense model pruned anew from its record, its mask checked against
the run's mask_sha256 (`recreate.pruned_model`, as a repair and a zero-shot scoring start). Everything that can fail
on bad input (a run that is not complete, runs of different models, a record name taken) fails before any model is
loaded; the record (store/generation_record.py) is written once every model has generated.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import torch

from ..config import GenerateRequest, RunRequest
from ..core.errors import ConfigError, EngineError
from ..core.events import EventCallback, ignore_events
from ..evaluation.generate import WARMUP_TOKENS, continue_prompt
from ..evaluation.speed import device_name
from ..inputs.device import resolve_device
from ..inputs.layers import check_context
from ..inputs.models import LoadedModel, load_model
from ..inputs.offload import model_on_device
from ..store.generation_record import (GeneratedText, GenerationRecord, generation_path, new_generation_name,
                                       save_generation)
from ..store.run_store import Run, RunStore, load_run
from .lifecycle import StageClock, timestamp
from .recreate import pruned_model


def generation_runs(request: GenerateRequest) -> list[Run]:
    """The complete runs `request` names, all pruned from one model; one sentence otherwise. Loads no model."""
    runs = []
    for given in request.runs:
        run = load_run(given)
        if run.record is None or not run.complete:
            raise EngineError(f"run {Path(given).name!r} is not a complete run ({run.status}); only a finished run "
                              "can generate")
        runs.append(run)
    specs = {run.name: run.record.request.model_spec() for run in runs}
    first = next(iter(specs.values()), None)
    if any(first.mismatch(spec) for spec in specs.values()):
        named = ", ".join(f"{name} ({spec.source}, {spec.dtype})" for name, spec in specs.items())
        raise ConfigError(f"the runs were pruned from different models ({named}); generate compares runs of one model")
    return runs


def dense_request(request: GenerateRequest, runs: list[Run]) -> RunRequest:
    """The dense model the generation needs, as a run's request describes it (the app's cache is keyed by it)."""
    return runs[0].record.request if runs else RunRequest(model=request.model, eval=None)


def _stop_ids(tokenizer: Any) -> list[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    return [eos] if isinstance(eos, int) else list(eos or [])


def _generated(model: Any, ids: torch.Tensor, request: GenerateRequest, tokenizer: Any, who: tuple[str, str, str],
               verified: bool | None, device: torch.device) -> GeneratedText:
    with model_on_device(model, device):
        made = continue_prompt(model, ids.to(device), request.max_new_tokens, request.temperature, request.seed,
                               _stop_ids(tokenizer))
    text = tokenizer.decode(list(made.tokens), skip_special_tokens=True)
    return GeneratedText(*who, verified, sum(p.numel() for p in model.parameters()), made.tokens, text, made.stopped,
                         round(made.prefill_s, 6), round(made.decode_s, 6), os.getpid())


def generate_side_by_side(request: GenerateRequest, store: RunStore | None = None,
                          on_event: EventCallback = ignore_events, cancel: threading.Event | None = None,
                          loaded: LoadedModel | None = None) -> GenerationRecord:
    """Continue `request.prompt` with the dense model (if asked) and each run's pruned model, one after the other on
    `request.device`; write and return the record. `loaded`: the dense model already loaded (the app's cache), used
    as it is and copied for each run, never changed."""
    store = store or RunStore()
    runs = generation_runs(request)
    name = request.name or new_generation_name(store.root)
    if generation_path(store.root, name).exists():
        raise EngineError(f"a generation named {name!r} already exists in {store.root}")
    clock, spec = StageClock(on_event, cancel), dense_request(request, runs)
    with clock.stage("load", spec.model):
        dense = loaded if loaded is not None else load_model(spec.model, dtype=spec.dtype,
                                                             trust_remote_code=spec.trust_remote_code)
    tokenizer, device = dense.tokenizer, resolve_device(request.device)
    ids = tokenizer(request.prompt, return_tensors="pt").input_ids
    check_context(dense.model, ids.shape[1] + request.max_new_tokens, "the prompt and new tokens")
    outputs = []
    if request.dense:
        with clock.stage("generate", "the dense model"):
            outputs.append(_generated(dense.model, ids, request, tokenizer, ("dense", "dense", "the dense model"),
                                      None, device))
    for run in runs:
        with clock.stage("recreate", f"run {run.name}"):
            got = pruned_model(run.path, run.record, request.device, dense, cancel)
        with clock.stage("generate", f"run {run.name}"):
            how = f"its saved model {got.detail}" if got.saved else f"re-created: {got.detail}"
            outputs.append(_generated(got.model, ids, request, tokenizer, (run.name, run.record.label(), how),
                                      got.mask_verified, device))
        del got
    record = GenerationRecord(
        name=name, created=timestamp(), prompt=request.prompt, prompt_tokens=int(ids.shape[1]),
        max_new_tokens=request.max_new_tokens, temperature=float(request.temperature), seed=request.seed,
        model=dense.label, device=device_name(device), threads=torch.get_num_threads(),
        dtype=str(next(dense.model.parameters()).dtype).replace("torch.", ""),
        warmup=f"after an untimed warm-up of {WARMUP_TOKENS} tokens", outputs=tuple(outputs))
    save_generation(store.root, record)
    return record
