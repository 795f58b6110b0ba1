"""Where the engine keeps what it computes once (the embedded model's fp32 copy, dense results, task
indexes): $WANDA_CACHE, or ~/.cache/wanda_engine; and the checks of a place a command is asked to write to
(`new_folder`, `new_file`, `folder_or_none`), made before anything is written. Torch-free."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


def cache_dir() -> Path:
    return Path(os.environ.get("WANDA_CACHE", Path.home() / ".cache" / "wanda_engine"))


def _writable_parent(path: Path, what: str) -> None:
    """ConfigError unless the nearest existing folder above `path` is one this user can write in."""
    parent = next((p for p in path.absolute().parents if p.exists()), Path(path.absolute().anchor))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {str(path)!r} cannot be written: {str(parent)!r} is not a folder you can write in")


def new_folder(text: str | os.PathLike, what: str) -> Path:
    """`text` as a folder to write `what` into: nothing there yet, or an empty folder, under a folder this user
    can write in. ConfigError (one sentence naming `what`) otherwise; nothing is created."""
    path = Path(str(text).strip()).expanduser()
    if not str(text).strip():
        raise ConfigError(f"{what} needs a folder")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"{what} {str(path)!r} already exists and is not empty; name a new folder")
    _writable_parent(path, what)
    return path


def new_file(text: str | os.PathLike, what: str) -> Path:
    """`text` as a file to write `what` into (an existing file is replaced), under a folder this user can write
    in. ConfigError (one sentence naming `what`) otherwise; nothing is created."""
    path = Path(str(text).strip()).expanduser()
    if not str(text).strip():
        raise ConfigError(f"{what} needs a file name")
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder, not a file")
    _writable_parent(path, what)
    return path


def usable_folder(text: str | os.PathLike, what: str) -> Path:
    """`text` as a folder that exists or can be made (a run store): ConfigError when it is a file or cannot be
    written."""
    path = Path(str(text).strip()).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a file, not a folder")
    if not path.exists():
        _writable_parent(path, what)
    return path
