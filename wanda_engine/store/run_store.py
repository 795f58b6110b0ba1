"""Runs on disk: one directory per run, written atomically, listed and loaded without torch.

RUN_DIR/run.json     status, config, model, calibration, sparsity, layers, blocks, ppl, ppl_dense,
                     eval, timings (always written last when a run completes): a record.RunRecord
RUN_DIR/records.json one MatrixRecord dict per pruned matrix
RUN_DIR/arrays.npz   the records' small arrays, keyed '{block}/{matrix}/{kind}'

A run whose run.json says status 'running' is incomplete: it is listed as such and never shown as a
finished run. run.json records the writing process (pid, host, start time); a 'running' run whose
writer is gone (killed, crashed) reads as 'interrupted'. A run directory is created atomically
(a hidden temporary folder holding run.json, renamed into place), every file is written to a
temporary name in its folder, fsynced and renamed, and a complete run records the size and
checksum of its records files: a truncated or damaged run reads as 'corrupt', never as complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.parsing import check_run_name
from ..core.errors import ConfigError, EngineError
from ..core.status import RunStatus
from .run_record import RunRecord, RunRecordError
from .matrix_records import MatrixRecord, arrays_to_npz_dict, attach_arrays

RECORD_FILES = ("records.json", "arrays.npz")
SAVED_MODELS_DIR = ".saved-models"


def safe_file_stem(text: str, limit: int = 150) -> str:
    """A string made safe as a downloaded file's name: no folders, only letters, digits, '.', '_', '-'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text or "")).strip("._-")
    return stem[:limit] or "export"


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, rename: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write_bytes(Path(path), data)


def atomic_write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(Path(path), json.dumps(obj, indent=1, default=_json_default).encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def create_run_dir(run_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Create `run_dir` holding run.json, atomically: a folder never exists without its run.json.

    Built as a hidden folder beside it and renamed into place; EngineError if a run is already there
    (two writers choosing one name: one wins, the other is told)."""
    run_dir = Path(run_dir)
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if (run_dir / "run.json").exists():
            raise EngineError(f"run directory {run_dir} already holds a run; choose another name")
        atomic_write_json(run_dir / "run.json", meta)  # a user's own non-empty folder (CLI --out)
        return run_dir
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.", suffix=".new"))
    try:
        atomic_write_json(tmp / "run.json", meta)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, run_dir)  # onto a missing or empty folder only
        except OSError as e:
            raise EngineError(f"run directory {run_dir} already holds a run; choose another name") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(run_dir.parent)
    return run_dir


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_records(run_dir: Path, records: list[MatrixRecord]) -> dict[str, dict[str, Any]]:
    """Write records.json and arrays.npz atomically; return their sizes and sha256 for run.json['files']."""
    import io

    atomic_write_json(run_dir / "records.json", [r.to_dict() for r in records])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays_to_npz_dict(records))
    _atomic_write_bytes(run_dir / "arrays.npz", buf.getvalue())
    return {name: {"bytes": (run_dir / name).stat().st_size, "sha256": _file_digest(run_dir / name)}
            for name in RECORD_FILES}


# --- who is writing a run -------------------------------------------------------------------------

def _proc_start(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None if unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def writer_identity() -> dict[str, Any]:
    """This process, as recorded in run.json['writer'] while it writes the run."""
    pid = os.getpid()
    proc = _proc_start(pid)
    return {"pid": pid, "host": socket.gethostname(), "start": proc[1] if proc else None}


def writer_alive(writer: Any) -> bool | None:
    """Whether the process recorded in run.json['writer'] still runs: None if it cannot be told
    (another host, or no record), False if it is gone (or a zombie, or its pid was reused)."""
    if not isinstance(writer, dict) or not isinstance(writer.get("pid"), int) or writer.get("host") != socket.gethostname():
        return None
    pid = writer["pid"]
    if pid == os.getpid():
        return True
    proc = _proc_start(pid)
    if proc is None:
        if Path("/proc/self/stat").exists():
            return False  # /proc works here and has no such process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    state, start = proc
    if state in ("Z", "X"):
        return False
    if writer.get("start") is not None and start != writer["start"]:
        return False  # the pid belongs to another process now
    return True


@dataclass
class Run:
    """A run directory as read from disk: its record (None when run.json is unreadable) and, lazily, its records."""

    path: Path
    record: RunRecord | None
    problem: str | None = None  # why the run reads as 'corrupt' or 'interrupted'
    derived_status: RunStatus | None = field(default=None, repr=False)
    _records: list[MatrixRecord] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> RunStatus:
        """The record's status ('running': its writer still works on it), or, read from disk: INTERRUPTED
        (its writer is gone) and CORRUPT (damaged files)."""
        return self.derived_status or (self.record.status if self.record else RunStatus.RUNNING)

    @property
    def error(self) -> str:
        return self.problem or (self.record.error if self.record else None) or ""

    @property
    def complete(self) -> bool:
        return self.status == RunStatus.COMPLETE

    def records(self) -> list[MatrixRecord]:
        if self._records is None:
            self._records = self._read_records()
        return self._records

    def _read_records(self) -> list[MatrixRecord]:
        path = self.path / "records.json"
        if not path.exists():
            return []
        files = (self.record.files if self.record else None) or {}
        try:
            for name, info in files.items():
                digest = info.get("sha256") if isinstance(info, dict) else None
                if name in RECORD_FILES and digest and _file_digest(self.path / name) != digest:
                    raise ValueError(f"{name} does not match the checksum recorded when the run finished")
            raw = json.loads(path.read_text())
            if not isinstance(raw, list):
                raise ValueError("records.json is not a list")
            recs = [MatrixRecord.from_dict(d) for d in raw]
            npz_path = self.path / "arrays.npz"
            if npz_path.exists():
                with np.load(npz_path, allow_pickle=False) as npz:
                    attach_arrays(recs, npz)
        except Exception as e:  # noqa: BLE001 - any damage (zip, json, types) is one error for the page
            raise EngineError(f"run {self.name!r} has unreadable records ({type(e).__name__}: {e})") from e
        for rec in recs:  # a loaded run is shared between sessions: read-only
            for arr in rec.arrays.values():
                if isinstance(arr, np.ndarray):
                    arr.flags.writeable = False
        return recs


def _files_problem(path: Path, meta: dict[str, Any]) -> str | None:
    """For a run marked complete: are the records files there and as long as when it finished?"""
    files = meta.get("files")
    if not isinstance(files, dict):  # written before sizes were recorded
        return None if (path / "records.json").is_file() else "records.json is missing"
    for name, info in files.items():
        expected = info.get("bytes") if isinstance(info, dict) else None
        try:
            size = (path / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if isinstance(expected, int) and size != expected:
            return f"{name} is {'truncated' if size < expected else 'damaged'} ({size:,} of {expected:,} bytes)"
    return None


def load_run(path: str | Path) -> Run:
    """Read a run directory; never raises for a damaged one (its status says 'corrupt' or 'interrupted')."""
    path = Path(path)
    meta_path = path / "run.json"
    if not meta_path.exists():
        problem = "no run.json (not a run, or interrupted before it started writing)"
        return Run(path, None, problem=problem, derived_status=RunStatus.INTERRUPTED)
    try:
        meta = json.loads(meta_path.read_text())
        record = RunRecord.from_json(meta)
    except (ValueError, OSError, RunRecordError) as e:
        what = str(e) if isinstance(e, RunRecordError) else f"unreadable run.json ({type(e).__name__}: {e})"
        return Run(path, None, problem=what, derived_status=RunStatus.CORRUPT)
    if record.status == RunStatus.COMPLETE:
        problem = _files_problem(path, meta)
        if problem is not None:
            return Run(path, record, problem=problem, derived_status=RunStatus.CORRUPT)
    elif record.status == RunStatus.RUNNING and writer_alive(record.writer) is False:
        problem = f"the process writing it (pid {record.writer['pid']}) stopped before the run finished"
        return Run(path, record, problem=problem, derived_status=RunStatus.INTERRUPTED)
    return Run(path, record)


class RunStore:
    """A folder of run directories (default: ./runs, or $WANDA_RUNS)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get("WANDA_RUNS", "runs")).resolve()

    def list(self) -> list[Run]:
        if not self.root.exists():
            return []
        runs = [load_run(p) for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(runs, key=lambda r: (r.record.created if r.record else "", r.name), reverse=True)

    def path_for(self, name: str) -> Path:
        return self.root / check_run_name(name)

    @property
    def saved_models_dir(self) -> Path:
        """Where the app saves pruned models: a hidden folder, so the store never lists it as a run."""
        return self.root / SAVED_MODELS_DIR

    def saved_model_path(self, folder: str) -> Path:
        """A user-given folder for a saved model, as a path inside `saved_models_dir`; ConfigError for
        anything that would land elsewhere (an absolute path outside it, '..', a link out of it)."""
        text = str(folder or "").strip()
        if not text or "\x00" in text:
            raise ConfigError("saved model folder: enter a folder name, such as wanda-50")
        base = self.saved_models_dir.resolve()
        given = Path(text).expanduser()
        if ".." in given.parts:
            raise ConfigError(f"saved model folder {text!r} may not contain '..'; give a folder name inside {base}")
        target = (given if given.is_absolute() else base / given).resolve()
        if target == base or not target.is_relative_to(base):
            raise ConfigError(f"saved model folder {text!r} is outside {base}; pruned models are saved only there")
        return target

    def locate(self, given: str) -> Path:
        """A run folder as a user names it on a command line: its path, or a run's name in this store; ConfigError,
        one sentence, when it is neither (no run.json there)."""
        path = Path(given).expanduser()
        if not path.is_dir() and "/" not in given and os.sep not in given:
            path = self.path_for(given)  # ConfigError for what cannot be a run's name
        if not (path / "run.json").is_file():
            raise ConfigError(f"{given!r} is not a run directory (no run.json there, nor a run of that name in "
                              f"{self.root})")
        return path

    def get(self, name: str) -> Run:
        path = self.path_for(name)
        if not path.is_dir():
            raise EngineError(f"no run named {name!r} in {self.root}")
        return load_run(path)

    def new_name(self, stem: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "run"
        stem = stem[:80]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name, i = f"{stamp}-{stem}", 1
        while (self.root / name).exists():
            i += 1
            name = f"{stamp}-{stem}-{i}"
        return name

    def _check_not_writing(self, name: str, what: str) -> None:
        run = load_run(self.path_for(name))
        if run.status == RunStatus.RUNNING and writer_alive(run.record.writer):
            raise EngineError(f"run {name!r} is still being written (pid {run.record.writer['pid']}); {what} it after it finishes")

    def delete(self, name: str) -> None:
        """Delete a run: first renamed to a hidden name (atomic: gone from the list at once), then removed."""
        path = self.path_for(name)
        if not path.is_dir():
            raise EngineError(f"no run named {name!r} in {self.root}")
        self._check_not_writing(name, "delete")
        trash = self.root / f".deleted-{name}-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def rename(self, name: str, new_name: str) -> None:
        src, dst = self.path_for(name), self.path_for(new_name)
        if not src.is_dir():
            raise EngineError(f"no run named {name!r} in {self.root}")
        if dst.exists():
            raise EngineError(f"a run named {new_name!r} already exists")
        self._check_not_writing(name, "rename")
        try:
            os.rename(src, dst)
        except OSError as e:
            raise EngineError(f"could not rename run {name!r} to {new_name!r} ({e.strerror or e})") from e
        meta_path = dst / "run.json"
        try:  # keep the name recorded inside the run in step with its folder (as on disk, nothing derived)
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(meta, dict) and "name" in meta:
            atomic_write_json(meta_path, {**meta, "name": new_name})
