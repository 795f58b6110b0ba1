"""The one lifecycle of a record kept in its own folder (run.json, repair.json): 'running' -> 'complete', or
'failed'/'cancelled' with the error, which propagates; timings stamped, the last write best effort, cleanup
either way. The run and the repair going through it end to end: tests/test_repair.py."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from wanda_engine.core.errors import ConfigError, EngineError, PruneCancelled
from wanda_engine.runner.lifecycle import RecordKind, StageClock, record_lifecycle
from wanda_engine.store.run_store import atomic_write_json


@dataclass(frozen=True)
class Note:
    """The smallest record the lifecycle carries."""

    status: str = "running"
    finished: str | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "finished": self.finished, "error": self.error, "timings": self.timings,
                "detail": self.detail}


def _create(folder: Path, first: dict[str, Any]) -> None:
    folder.mkdir()
    atomic_write_json(folder / "note.json", first)


def kind(finished_when_stopped: bool = False) -> RecordKind:
    return RecordKind("note.json", _create, finished_when_stopped)


def read(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "note.json").read_text())


def test_a_record_is_written_running_then_complete_with_its_timings(tmp_path):
    clock, cleaned = StageClock(), []
    with record_lifecycle(kind(), tmp_path / "n", Note(timings={"own_s": 1.0}), clock, lambda: cleaned.append(1)) as w:
        assert read(tmp_path / "n")["status"] == "running"
        with clock.stage("load"):
            pass
        w.update(detail="done")
    note = read(tmp_path / "n")
    assert note["status"] == "complete" and note["finished"] and note["error"] is None and note["detail"] == "done"
    assert list(note["timings"]) == ["own_s", "load_s", "total_s"] and cleaned == [1]
    assert w.record.to_json() == note


@pytest.mark.parametrize("error, status, text", [
    (ConfigError("seqlen 9 is too long"), "failed", "seqlen 9 is too long"),
    (RuntimeError("a bug"), "failed", "RuntimeError: a bug"),
    (PruneCancelled("pruning was cancelled"), "cancelled", "pruning was cancelled"),
    (KeyboardInterrupt(), "cancelled", "KeyboardInterrupt: "),
])
@pytest.mark.parametrize("stamps", [False, True])
def test_an_error_propagates_and_stops_the_record(error, status, text, stamps, tmp_path):
    cleaned = []
    with pytest.raises(type(error)):
        with record_lifecycle(kind(stamps), tmp_path / "n", Note(), StageClock(), lambda: cleaned.append(1)):
            raise error
    note = read(tmp_path / "n")
    assert note["status"] == status and note["error"] == text and "total_s" in note["timings"] and cleaned == [1]
    assert (note["finished"] is not None) == stamps  # a repair says when it stopped; a run only when it completed


def test_the_last_write_on_the_way_out_of_an_error_is_best_effort(tmp_path):
    """The folder gone under a failing run: the original error, not the failed write, reaches the caller."""
    cleaned = []
    with pytest.raises(EngineError, match="the real error"):
        with record_lifecycle(kind(), tmp_path / "n", Note(), StageClock(), lambda: cleaned.append(1)):
            shutil.rmtree(tmp_path / "n")
            raise EngineError("the real error")
    assert cleaned == [1]


def test_a_failed_final_write_fails_the_record_instead_of_completing_it(tmp_path, monkeypatch):
    import wanda_engine.runner.lifecycle as lifecycle

    real, writes = lifecycle.atomic_write_json, []

    def write(path, obj):
        writes.append(obj["status"])
        if obj["status"] == "complete":
            raise OSError("disk full")
        real(path, obj)

    monkeypatch.setattr(lifecycle, "atomic_write_json", write)
    with pytest.raises(OSError, match="disk full"):
        with record_lifecycle(kind(), tmp_path / "n", Note(), StageClock()):
            pass
    assert writes == ["complete", "failed"] and read(tmp_path / "n")["error"] == "OSError: disk full"


def test_a_folder_that_cannot_be_created_stops_before_the_body(tmp_path):
    (tmp_path / "n").mkdir()
    ran, cleaned = [], []
    with pytest.raises(FileExistsError):
        with record_lifecycle(kind(), tmp_path / "n", Note(), StageClock(), lambda: cleaned.append(1)):
            ran.append(1)
    assert not ran and not cleaned and not (tmp_path / "n" / "note.json").exists()
