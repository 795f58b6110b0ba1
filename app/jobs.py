"""The app's background job runner: one job at a time per server, a queue, live progress.

Plain Python (no Streamlit): the app wraps one `JobRunner` in `st.cache_resource`, tests drive it
directly. A thread takes the jobs off the queue one by one and hands each to an executor
(`app.worker`): the app's runs in a child process that keeps the dense models loaded, and calls
`execute_run(..., loaded=...)`, which deep-copies them: a cached model is never mutated. A repair
(`RepairRequest`) queues and runs the same way, one job at a time: a repair and a prune never share
the cores. The pages read a job as a `JobView`, a frozen copy the runner takes under its lock.
"""
from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from app.messages import JobPrepared, JobRequest, JobStatus, Outcome
from wanda_engine.config import GenerateRequest, ScoreRequest
from wanda_engine.core import stages
from wanda_engine.core.errors import EngineError
from wanda_engine.core.events import (BlockFinished, BlockStarted, Event, MatrixPruned, PruneFinished, StageStarted,
                                     WindowsEvaluated)
from wanda_engine.repair.config import RepairRequest
from wanda_engine.repair.events import RepairEval, RepairStep
from wanda_engine.store.run_store import RunStore, load_run
from wanda_engine.sweep.cost import run_cost

PRUNE, REPAIR, SCORE, GENERATE = "prune", "repair", "score", "generate"  # a job's kind
MAX_QUEUE = 64
MAX_HISTORY = 50
Loss = tuple[int, float, float, float]  # a repair's (step, loss, lr, elapsed_s)
Evaluation = tuple[int, int, float]  # a repair's (step, tokens_seen, ppl)
Eta = tuple[float | None, bool, float | None]  # (seconds left, leaves the evaluation out, the current stage's)

_ids = itertools.count(1)


def kind_of(request: JobRequest) -> str:
    """PRUNE for a RunRequest, REPAIR for a RepairRequest, SCORE for a ScoreRequest (an existing run's zero-shot),
    GENERATE for a GenerateRequest (a prompt through the dense model and existing runs)."""
    if isinstance(request, RepairRequest):
        return REPAIR
    if isinstance(request, GenerateRequest):
        return GENERATE
    return SCORE if isinstance(request, ScoreRequest) else PRUNE


@dataclass(frozen=True)
class JobView:
    """One job as the pages read it: a frozen copy taken under the runner's lock, the request itself included
    (a RunRequest or a RepairRequest: nothing is parsed back)."""

    id: int
    request: JobRequest
    owner: str  # the Streamlit session id that submitted it
    label: str
    model: str  # what the request's model is: a repair's is its pruned run's
    batch: str | None  # jobs submitted together (a comparison, a sweep) share a batch id
    status: JobStatus
    submitted: float
    started: float | None
    finished: float | None
    stage: str
    detail: str
    block: int  # 0-based block being pruned
    num_blocks: int
    matrix: str
    matrices_done: int  # in the current block
    matrices_per_block: int
    blocks: tuple[BlockFinished, ...]  # the blocks pruned so far
    prune_fraction: float  # of the pruning done, counting matrices inside the current block
    stage_seconds: Mapping[str, float]  # seconds each finished stage took
    run_name: str | None  # a repair's: the pruned run it repairs
    repair_name: str | None
    error: str | None
    step: int  # a repair's optimizer steps done
    steps: int
    tokens_seen: int
    losses: tuple[Loss, ...]
    evals: tuple[Evaluation, ...]
    elapsed_s: float  # since it started (0 while queued)
    cancel_requested: bool
    time_left_s: float | None = None  # the running job's estimate; None when not known
    time_left_partial: bool = False  # the estimate leaves the evaluation out (see stages.time_left)
    stage_done: int = 0  # the current stage's own progress: windows evaluated (0 for stages that report none)
    stage_total: int = 0
    stage_left_s: float | None = None  # the current stage's own time left (see stages.stage_left)
    expected_s: float | None = None  # a prune's seconds in this machine's past runs alike, the dense evaluation left out

    @property
    def kind(self) -> str:
        return kind_of(self.request)


@dataclass
class Job:
    """One queued or running request (a prune or a repair) and everything the UI shows about it; the runner
    changes it under its lock, the pages read its `view`."""

    request: JobRequest
    owner: str = "?"
    label: str = ""
    model: str = ""
    batch: str | None = None
    id: int = field(default_factory=lambda: next(_ids))
    status: JobStatus = JobStatus.QUEUED
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    stage: str = "queued"
    detail: str = ""
    stage_started: float | None = None
    block: int = 0
    num_blocks: int = 0
    matrix: str = ""
    matrices_done: int = 0
    matrices_per_block: int = 0
    blocks: list[BlockFinished] = field(default_factory=list)
    prune_started: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    run_name: str | None = None
    error: str | None = None
    # a repair's progress, from RepairStep and RepairEval events
    step: int = 0
    steps: int = 0
    tokens_seen: int = 0
    losses: list[Loss] = field(default_factory=list)
    evals: list[Evaluation] = field(default_factory=list)
    pace_from: tuple[float, int] | None = None  # (time, step) of the first step seen: seconds per step since
    last_step_at: float | None = None
    repair_name: str | None = None
    stage_done: int = 0  # windows evaluated in the current stage
    stage_total: int = 0
    # each stage's seconds in this machine's past runs alike (the run store's timings; sweep.cost), and the dense
    # evaluation's when it is not cached: what the time left goes by before this server has run one alike
    expected: dict[str, float] = field(default_factory=dict)
    dense_ahead: float | None = None
    expected_s: float | None = None  # the whole run, the dense evaluation left out
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.request, RepairRequest):
            self.label = self.label or f"{self.request.config.label()} of {Path(self.request.run).name}"
            self.run_name = Path(self.request.run).name
            self.steps = self.request.config.steps
        elif isinstance(self.request, ScoreRequest):
            self.label = self.label or f"zero-shot {', '.join(self.request.zeroshot.tasks)} of {Path(self.request.run).name}"
            self.run_name = Path(self.request.run).name
        elif isinstance(self.request, GenerateRequest):
            runs = ", ".join(Path(r).name for r in self.request.runs)
            self.label = self.label or "generate: " + " and ".join(filter(None, ["dense" * self.request.dense, runs]))
        else:
            self.label = self.label or self.request.prune.label
            self.model = self.model or self.request.model

    @property
    def kind(self) -> str:
        return kind_of(self.request)

    @property
    def prune_fraction(self) -> float:
        """Fraction of the pruning done, counting matrices inside the current block."""
        if not self.num_blocks:
            return 0.0
        done = len(self.blocks)
        if self.matrices_per_block and done < self.num_blocks:
            done += min(self.matrices_done / self.matrices_per_block, 0.99)
        return min(done / self.num_blocks, 1.0)

    @property
    def stage_fraction(self) -> float:
        """Of the current stage, where it reports its progress (an evaluation's windows)."""
        return min(self.stage_done / self.stage_total, 1.0) if self.stage_total else 0.0

    def view(self, time_left: Eta = (None, False, None)) -> JobView:
        """A frozen copy for the pages (taken under the runner's lock); `time_left`: (seconds, partial, the
        current stage's seconds)."""
        elapsed = (self.finished or time.time()) - self.started if self.started else 0.0
        return JobView(
            id=self.id, request=self.request, owner=self.owner, label=self.label, model=self.model, batch=self.batch,
            status=self.status, submitted=self.submitted, started=self.started, finished=self.finished,
            stage=self.stage, detail=self.detail, block=self.block, num_blocks=self.num_blocks, matrix=self.matrix,
            matrices_done=self.matrices_done, matrices_per_block=self.matrices_per_block, blocks=tuple(self.blocks),
            prune_fraction=self.prune_fraction, stage_seconds=MappingProxyType(dict(self.stage_seconds)),
            run_name=self.run_name, repair_name=self.repair_name, error=self.error, step=self.step,
            steps=self.steps, tokens_seen=self.tokens_seen, losses=tuple(self.losses), evals=tuple(self.evals),
            elapsed_s=elapsed, cancel_requested=self.cancel.is_set(), time_left_s=time_left[0],
            time_left_partial=time_left[1], stage_done=self.stage_done, stage_total=self.stage_total,
            stage_left_s=time_left[2], expected_s=self.expected_s)


class JobRunner:
    """Runs one job at a time, in the order submitted; the rest wait in a FIFO queue.

    `executor` runs a job: `app.worker.WorkerProcess` in the app, `app.execution.InProcess` (this
    runner's own thread) in tests with stand-ins."""

    def __init__(self, executor: Any, store_factory: Callable[[], RunStore] = RunStore):
        self._executor = executor
        self._store_factory = store_factory
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[Job] = collections.deque()
        self._current: Job | None = None
        self._history: collections.deque[Job] = collections.deque(maxlen=MAX_HISTORY)
        # seconds each stage took last time, per (model, eval settings): estimates the time left
        self._stage_memory: dict[tuple, dict[str, float]] = {}
        self._past: tuple[float, list[Any]] | None = None  # (when, the store's complete runs' records): _past_runs
        self._thread = threading.Thread(target=self._work, name="wanda-job-runner", daemon=True)
        self._closed = False
        self._thread.start()

    # --- submitting and cancelling -------------------------------------------------------------
    def submit(self, request: JobRequest, owner: str = "?", label: str = "", batch: str | None = None) -> JobView:
        """Queue a prune (RunRequest) or a repair (RepairRequest) behind every job already waiting."""
        getattr(self._executor, "start", lambda: None)()  # a worker process starts importing while the job queues
        model = _repaired_model(request) if isinstance(request, (RepairRequest, ScoreRequest, GenerateRequest)) else ""
        expected = self._expectations(request)
        with self._lock:
            if len(self._queue) >= MAX_QUEUE:
                raise EngineError(f"the queue already holds {MAX_QUEUE} runs; wait for some to finish or cancel them")
            job = Job(request=request, owner=owner, label=label, batch=batch, model=model, **expected)
            self._queue.append(job)
            self._wake.notify_all()
            return job.view()

    def batch_time_left(self, batch: str) -> float | None:
        """Seconds until every job of `batch` is done: the running one's time left, then each queued one's
        expected seconds; None when one of them is not known."""
        with self._lock:
            running = self._current if self._current is not None and self._current.batch == batch else None
            ahead = [j.expected_s for j in self._queue if j.batch == batch]
            left = self._eta(running)[0] if running is not None else 0.0
        if left is None or any(s is None for s in ahead):
            return None
        return left + sum(ahead)

    def cancel(self, job_id: int) -> bool:
        """Cancel a queued job (removed at once) or the running one (stops at the next block, step or stage)."""
        with self._lock:
            if self._current is not None and self._current.id == job_id:
                self._current.cancel.set()
                return True
            for job in self._queue:
                if job.id == job_id:
                    self._queue.remove(job)
                    job.status, job.stage, job.finished = JobStatus.CANCELLED, "cancelled", time.time()
                    job.error = "removed from the queue before it started"
                    self._history.appendleft(job)
                    return True
        return False

    def cancel_all(self, owner: str | None = None) -> int:
        with self._lock:
            ids = [j.id for j in self._queue if owner is None or j.owner == owner]
            if self._current is not None and (owner is None or self._current.owner == owner):
                ids.append(self._current.id)
        return sum(self.cancel(i) for i in ids)

    # --- reading state ------------------------------------------------------------------------
    def current(self) -> JobView | None:
        with self._lock:
            return self._current.view(self._eta(self._current)) if self._current else None

    def queued(self) -> list[JobView]:
        with self._lock:
            return [j.view() for j in self._queue]

    def history(self) -> list[JobView]:
        """Finished jobs, newest first."""
        with self._lock:
            return [j.view() for j in self._history]

    def job(self, job_id: int) -> JobView | None:
        with self._lock:
            for j in itertools.chain([self._current] if self._current else [], self._queue, self._history):
                if j.id == job_id:
                    return j.view(self._eta(j)) if j is self._current else j.view()
        return None

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._current is not None or bool(self._queue)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing runs or waits (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.busy:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._current is not None:
                self._current.cancel.set()
            self._wake.notify_all()
        self._executor.close()

    # --- the worker ---------------------------------------------------------------------------
    @staticmethod
    def _memory_keys(job: Job) -> tuple[tuple, tuple]:
        """Keys for remembered stage times: pruning depends on the method and calibration, evaluation not."""
        r = job.request
        ev = tuple(sorted(r.eval.to_dict().items())) if r.eval else None
        return (r.model, r.prune.label, r.prune.nsamples, r.prune.seqlen), (r.model, ev)

    def _eta(self, job: Job) -> Eta:
        """Seconds left, whether the estimate leaves the evaluation out (see stages.time_left), and the current
        stage's own seconds left: this server's memory of the last run alike first, else this machine's past runs."""
        if job.status != JobStatus.RUNNING:
            return None, False, None
        if job.kind == REPAIR:
            return (*_repair_time_left(job), None)
        if job.kind in (SCORE, GENERATE):  # each stage's own time only: no run alike to go by
            return None, False, None
        now = time.time()
        prune_key, eval_key = self._memory_keys(job)
        expected = {**job.expected, **stages.expected_seconds(self._stage_memory.get(prune_key, {}),
                                                              self._stage_memory.get(eval_key, {}), job.stage_seconds)}
        spent = now - (job.stage_started or now)
        left, partial = stages.time_left(stages.stage_order(job.request), job.stage, spent, expected,
                                         job.prune_fraction, now - (job.prune_started or now), job.stage_fraction,
                                         job.dense_ahead)
        fraction = job.prune_fraction if job.stage == "prune" else job.stage_fraction
        since = now - (job.prune_started or now) if job.stage == "prune" else spent
        return left, partial, stages.stage_left(job.stage, since, expected, fraction)

    def _expectations(self, request: JobRequest, fresh: bool = False) -> dict[str, Any]:
        """What a prune's stages took in this machine's past runs alike (read off the lock, from the run store): the
        Job fields `expected`, `dense_ahead` and `expected_s`; none for a repair, or when the store is unreadable."""
        if kind_of(request) != PRUNE:
            return {}
        try:
            cost = run_cost(request, self._past_runs(fresh))
        except (EngineError, OSError):  # an unreadable store only costs the estimate
            return {}
        return {"expected": cost.stage_seconds(), "expected_s": cost.seconds(with_dense=False),
                "dense_ahead": cost.dense_evaluation if cost.known and not cost.dense_cached else None}

    def _past_runs(self, fresh: bool = False) -> list[Any]:
        """The store's complete runs' records, read at most once a second while jobs are queued (a sweep queues its
        points at once); `fresh`: read now (a job starts: the one before it may have just finished)."""
        now = time.monotonic()
        if fresh or self._past is None or now - self._past[0] > 1.0:
            listing = getattr(self._store_factory(), "list", None)  # None: a stand-in store that keeps no runs
            self._past = (now, [run.record for run in listing() if run.complete] if listing else [])
        return self._past[1]

    def _remember(self, job: Job) -> None:
        if job.status == JobStatus.COMPLETE and job.kind == PRUNE:
            prune_key, eval_key = self._memory_keys(job)
            self._stage_memory[prune_key] = dict(job.stage_seconds)
            if "eval" in job.stage_seconds:
                self._stage_memory[eval_key] = {"eval": job.stage_seconds["eval"]}

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                job.status, job.started = JobStatus.RUNNING, time.time()
                self._current = job
            try:
                # again as it starts: the run before it (the first of a Compare) may have measured what it will take
                expected = self._expectations(job.request, fresh=True)
                with self._lock:
                    for name, value in expected.items():
                        setattr(job, name, value)
                self._run(job)
            finally:
                with self._lock:
                    job.finished = time.time()
                    self._remember(job)
                    self._history.appendleft(job)
                    self._current = None

    def _set_stage(self, job: Job, stage: str, detail: str = "") -> None:
        with self._lock:
            self._set_stage_locked(job, stage, detail)

    @staticmethod
    def _set_stage_locked(job: Job, stage: str, detail: str = "") -> None:
        now = time.time()
        if job.stage_started is not None and job.stage in stages.BY_NAME:
            job.stage_seconds[job.stage] = job.stage_seconds.get(job.stage, 0.0) + now - job.stage_started
        job.stage, job.detail, job.stage_started = stage, detail, now
        job.stage_done = job.stage_total = 0
        if stage == "prune" and job.prune_started is None:
            job.prune_started = now

    def _on_event(self, job: Job, event: Event) -> None:
        if isinstance(event, StageStarted):
            # 'capture' is part of pruning in the pipeline; keep 'prune' as the stage shown while pruning
            if event.stage == "prune" and job.stage == "prune":
                return
            self._set_stage(job, event.stage, event.detail)
            return
        with self._lock:
            if isinstance(event, JobPrepared):
                job.run_name = event.run_name
                job.matrices_per_block = job.matrices_per_block or event.matrices_per_block
            elif isinstance(event, BlockStarted):
                if job.stage != "prune":  # after 'capture': the blocks are the pruning proper
                    self._set_stage_locked(job, "prune", job.detail)
                job.block, job.num_blocks, job.matrices_done, job.matrix = event.block, event.num_blocks, 0, ""
            elif isinstance(event, MatrixPruned):
                job.block, job.num_blocks, job.matrix = event.block, event.num_blocks, event.matrix
                job.matrices_done += 1
            elif isinstance(event, BlockFinished):
                if not job.matrices_per_block:
                    job.matrices_per_block = job.matrices_done
                job.matrices_done = 0  # those belong to the finished block now
                job.blocks.append(event)
            elif isinstance(event, PruneFinished):
                job.num_blocks = event.num_blocks
            elif isinstance(event, WindowsEvaluated):
                job.stage_done, job.stage_total = event.done, event.windows
            elif isinstance(event, (RepairStep, RepairEval)):
                _repair_progress(job, event)

    def _run(self, job: Job) -> None:
        try:
            outcome = self._executor.run(job.request, self._store_factory(), lambda e: self._on_event(job, e), job.cancel)
        except Exception as e:  # noqa: BLE001 - the store or the executor itself broke: keep serving
            outcome = Outcome(JobStatus.FAILED, error=f"{type(e).__name__}: {e}")
        self._set_stage(job, {JobStatus.COMPLETE: "done", JobStatus.CANCELLED: "cancelled"}.get(outcome.status, "failed"))
        with self._lock:
            job.status, job.error = outcome.status, outcome.error
            job.run_name = outcome.run_name or job.run_name
            job.repair_name = outcome.repair_name or job.repair_name


def _repaired_model(request: RepairRequest | ScoreRequest | GenerateRequest) -> str:
    """The model a repaired, scored or generating run was pruned from, as its record names it ('' if the record
    cannot be read: the job itself then fails with one sentence); a generation without runs: its own."""
    if isinstance(request, GenerateRequest) and not request.runs:
        return request.model
    record = load_run(request.runs[0] if isinstance(request, GenerateRequest) else request.run).record
    return record.request.model if record is not None else ""


def _repair_progress(job: Job, event: RepairStep | RepairEval) -> None:
    """A repair's step or evaluation into its job (under the runner's lock)."""
    if isinstance(event, RepairEval):
        config = job.request.config
        job.evals.append((event.step, event.step * config.batch_size * config.seqlen, event.ppl))
        return
    now = time.time()
    job.step, job.steps, job.tokens_seen, job.last_step_at = event.step, event.steps, event.tokens_seen, now
    job.losses.append((event.step, event.loss, event.lr, event.elapsed_s))
    if job.pace_from is None:
        job.pace_from = (now, event.step)


def _repair_time_left(job: Job) -> tuple[float | None, bool]:
    """Seconds left in a repair, from its seconds per step so far (evaluations between steps included),
    and True: the final evaluation and the saving are not in it. None until two steps are done."""
    if job.pace_from is None or job.last_step_at is None or job.step <= job.pace_from[1]:
        return None, False
    since, first = job.pace_from
    per_step = (job.last_step_at - since) / (job.step - first)
    left = per_step * (job.steps - job.step) - (time.time() - job.last_step_at)
    return max(left, 0.0), True
