"""What runs a job, wherever it runs: load the dense model the request asks for, name the run, run it.

The app's worker process (`app.worker`) and the in-thread executor of the tests both go through
`run_job`, so the steps are written once. This module loads torch and the models: the Streamlit
server never imports it, only the worker process does.
"""
from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from app.worker import CANCELLED, COMPLETE, FAILED, Cancel, JobPrepared, Loader, Outcome
from wanda_engine.config import RunRequest
from wanda_engine.errors import EngineError, PruneCancelled
from wanda_engine.events import Event, StageStarted
from wanda_engine.layers import find_blocks, find_linears
from wanda_engine.models import load_model
from wanda_engine.runner import OOM_ERRORS, execute_run, out_of_memory, run_stem
from wanda_engine.runs import RunStore


def matrices_per_block(loaded: Any) -> int:
    """Prunable matrices in one decoder block (0 if unknown): the progress bar moves within a block."""
    try:
        return len(find_linears(find_blocks(loaded.model)[1][0]))
    except Exception:  # noqa: BLE001 - a stand-in model in tests, or an odd architecture
        return 0


def run_job(request: RunRequest, store: RunStore, load: Loader, execute: Callable[..., Any],
            on_event: Callable[[Event], None], cancel: Cancel) -> Outcome:
    """Load the dense model the request asks for, name the run, run it; every error becomes an Outcome."""
    try:
        on_event(StageStarted(0.0, "load-model", request.model))
        loaded = load(request)
        if cancel.is_set():
            raise PruneCancelled("cancelled while the model was loading")
        if request.name is None:
            request = replace(request, name=store.new_name(run_stem(loaded.label.split(" ")[0], request.prune)))
        on_event(JobPrepared(0.0, request.name, matrices_per_block(loaded)))
        run = execute(request, store=store, on_event=on_event, cancel=cancel, loaded=loaded)
        return Outcome(COMPLETE, run_name=run.name)
    except PruneCancelled as e:
        return Outcome(CANCELLED, error=str(e))
    except EngineError as e:
        return Outcome(FAILED, error=str(e))
    except OOM_ERRORS as e:  # loading the dense model ran out of memory: say so, keep serving
        return Outcome(FAILED, error=str(out_of_memory(e, "loading the model")))
    except Exception as e:  # noqa: BLE001 - a bug; keep the worker alive and say what happened
        return Outcome(FAILED, error=f"{type(e).__name__}: {e}")


class ModelCache:
    """The dense models jobs start from, keyed by everything that changes the loaded weights."""

    def __init__(self, max_entries: int = 2):
        self._models: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._max = max_entries

    def get(self, request: RunRequest) -> Any:
        spec = request.model_spec()
        key = repr(spec)  # an offload budget is a dict: the spec's repr is its hashable identity
        if key not in self._models:
            while len(self._models) >= self._max:
                self._models.popitem(last=False)
            self._models[key] = load_model(spec.source, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code,
                                           offload=spec.offload)
        self._models.move_to_end(key)
        return self._models[key]


class InProcess:
    """Runs each job on the calling thread (tests with stand-in loaders and runners)."""

    def __init__(self, loader: Loader, runner: Callable[..., Any] = execute_run):
        self._loader, self._runner = loader, runner

    def run(self, request: RunRequest, store: Any, on_event: Callable[[Event], None], cancel: Cancel) -> Outcome:
        return run_job(request, store, self._loader, self._runner, on_event, cancel)

    def close(self) -> None:
        pass


def serve(orders: Any, messages: Any, cancel: Any) -> None:
    """The child process: run each order, stream its events, then its outcome; None stops it."""
    models = ModelCache()
    while (order := orders.get()) is not None:
        request, store_root = order
        outcome = run_job(request, RunStore(store_root), models.get, execute_run, messages.put, cancel)
        messages.put(outcome)
