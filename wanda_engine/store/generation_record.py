"""One prompt continued by the dense model and by pruned runs, side by side (`GenerationRecord`), kept in the run
store's hidden folder `.generations/<name>.json` (never listed as a run). Torch-free: the app's Generate page and
the CLI read it without loading a model.

Every number says what it measured: tokens/s are one generation's, on the device, threads and dtype named in the
record, after an untimed warm-up; they are a record of what happened, not a benchmark (bench/shrink.py and a run's
speed record are).
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..core.errors import EngineError
from ..core.parsing import check_run_name
from .run_store import atomic_write_json
from .shrink_record import FlatRecord, typed_record

GENERATIONS_DIR = ".generations"
FORMAT = 1


@dataclass(frozen=True)
class GeneratedText(FlatRecord):
    """One model's continuation of the prompt."""

    model: str  # 'dense', or the run's name
    label: str  # 'dense', or the run's label: 'magnitude 50%', 'flap+bias 20%'
    source: str  # where the model came from: the dense model, a saved folder, or re-created from the record
    mask_verified: bool | None  # its mask equals the run's mask_sha256 (None: the dense model, or none recorded)
    params: int  # every parameter of the model as it ran
    tokens: tuple[int, ...]  # the new tokens' ids
    text: str  # the new tokens decoded
    stopped: str  # 'max_new_tokens' or 'eos'
    prefill_s: float  # the prompt's forward pass, which gives the first new token
    decode_s: float  # every later token, one forward pass each with the KV cache
    pid: int  # the process that generated it

    @property
    def seconds(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def tokens_per_s(self) -> float:
        """New tokens over the whole generation's seconds (prefill included)."""
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over their seconds; None with a single new token."""
        return (len(self.tokens) - 1) / self.decode_s if len(self.tokens) > 1 and self.decode_s > 0 else None


@dataclass(frozen=True)
class GenerationRecord:
    """The prompt, how it was continued, and each model's continuation (the dense model first)."""

    name: str
    created: str
    prompt: str
    prompt_tokens: int
    max_new_tokens: int
    temperature: float  # 0: greedy
    seed: int
    model: str  # the dense model, as its label says
    device: str  # e.g. 'cpu (x86_64)'
    threads: int
    dtype: str
    warmup: str  # what ran untimed before each generation
    outputs: tuple[GeneratedText, ...]
    format: int = FORMAT

    @property
    def decoding(self) -> str:
        """'greedy' or 'sampled at temperature 0.7, seed 0'."""
        return "greedy" if self.temperature == 0 else f"sampled at temperature {self.temperature:g}, seed {self.seed}"

    def measured_on(self) -> str:
        """What every tokens/s of the record measured: 'one generation each of up to 32 new tokens (greedy) after a
        9-token prompt, on cpu (x86_64), 2 threads, float32, after an untimed warm-up of 2 tokens'."""
        return (f"one generation each of up to {self.max_new_tokens} new tokens, {self.decoding}, after a "
                f"{self.prompt_tokens}-token prompt, on {self.device}, {self.threads} thread"
                f"{'s' * (self.threads != 1)}, {self.dtype}, {self.warmup}")

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GenerationRecord":
        return typed_record(cls, d, outputs=tuple(GeneratedText.from_json(o) for o in d.get("outputs") or ()))

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["outputs"] = [o.to_json() for o in self.outputs]
        return out


def generations_dir(root: str | Path) -> Path:
    return Path(root) / GENERATIONS_DIR


def generation_path(root: str | Path, name: str) -> Path:
    return generations_dir(root) / f"{check_run_name(name)}.json"


def new_generation_name(root: str | Path) -> str:
    """'gen-YYYYmmdd-HHMMSS', unique in the store."""
    base = time.strftime("gen-%Y%m%d-%H%M%S")
    name, i = base, 1
    while generation_path(root, name).exists():
        i += 1
        name = f"{base}-{i}"
    return name


def save_generation(root: str | Path, record: GenerationRecord) -> Path:
    """Write the record atomically; EngineError if one of that name exists."""
    path = generation_path(root, record.name)
    if path.exists():
        raise EngineError(f"a generation named {record.name!r} already exists in {Path(root)}")
    atomic_write_json(path, record.to_json())
    return path


def load_generation(path: str | Path) -> GenerationRecord:
    """The record in `path`; EngineError in one sentence when it cannot be read."""
    try:
        return GenerationRecord.from_json(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise EngineError(f"no generation record at {path}") from None
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise EngineError(f"the generation record {Path(path).name} cannot be read ({e})") from None


def list_generations(root: str | Path) -> list[GenerationRecord]:
    """Every readable generation record in the store, newest first."""
    folder = generations_dir(root)
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            found.append(load_generation(path))
        except EngineError:
            continue
    return sorted(found, key=lambda r: (r.created, r.name), reverse=True)
