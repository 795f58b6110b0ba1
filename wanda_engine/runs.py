"""Runs on disk: one directory per run, written atomically, listed and loaded without torch.

RUN_DIR/run.json     status, config, model, calibration, sparsity, layers, blocks, ppl, ppl_dense,
                     eval, timings (always written last when a run completes)
RUN_DIR/records.json one MatrixRecord dict per pruned matrix
RUN_DIR/arrays.npz   the records' small arrays, keyed '{block}/{matrix}/{kind}'

A run whose run.json says status 'running' (or that has none) is incomplete: it is listed as such
and never shown as a finished run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, EngineError
from .records import BlockRecord, MatrixRecord, arrays_to_npz_dict, attach_arrays

FORMAT_VERSION = 1
STATUSES = ("running", "complete", "failed", "cancelled")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_name(name: str) -> str:
    """A run name is a plain folder name: letters, digits, '.', '_', '-'; no path parts."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ConfigError(
            f"run name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _atomic_write_bytes(path: Path, data: bytes) -> None:
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


def write_records(run_dir: Path, records: list[MatrixRecord]) -> None:
    import io

    atomic_write_json(run_dir / "records.json", [r.to_dict() for r in records])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays_to_npz_dict(records))
    _atomic_write_bytes(run_dir / "arrays.npz", buf.getvalue())


@dataclass
class Run:
    """A run directory as read from disk. `meta` is run.json; records load lazily."""

    path: Path
    meta: dict[str, Any]
    _records: list[MatrixRecord] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return self.meta.get("status", "running")

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config", {})

    @property
    def blocks(self) -> list[BlockRecord]:
        return [BlockRecord(**b) for b in self.meta.get("blocks", [])]

    def records(self) -> list[MatrixRecord]:
        if self._records is None:
            path = self.path / "records.json"
            if not path.exists():
                self._records = []
                return self._records
            try:
                raw = json.loads(path.read_text())
                recs = [MatrixRecord.from_dict(d) for d in raw]
                npz_path = self.path / "arrays.npz"
                if npz_path.exists():
                    with np.load(npz_path) as npz:
                        attach_arrays(recs, npz)
            except (ValueError, TypeError, KeyError, OSError) as e:
                raise EngineError(f"run {self.name!r} has unreadable records ({e})") from e
            self._records = recs
        return self._records


def load_run(path: str | Path) -> Run:
    path = Path(path)
    meta_path = path / "run.json"
    if not meta_path.exists():
        return Run(path, {"status": "running", "error": "no run.json (interrupted before the run started writing)"})
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("run.json is not an object")
    except (ValueError, OSError) as e:
        return Run(path, {"status": "failed", "error": f"unreadable run.json ({e})"})
    return Run(path, meta)


class RunStore:
    """A folder of run directories (default: ./runs, or $WANDA_RUNS)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get("WANDA_RUNS", "runs")).resolve()

    def list(self) -> list[Run]:
        if not self.root.exists():
            return []
        runs = [load_run(p) for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(runs, key=lambda r: (r.meta.get("created", ""), r.name), reverse=True)

    def path_for(self, name: str) -> Path:
        return self.root / check_run_name(name)

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

    def delete(self, name: str) -> None:
        path = self.path_for(name)
        if not path.is_dir():
            raise EngineError(f"no run named {name!r} in {self.root}")
        shutil.rmtree(path)

    def rename(self, name: str, new_name: str) -> None:
        src, dst = self.path_for(name), self.path_for(new_name)
        if not src.is_dir():
            raise EngineError(f"no run named {name!r} in {self.root}")
        if dst.exists():
            raise EngineError(f"a run named {new_name!r} already exists")
        os.rename(src, dst)
        meta_path = dst / "run.json"
        if meta_path.exists():  # keep the name recorded inside the run in step with its folder
            run = load_run(dst)
            if "name" in run.meta:
                atomic_write_json(meta_path, {**run.meta, "name": new_name})
