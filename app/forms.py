"""Turning the Prune page's widget values into engine requests, and saving uploads. No Streamlit.

Every user mistake raises an EngineError subclass with one sentence; the page shows `str(e)`. Which
settings go together is the configs' rule (PruneConfig refuses a bad combination, naming the field):
this module only translates widget values.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wanda_engine.config import EvalConfig, GenerateRequest, PruneConfig, RunRequest, SpeedConfig, ZeroShotConfig
from wanda_engine.core.parsing import check_run_name, parse_pattern
from wanda_engine.inputs.texts import decode_text
from wanda_engine.methods import table
from wanda_engine.core.errors import ConfigError, DataError
from wanda_engine.store.run_store import RunStore, atomic_write_bytes

# What the first-time visitor gets: the embedded model at small settings (the Prune page says what runs alike took here).
DEFAULTS: dict[str, Any] = {
    "model_kind": "default", "model_text": "", "method": "wanda", "sparsity": 0.5, "pattern": "unstructured",
    "custom_nm": "", "group": "default", "calib": "default", "nsamples": 16, "seqlen": 256, "seed": 0,
    "eval_dataset": "default", "eval_seqlen": 512, "eval_windows": 10, "run_name": "",
    "layerwise": "uniform", "weight_update": "none",
    "zs_tasks": [], "zs_task_dir": "", "zs_limit": 0,  # zero-shot (lm-eval): off unless tasks are chosen
}
MODEL_KINDS = {"default": "Embedded default (SmolLM2-135M)", "hf": "Hugging Face id", "folder": "Local folder"}
LAYERWISE = {"uniform": "Uniform (every block the same)", "owl": "OWL (fewer pruned where outliers are)"}
WEIGHT_UPDATES = {"none": "None (the kept weights stay as they are)", "obs": "OBS reconstruction"}
WEIGHT_UPDATE_HELP = "SparseGPT's update of the kept weights on this mask; the mask is unchanged."
PATTERNS = {"unstructured": "Unstructured", "2:4": "2:4 (semi-structured)", "4:8": "4:8", "custom": "Custom N:M"}
GROUPS = {"default": "Reference default", "row": "Per output row", "matrix": "Whole matrix"}
CALIB_SOURCES = {"default": "Default text (Jane Austen, Emma)", "wikitext2": "WikiText-2 (train)", "c4": "C4 (train shard)",
                 "upload": "Uploaded .txt file"}
EVAL_SOURCES = {"default": "Default text (Pride and Prejudice)", "wikitext2": "WikiText-2 (test)",
                "c4": "C4 (validation)", "none": "None (skip perplexity)"}
UPLOAD_DIR = ".uploads"
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """An uploaded file as the page receives it."""

    name: str
    data: bytes


def method_choices() -> dict[str, str]:
    """The Method box's choices and their labels, from the table of methods (a variant is a choice of its own)."""
    return table.choices()


def model_source(kind: str, text: str = "") -> str:
    if kind == "default":
        return "default"
    text = (text or "").strip()
    if not text:
        what = "a Hugging Face model id (like HuggingFaceTB/SmolLM2-135M)" if kind == "hf" else "the path of a local model folder"
        raise ConfigError(f"model: enter {what}, or choose the embedded default")
    if kind == "folder":
        path = Path(text).expanduser()
        if not path.is_dir():
            raise ConfigError(f"model: the folder {text!r} does not exist")
        if not (path / "config.json").is_file():
            raise ConfigError(f"model: the folder {text!r} holds no config.json, so it is not a saved model")
        return str(path.resolve())
    if kind == "hf":
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?", text):
            raise ConfigError(f"model: {text!r} is not a Hugging Face id (owner/name)")
        return text
    raise ConfigError(f"model: unknown kind {kind!r}")


def pattern_value(pattern: str, custom: str = "") -> str:
    if pattern != "custom":
        return pattern
    custom = (custom or "").strip().replace(" ", "")
    if not custom:
        raise ConfigError("pattern: enter a custom N:M pattern such as 2:4 (N of every M consecutive inputs pruned)")
    parse_pattern(custom)  # raises ConfigError with one sentence
    return custom


def sanitise_filename(name: str) -> str:
    """A plain file name ending in .txt: no folders, only letters, digits, '.', '_' and '-'."""
    stem = Path(str(name or "").replace("\\", "/")).name
    if stem.lower().endswith(".txt"):
        stem = stem[:-4]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:90] or "upload"
    return f"{stem}.txt"


def save_upload(upload: Upload, store: RunStore) -> Path:
    """Check an uploaded calibration text (size, not binary, UTF-8, not empty) and save it under .uploads/."""
    data = upload.data
    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(f"calibration upload {upload.name!r} is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    decode_text(data, upload.name)
    folder = store.root / UPLOAD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:10]
    path = folder / f"{digest}-{sanitise_filename(upload.name)}"
    if path.resolve().parent != (store.root / UPLOAD_DIR).resolve() or not path.resolve().is_relative_to(store.root.resolve()):
        raise DataError(f"calibration upload {upload.name!r} would be written outside the data folder; refused")
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


def build_request(values: dict[str, Any], store: RunStore, upload: Upload | None = None,
                  method: str | None = None, sparsity: float | None = None) -> RunRequest:
    """The run the form describes; `method`/`sparsity` override (the comparison preset and sweeps)."""
    v = {**DEFAULTS, **values}
    if method is not None:
        v["method"] = method
    if sparsity is not None:
        v["sparsity"] = sparsity
    source = model_source(v["model_kind"], v["model_text"])
    pattern = pattern_value(v["pattern"], v["custom_nm"])
    nm = parse_pattern(pattern)
    method, variant = table.parse_choice(v["method"])
    group = None if v["group"] == "default" else v["group"]
    if v["calib"] == "upload" and upload is None:
        raise DataError("calibration: upload a .txt file, or choose another calibration source")
    prune = PruneConfig(method=method.name, variant=variant, sparsity=nm[0] / nm[1] if nm else float(v["sparsity"]),
                        pattern=pattern, group=group, nsamples=int(v["nsamples"]), seqlen=int(v["seqlen"]),
                        seed=int(v["seed"]), calib=v["calib"], device="auto",
                        # the widget is disabled for N:M patterns (every block is N/M) but keeps its value
                        layerwise="uniform" if nm else v.get("layerwise") or "uniform",
                        weight_update=v.get("weight_update") or "none")
    if v["calib"] == "upload":  # saved once the settings are known to go together
        prune = replace(prune, calib=str(save_upload(upload, store)))
    ev = None if v["eval_dataset"] == "none" else EvalConfig(dataset=v["eval_dataset"], seqlen=int(v["eval_seqlen"]),
                                                             windows=int(v["eval_windows"]) or None)
    name = (v.get("run_name") or "").strip() or None
    if name is not None:
        check_run_name(name)
        if store.path_for(name).exists():
            raise ConfigError(f"run name {name!r} is taken; choose another or leave it empty")
    return RunRequest(model=source, prune=prune, eval=ev, name=name, zeroshot=zeroshot_config(v))


def zeroshot_config(v: dict[str, Any]) -> ZeroShotConfig | None:
    """The form's zero-shot settings; None when no task is chosen (the default: zero-shot is off)."""
    tasks = tuple(v.get("zs_tasks") or ())
    folder = (v.get("zs_task_dir") or "").strip()
    if not tasks:
        return None
    if folder and not Path(folder).expanduser().is_dir():
        raise ConfigError(f"zero-shot task folder {folder!r} does not exist")
    return ZeroShotConfig(tasks=tasks, task_dir=str(Path(folder).expanduser().resolve()) if folder else None,
                          limit=int(v.get("zs_limit") or 0) or None)


# The Shrink page's settings (its model, calibration and evaluation are the Prune page's).
SHRINK_DEFAULTS: dict[str, Any] = {"method": "flap", "ratio": 0.2, "target": "params", "allocation": "uniform",
                                   "bias": True, "speed": True, "decode_tokens": SpeedConfig().decode_tokens,
                                   "repeats": SpeedConfig().repeats}
TARGETS = {"params": "of the decoder blocks' parameters", "per-block": "of every block's heads and channels "
                                                                      "(the published tables' pruning_ratio)"}
ALLOCATIONS = {"uniform": "Uniform (the same widths in every block)", "global": "Global (FLAP: blocks compete)"}
# The Shrink page's comparison at its ratio: every structure remover beside unstructured Wanda at 50%.
COMPARED_MASK = ("wanda", 0.5)


def shrink_request(values: dict[str, Any], shrink: dict[str, Any], store: RunStore,
                   method: str | None = None) -> RunRequest:
    """The Shrink page's run: the Prune form's model, calibration and evaluation (`values`), a structure remover at
    the Shrink page's settings (`shrink`; `method` overrides), or, for a mask method, the same calibration at its own
    settings; the speed measured if asked."""
    v, s = {**DEFAULTS, **values}, {**SHRINK_DEFAULTS, **shrink}
    if v["calib"] == "upload":
        raise ConfigError("the Shrink page cannot use an uploaded calibration file; choose another calibration text "
                          "on the Prune page")
    chosen = table.get(method or s["method"])
    plain = {**v, "pattern": "unstructured", "group": "default", "layerwise": "uniform", "weight_update": "none"}
    request = build_request(plain, store, method=chosen.name,
                            sparsity=float(s["ratio"]) if chosen.removes else COMPARED_MASK[1])
    if chosen.removes is not None:
        width = chosen.removes.value == "width"
        request = replace(request, prune=replace(request.prune, target=s["target"], allocation=s["allocation"] if width
                                                 else "uniform", bias_compensation=bool(s["bias"]) and width))
    speed = SpeedConfig(int(s["decode_tokens"]), int(s["repeats"])) if s["speed"] else None
    return replace(request, speed=speed)


def compare_shrink_requests(values: dict[str, Any], shrink: dict[str, Any], store: RunStore) -> list[RunRequest]:
    """The published comparison at the Shrink page's ratio and target: every structure remover (FLAP with its bias
    compensation, the others without, as in An et al.'s tables), then unstructured Wanda at 50%, each measuring its
    speed: one look at what each kind of pruning buys (the frontier)."""
    return [shrink_request({**values, "run_name": ""}, {**shrink, "speed": True, "bias": name == "flap"}, store,
                           method=name) for name in (*table.removers(), COMPARED_MASK[0])]


def generate_request(prompt: str, runs: list[str], max_new_tokens: int, dense: bool, temperature: float, seed: int,
                     name: str) -> GenerateRequest:
    """The Generate page's widgets as a request; ConfigError, one sentence, for a bad one."""
    return GenerateRequest(prompt=prompt, runs=tuple(runs), max_new_tokens=int(max_new_tokens), dense=bool(dense),
                           temperature=float(temperature), seed=int(seed), name=name)
