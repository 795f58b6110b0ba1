"""Where the app's jobs run: in one child process (the app) or on the job runner's own thread (tests).

Why a process: the Streamlit server reruns the progress fragments of every open page each second and
collects garbage after every script run. In the server's process those reruns held the GIL so often
that a pruning thread got about 4% of a core, and the same Compare took several times as long as from
the CLI (issue 11). The child process has its own interpreter: it loads the models, runs
`execute_run` and sends back the same typed events the CLI draws; the server only relays them.

Both executors run a job through `run_job`, so the steps are written once. No Streamlit here.
"""
from __future__ import annotations

import collections
import multiprocessing
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wanda_engine.config import RunRequest
from wanda_engine.errors import EngineError, PruneCancelled
from wanda_engine.events import Event, StageStarted
from wanda_engine.layers import find_blocks, find_linears
from wanda_engine.models import load_model
from wanda_engine.runner import OOM_ERRORS, execute_run, out_of_memory, run_stem
from wanda_engine.runs import RunStore

COMPLETE, FAILED, CANCELLED = "complete", "failed", "cancelled"
Loader = Callable[[RunRequest], Any]  # request -> LoadedModel matching its model, dtype, offload, remote code
Cancel = Any  # threading.Event or multiprocessing.Event: only is_set() is used


@dataclass(frozen=True)
class JobPrepared(Event):
    """The dense model is loaded and the run named: what the progress views need before pruning starts."""

    run_name: str
    matrices_per_block: int


@dataclass(frozen=True)
class Outcome:
    status: str  # COMPLETE, FAILED or CANCELLED
    run_name: str | None = None
    error: str | None = None


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


def _serve(orders: Any, messages: Any, cancel: Any) -> None:
    """The child process: run each order, stream its events, then its outcome; None stops it."""
    models = ModelCache()
    while (order := orders.get()) is not None:
        request, store_root = order
        outcome = run_job(request, RunStore(store_root), models.get, execute_run, messages.put, cancel)
        messages.put(outcome)


class WorkerProcess:
    """One child process that keeps its models loaded between jobs; restarted if it dies."""

    POLL_S = 0.2  # how often a waiting relay checks for a cancel request or a dead child

    def __init__(self) -> None:
        # spawn, not fork: the server has threads (a forked child could inherit a held lock)
        self._ctx = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the child now (its imports take seconds) so that the first job finds it ready."""
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._orders, self._messages, self._cancel = self._ctx.Queue(), self._ctx.Queue(), self._ctx.Event()
                self._process = self._ctx.Process(target=_serve, args=(self._orders, self._messages, self._cancel),
                                                  name="wanda-worker", daemon=True)
                self._process.start()

    def run(self, request: RunRequest, store: RunStore, on_event: Callable[[Event], None], cancel: Cancel) -> Outcome:
        self.start()
        self._cancel.clear()
        self._orders.put((request, str(Path(store.root))))
        while True:
            try:
                message = self._messages.get(timeout=self.POLL_S)
            except queue.Empty:
                if cancel.is_set():
                    self._cancel.set()
                if not self._process.is_alive():
                    return Outcome(FAILED, error=f"the worker process stopped unexpectedly (exit code "
                                                 f"{self._process.exitcode}; out of memory?); the next run starts a new one")
                continue
            if isinstance(message, Outcome):
                return message
            on_event(message)
            if cancel.is_set():
                self._cancel.set()

    def close(self) -> None:
        with self._lock:
            if self._process is not None and self._process.is_alive():
                self._cancel.set()
                self._orders.put(None)
                self._process.join(timeout=5)
                if self._process.is_alive():
                    self._process.terminate()
            self._process = None
