"""Text files and uploads as text: bytes -> str, or one sentence saying why not.

Torch-free, so that the app's server can check an upload without loading the engine's heavy parts.
"""
from __future__ import annotations

from pathlib import Path

from ..core.errors import DataError

MAX_TEXT_BYTES = 200 * 1024 * 1024


def read_text_file(path: Path) -> str:
    """A text file as str; DataError if missing, not a file, over MAX_TEXT_BYTES, binary, not UTF-8 or empty."""
    if not path.exists():
        raise DataError(f"text file {str(path)!r} does not exist")
    if not path.is_file():
        raise DataError(f"{str(path)!r} is not a file")
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise DataError(f"text file {path.name!r} is {size / 2**20:.0f} MB; files over {MAX_TEXT_BYTES // 2**20} MB are refused")
    return decode_text(path.read_bytes(), path.name)


def decode_text(data: bytes, name: str) -> str:
    """Bytes of a text file -> str; DataError if binary, not UTF-8, or empty. (Also checks uploads.)"""
    if b"\x00" in data:
        raise DataError(f"{name!r} is a binary file, not UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name!r} is not valid UTF-8 text (bad byte at offset {e.start})") from None
    if not text.strip():
        raise DataError(f"text file {name!r} is empty")
    return text
