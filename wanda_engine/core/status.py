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
