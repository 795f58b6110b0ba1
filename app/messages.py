"""What the server and the worker process say to each other about a job: the request, a progress event of the
app's own (JobPrepared), the job's outcome and its status. Torch-free and imported by both sides; imports neither.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from wanda_engine.config import GenerateRequest, RunRequest, ScoreRequest
from wanda_engine.core.events import Event
from wanda_engine.repair.config import RepairRequest

Loader = Callable[[RunRequest], Any]  # request -> LoadedModel matching its model, dtype, offload, remote code
Cancel = Any  # threading.Event or multiprocessing.Event: only is_set() is used
JobRequest = RunRequest | RepairRequest | ScoreRequest | GenerateRequest


class JobStatus(StrEnum):
    """Where a job is: waiting, running, or how it ended. A str enum: it compares and prints as its word."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED = (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.CANCELLED)  # how a job can end


@dataclass(frozen=True)
class JobPrepared(Event):
    """The dense model is loaded and the run named: what the progress views need before pruning starts."""

    run_name: str
    matrices_per_block: int


@dataclass(frozen=True)
class Outcome:
    status: JobStatus  # how it ended: COMPLETE, FAILED or CANCELLED
    run_name: str | None = None  # a repair's: the pruned run it repaired
    error: str | None = None
    repair_name: str | None = None  # a repair's folder under <run>/repairs/
