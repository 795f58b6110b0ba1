"""What runs a job, wherever it runs: load the dense model the request asks for, name the run, run it;
or, for a repair, hand the repair the dense model already at hand and let it train.

The app's worker process (`app.worker`) and the in-thread executor of the tests both go through
`run_job` and `run_repair_job`, so the steps are written once. This module loads torch and the
models: the Streamlit server never imports it, only the worker process does.
"""
from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from app.messages import ENDED, Cancel, JobPrepared, JobRequest, JobStatus, Loader, Outcome
from wanda_engine.config import GenerateRequest, RunRequest, ScoreRequest
from wanda_engine.core.errors import EngineError, PruneCancelled
from wanda_engine.core.events import Event, StageStarted
from wanda_engine.inputs.layers import find_blocks, find_linears
from wanda_engine.inputs.models import load_model
from wanda_engine.repair.config import RepairRequest
from wanda_engine.repair.run import execute_repair
from wanda_engine.runner.execute import execute_run, run_stem
from wanda_engine.runner.generate import dense_request, generate_side_by_side, generation_runs
from wanda_engine.runner.lifecycle import OOM_ERRORS, out_of_memory
from wanda_engine.runner.score import score_run, scorable_run
from wanda_engine.store.run_store import RunStore, load_run

DenseLookup = Callable[[RunRequest], Any]  # a run's request -> the dense model it was pruned from, or None


def matrices_per_block(loaded: Any) -> int:
    """Prunable matrices in one decoder block (0 if unknown): the progress bar moves within a block."""
    try:
        return len(find_linears(find_blocks(loaded.model)[1][0]))
    except Exception:  # noqa: BLE001 - a stand-in model in tests, or an odd architecture
        return 0


def _stopped(e: Exception, doing: str) -> Outcome:
    """The Outcome of a job stopped by `e`: cancelled, one sentence, out of memory, or a bug named."""
    if isinstance(e, PruneCancelled):
        return Outcome(JobStatus.CANCELLED, error=str(e))
    if isinstance(e, EngineError):
        return Outcome(JobStatus.FAILED, error=str(e))
    if isinstance(e, OOM_ERRORS):  # loading the dense model ran out of memory: say so, keep serving
        return Outcome(JobStatus.FAILED, error=str(out_of_memory(e, doing)))
    return Outcome(JobStatus.FAILED, error=f"{type(e).__name__}: {e}")


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
        return Outcome(JobStatus.COMPLETE, run_name=run.name)
    except Exception as e:  # noqa: BLE001 - every error, a bug too, ends this job only: keep the worker alive
        return _stopped(e, "loading the model")


def dense_model_for(request: RepairRequest, lookup: DenseLookup) -> Any:
    """The dense model the repaired run was pruned from, as `lookup` has it (None: not at hand, or a run the
    store cannot read, which `execute_repair` then refuses in one sentence)."""
    record = load_run(request.run).record
    return lookup(record.request) if record is not None else None


def run_repair_job(request: RepairRequest, lookup: DenseLookup, repair: Callable[..., Any],
                   on_event: Callable[[Event], None], cancel: Cancel) -> Outcome:
    """Repair a pruned run, starting from the dense model `lookup` has at hand; every error becomes an Outcome."""
    try:
        record = repair(request, on_event=on_event, cancel=cancel, loaded=dense_model_for(request, lookup))
    except Exception as e:  # noqa: BLE001 - every error, a bug too, ends this job only: keep the worker alive
        return _stopped(e, "repairing the model")
    status = JobStatus(record.status) if record.status in ENDED else JobStatus.COMPLETE
    return Outcome(status, run_name=record.run, error=record.error, repair_name=record.name)


def run_score_job(request: ScoreRequest, lookup: DenseLookup, score: Callable[..., Any],
                  on_event: Callable[[Event], None], cancel: Cancel) -> Outcome:
    """Score an existing run on zero-shot tasks, its dense model from `lookup` (loaded once it is known the run can
    be scored); every error becomes an Outcome."""
    try:
        run = scorable_run(request)
        on_event(StageStarted(0.0, "load-model", run.record.request.model))
        loaded = lookup(run.record.request)
        record = score(request, on_event=on_event, cancel=cancel, loaded=loaded)
    except Exception as e:  # noqa: BLE001 - every error, a bug too, ends this job only: keep the worker alive
        return _stopped(e, "scoring the run")
    return Outcome(JobStatus.COMPLETE, run_name=record.name)


def run_generate_job(request: GenerateRequest, store: RunStore, lookup: Loader, generate: Callable[..., Any],
                     on_event: Callable[[Event], None], cancel: Cancel) -> Outcome:
    """Continue a prompt with the dense model and runs, the dense model from `lookup` (loaded once the runs are known
    to be comparable); every error becomes an Outcome."""
    try:
        spec = dense_request(request, generation_runs(request))
        on_event(StageStarted(0.0, "load-model", spec.model))
        generate(request, store, on_event=on_event, cancel=cancel, loaded=lookup(spec))
    except Exception as e:  # noqa: BLE001 - every error, a bug too, ends this job only: keep the worker alive
        return _stopped(e, "generating")
    return Outcome(JobStatus.COMPLETE)


class ModelCache:
    """The dense models jobs start from, keyed by everything that changes the loaded weights."""

    def __init__(self, max_entries: int = 2):
        self._models: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._max = max_entries

    @staticmethod
    def _key(request: RunRequest) -> str:
        return repr(request.model_spec())  # an offload budget is a dict: the spec's repr is its hashable identity

    def get(self, request: RunRequest) -> Any:
        spec, key = request.model_spec(), self._key(request)
        if key not in self._models:
            while len(self._models) >= self._max:
                self._models.popitem(last=False)
            self._models[key] = load_model(spec.source, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code,
                                           offload=spec.offload)
        self._models.move_to_end(key)
        return self._models[key]

    def cached(self, request: RunRequest) -> Any:
        """The dense model of the request's spec if it is loaded already, else None (never loads: a repair
        that starts from a saved pruned model needs no dense model)."""
        return self._models.get(self._key(request))


class InProcess:
    """Runs each job on the calling thread (tests with stand-in loaders and runners). A repair is handed
    the dense model `loader` gives for the repaired run's request."""

    def __init__(self, loader: Loader, runner: Callable[..., Any] = execute_run,
                 repairer: Callable[..., Any] = execute_repair, scorer: Callable[..., Any] = score_run,
                 generator: Callable[..., Any] = generate_side_by_side):
        self._loader, self._runner, self._repairer, self._scorer = loader, runner, repairer, scorer
        self._generator = generator

    def run(self, request: JobRequest, store: Any, on_event: Callable[[Event], None], cancel: Cancel) -> Outcome:
        if isinstance(request, RepairRequest):
            return run_repair_job(request, self._loader, self._repairer, on_event, cancel)
        if isinstance(request, ScoreRequest):
            return run_score_job(request, self._loader, self._scorer, on_event, cancel)
        if isinstance(request, GenerateRequest):
            return run_generate_job(request, store, self._loader, self._generator, on_event, cancel)
        return run_job(request, store, self._loader, self._runner, on_event, cancel)

    def close(self) -> None:
        pass


def serve(orders: Any, messages: Any, cancel: Any) -> None:
    """The child process: run each order (a prune, a repair, a zero-shot scoring or a generation, one at a time),
    stream its events, then its outcome; None stops it."""
    models = ModelCache()
    while (order := orders.get()) is not None:
        request, store_root = order
        if isinstance(request, RepairRequest):
            outcome = run_repair_job(request, models.cached, execute_repair, messages.put, cancel)
        elif isinstance(request, ScoreRequest):
            outcome = run_score_job(request, models.get, score_run, messages.put, cancel)
        elif isinstance(request, GenerateRequest):
            outcome = run_generate_job(request, RunStore(store_root), models.get, generate_side_by_side, messages.put,
                                       cancel)
        else:
            outcome = run_job(request, RunStore(store_root), models.get, execute_run, messages.put, cancel)
        messages.put(outcome)
