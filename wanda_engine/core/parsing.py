"""How a user writes a value, read once for every face (the CLI, the app's forms, the sweep, run.json): fractions
('0.5' or '50%'), lists of values, N:M patterns, dtypes, memory sizes, run names. Each refusal is one ConfigError
sentence that says what to write instead.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

# Spellings accepted for each dtype; the first of each pair is the canonical name.
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}
_RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_name(name: str) -> str:
    """A run name is a plain folder name: letters, digits, '.', '_', '-'; no path parts."""
    if not isinstance(name, str) or not _RUN_NAME_RE.fullmatch(name) or ".." in name:  # fullmatch: "$" would allow "x\n"
        raise ConfigError(
            f"run name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def canonical_dtype(dtype: str) -> str:
    """'fp16' -> 'float16'; ConfigError for a dtype the engine does not load."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def parse_fraction(text: str | float, what: str = "sparsity") -> float:
    """A fraction as a user writes it, '0.5' or '50%', -> 0.5 (the CLI, the sweep and the app all read it here).

    A bare number of 1 or more is refused rather than read as a percentage: '1' could mean 1% or all of it, and a
    run must not guess what it prunes."""
    text = str(text).strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a number; write a fraction such as 0.5 or a percentage such as 50%") from None
    if value >= 1 and not text.endswith("%"):
        raise ConfigError(f"{what} {text} is not a fraction below 1; for {text}% write {value / 100:g} or {text}%")
    return value


def parse_list(text: str, what: str, parse_one: Callable[[str], Any] = str) -> list[Any]:
    """'0.5, 0.6 70%' -> [parse_one('0.5'), ...]: the values of one sweep axis, separated by commas, semicolons or
    spaces; a value `parse_one` cannot read is refused naming `what`."""
    out = []
    for part in re.split(r"[,;\s]+", str(text or "").strip()):
        if not part:
            continue
        try:
            out.append(parse_one(part))
        except ConfigError as e:
            raise ConfigError(f"{what}: {e}") from None
        except ValueError:
            raise ConfigError(f"{what}: {part!r} is not a valid value") from None
    return out


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """'unstructured' -> None; 'N:M' -> (N, M) with 0 < N < M. Raises ConfigError otherwise."""
    if pattern == "unstructured":
        return None
    parts = str(pattern).split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"pattern must be 'unstructured' or 'N:M' with integers N < M, got {pattern!r}")
    n, m = int(parts[0]), int(parts[1])
    if not 0 < n < m:
        raise ConfigError(f"pattern {pattern!r}: N:M needs 0 < N < M (N weights pruned in every M consecutive inputs)")
    return n, m


_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'300MiB', '2GB', '1.5GiB' -> bytes. Raises ConfigError otherwise."""
    value = str(text).strip()
    number = value.rstrip("KMGTiBkmgtib ")
    unit = value[len(number):].strip().upper()
    try:
        size = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise ConfigError(f"a memory size is a number and a unit (B, KB, MB, GB, KiB, MiB, GiB), got {text!r}") from None
    if size <= 0:
        raise ConfigError(f"a memory size must be positive, got {text!r}")
    return int(size)


DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N


def check_device(device: Any, what: str = "device") -> str:
    """`device` when torch can be asked for it (auto, cpu, cuda, cuda:N, mps); else ConfigError naming `what`."""
    text = str(device) if isinstance(device, str) else ""
    index = text.removeprefix("cuda:")
    if text not in DEVICES and not (text.startswith("cuda:") and index.isdigit()):
        raise ConfigError(f"{what} must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    return text
