"""A run's status, one word each, as run.json and repair.json hold it and as the run store reads it back."""
from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A str enum: each member is its own word ('complete'), so the JSON files read and write as before."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # never written: a 'running' run read from disk whose writer is gone
    CORRUPT = "corrupt"  # never written: a run read from disk whose files are damaged


# what a run.json or a repair.json may say; the others are only derived when a run is read
RECORDED = (RunStatus.RUNNING, RunStatus.COMPLETE, RunStatus.FAILED, RunStatus.CANCELLED)


class SweepStatus(StrEnum):
    """A sweep's, and each of its points': a run's words, and those of points whose runs have not started."""

    PLANNED = "planned"  # no run started yet
    QUEUED = "queued"  # the app queued its runs
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INCOMPLETE = "incomplete"  # some points done, others never started (queued in the app, or abandoned)
