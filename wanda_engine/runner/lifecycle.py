"""What every kind of run shares (a pruning run, a repair, the next kind): a clock that announces and times its
stages, memory running out as one sentence, the versions and time stamps its record carries, and the one
lifecycle of a record kept in a folder of its own (run.json, repair.json), from 'running' to 'complete', 'failed'
or 'cancelled'.
"""
from __future__ import annotations

import dataclasses
import gc
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch
import transformers

from .. import __version__
from ..core.status import RunStatus
from ..core.errors import EngineError, OutOfMemory, PruneCancelled
from ..core.events import EventCallback, StageStarted, WindowsEvaluated, ignore_events
from ..core.stages import BY_NAME
from ..store.run_store import atomic_write_json

OOM_ERRORS = (torch.OutOfMemoryError, MemoryError)


def out_of_memory(error: BaseException, during: str) -> OutOfMemory:
    """An allocation failure as one sentence with what to try instead; frees what the allocator caches."""
    gc.collect()
    if torch.cuda.is_available():
        try:
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - a broken CUDA context must not hide the real error
            pass
    where = "GPU" if isinstance(error, torch.OutOfMemoryError) else "host"
    first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
    return OutOfMemory(
        f"out of {where} memory while {during} ({first}); try fewer or shorter calibration windows "
        "(--nsamples, --seqlen), a smaller --batch-size, fewer or shorter evaluation windows, "
        "a smaller --dtype (bfloat16), another device (--device cpu or cuda), or a smaller model"
    )


def package_versions() -> dict[str, str]:
    return {"wanda_engine": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class StageClock:
    """A run's stages as they happen: each is announced, stops the run if a cancel was asked for,
    is timed into `timings`, and names itself when memory runs out during it."""

    def __init__(self, on_event: EventCallback = ignore_events, cancel: threading.Event | None = None):
        self.on_event, self.cancel = on_event, cancel
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def windows(self, done: int, total: int) -> None:
        """An evaluation's progress in the stage now running, as an event."""
        self.on_event(WindowsEvaluated(self.elapsed(), done, total))

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        stage = BY_NAME[name]
        if self.cancel is not None and self.cancel.is_set():
            raise PruneCancelled(f"cancelled before the {name!r} stage")
        self.on_event(StageStarted(self.elapsed(), name, detail))
        t = time.perf_counter()
        try:
            yield
        except OOM_ERRORS as e:
            e.__traceback__ = None  # let the frames holding the run's tensors go
            raise out_of_memory(e, stage.label) from None
        if stage.timing:
            self.timings[stage.timing] = round(time.perf_counter() - t, 3)


class LifecycleRecord(Protocol):
    """A record the lifecycle can carry: a frozen dataclass with these fields and `finished`, `error`."""

    status: str
    timings: dict[str, float]

    def to_json(self) -> dict[str, Any]: ...


Record = TypeVar("Record", bound=LifecycleRecord)


@dataclass(frozen=True)
class RecordKind:
    """One kind of record kept in a folder of its own, and how that folder comes to be."""

    file: str  # the record's name in its folder: 'run.json', 'repair.json'
    create: Callable[[Path, dict[str, Any]], object]  # the folder, holding the first record; EngineError if taken
    finished_when_stopped: bool  # 'finished' is stamped on failure and cancellation too, not only on completion


class RecordWriter(Generic[Record]):
    """A record under way: `update` changes it in memory, `write` puts it in its file (atomically)."""

    def __init__(self, path: Path, record: Record):
        self.path, self.record = path, record

    def update(self, **changes: Any) -> None:
        self.record = dataclasses.replace(self.record, **changes)

    def write(self) -> None:
        atomic_write_json(self.path, self.record.to_json())


def _timings(record: LifecycleRecord, clock: StageClock) -> dict[str, float]:
    """The record's own timings, the stages' and the total so far."""
    return {**record.timings, **clock.timings, "total_s": round(clock.elapsed(), 3)}


@contextmanager
def record_lifecycle(kind: RecordKind, folder: Path, record: Record, clock: StageClock,
                     cleanup: Callable[[], None] | None = None) -> Iterator[RecordWriter[Record]]:
    """`folder` from its creation (holding `record`, status 'running') to 'complete', or to 'failed' or
    'cancelled' with the error that stopped it (which propagates); the timings are stamped either way and
    `cleanup` runs either way. The body may `write` the record as it goes (a repair does at each evaluation)."""
    kind.create(folder, record.to_json())
    writer = RecordWriter(folder / kind.file, record)
    try:
        yield writer
        writer.update(status=RunStatus.COMPLETE, finished=timestamp(), timings=_timings(writer.record, clock))
        writer.write()
    except BaseException as e:
        cancelled = isinstance(e, (PruneCancelled, KeyboardInterrupt))
        stopped_at = {"finished": timestamp()} if kind.finished_when_stopped else {}
        writer.update(status=RunStatus.CANCELLED if cancelled else RunStatus.FAILED, **stopped_at,
                      error=str(e) if isinstance(e, EngineError) else f"{type(e).__name__}: {e}",
                      timings=_timings(writer.record, clock))
        try:  # best effort: the original error matters more than a failed status write
            writer.write()
        except OSError:
            pass
        raise
    finally:
        if cleanup is not None:
            cleanup()
