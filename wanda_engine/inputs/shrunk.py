"""A structurally pruned model's config, and the smallest honest loader for the one case transformers cannot load.

Where every block keeps the same widths, `align_config` writes them into the model's own config
(num_attention_heads, num_key_value_heads, head_dim, the MLP width, the bias flags, num_hidden_layers) and checks, by
building the architecture from it on the meta device, that it describes every tensor's shape: such a folder loads
with `AutoModelForCausalLM.from_pretrained(DIR)` and no project code.

Where widths differ per block (global allocation), transformers 5.x cannot: its `per_layer_config` is read by a few
architectures' modeling code only, and Llama's (like Qwen2's and Mistral's) reads `config.intermediate_size` once
for all layers. Such a folder keeps the dense config and adds SHRINK_FILE, each block's head and channel counts;
`load_shrunk` builds the dense architecture, narrows each block to its counts and loads the safetensors into it (no
pickle; every tensor must be present, or it refuses). Plain `from_pretrained` refuses that folder with a size
mismatch, never loading it wrong.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.initialization import no_init_weights

from ..core.errors import ConfigError, ModelLoadError
from .anatomy import BIAS_FLAGS, BlockAnatomy, block_anatomy, keep_channels, keep_groups
from .layers import find_blocks

SHRINK_FILE = "shrink.json"
LOADER = "wanda_engine.inputs.shrunk.load_shrunk"
FORMAT = 1
_CHANNEL_KEYS = ("intermediate_size", "ffn_dim", "n_inner")  # where a config keeps its MLP width


def meta_model(config: Any) -> nn.Module:
    """The architecture `config` describes, built on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _with(config: Any, changes: dict[str, Any]) -> Any:
    config = copy.deepcopy(config)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def _biased(config: Any, names: list[str]) -> set[str]:
    model = meta_model(config)
    return {n for n in names if getattr(model.get_submodule(n), "bias", None) is not None}


def bias_flags(model: nn.Module, layers: list[str]) -> dict[str, bool]:
    """The config flags that give `layers` (full names) a bias in this architecture where its config gives them none,
    e.g. {'mlp_bias': True}; ConfigError naming the first layer no flag of the config can give one (FLAP's
    compensation needs it)."""
    needed = sorted(set(layers) - _biased(model.config, layers))
    flags = {}
    for flag in (f for f in BIAS_FLAGS if getattr(model.config, f, None) is False):
        if needed and _biased(_with(model.config, {flag: True}), needed):
            flags[flag] = True
    missing = sorted(set(needed) - (_biased(_with(model.config, flags), needed) if flags else set()))
    if missing:
        raise ConfigError(f"bias compensation needs a bias on {missing[0]}, which {type(model).__name__}'s config "
                          f"cannot give it (no flag among {', '.join(BIAS_FLAGS)} does); run without bias compensation")
    return flags


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def uniform_anatomy(model: nn.Module, model_name: str) -> BlockAnatomy | None:
    """The blocks' common anatomy when every block has the same heads, head_dim and MLP channels; else None."""
    _, blocks = find_blocks(model)
    anatomies = {block_anatomy(block, model.config, model_name) for block in blocks}
    return anatomies.pop() if len(anatomies) == 1 else None


def standard_changes(model: nn.Module, anatomy: BlockAnatomy | None) -> dict[str, Any] | None:
    """The config changes that describe `model`'s blocks (`anatomy`: every block's widths; None when only blocks were
    removed, which `remove_blocks` wrote already), if the architecture built from the changed config has exactly
    `model`'s tensors; else None."""
    changes: dict[str, Any] = {}
    if anatomy is not None:
        changes.update(num_attention_heads=anatomy.heads, head_dim=anatomy.head_dim)
        if hasattr(model.config, "num_key_value_heads"):
            changes["num_key_value_heads"] = anatomy.kv_heads
        key = next((k for k in _CHANNEL_KEYS if isinstance(getattr(model.config, k, None), int)), None)
        if key is None:
            return None
        changes[key] = anatomy.channels
    try:
        return changes if _shapes(meta_model(_with(model.config, changes))) == _shapes(model) else None
    except (ValueError, TypeError, AttributeError):  # the config refuses those widths (e.g. heads × head_dim ≠ hidden)
        return None


def _apply(config: Any, changes: dict[str, Any]) -> None:
    """Change the model's own config in place: its modules hold it (attention reads its implementation there)."""
    for key, value in changes.items():
        setattr(config, key, value)


def align_config(model: nn.Module, model_name: str) -> bool:
    """After width removal: write the blocks' common widths into the model's config where a standard config can say
    them (the model in memory is then what `from_pretrained` of its saved folder builds); False where widths differ
    per block or the architecture's config cannot take them."""
    anatomy = uniform_anatomy(model, model_name)
    changes = standard_changes(model, anatomy) if anatomy is not None else None
    if changes is not None:
        _apply(model.config, changes)
    return changes is not None


def save_pruned(model: nn.Module, tokenizer: Any, folder: str | Path, width: bool, **save_kwargs: Any) -> str:
    """Save a structurally pruned model with save_pretrained, its config naming the biases compensation added; returns
    how the folder loads: 'from_pretrained', or LOADER (with SHRINK_FILE) where widths differ per block."""
    name = type(model).__name__
    flags = bias_flags(model, [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.bias is not None])
    add_zero_biases(model, flags)
    _apply(model.config, flags)
    per_block = width and not align_config(model, name)
    if not per_block and standard_changes(model, None) is None:
        raise ModelLoadError(f"{name}'s config cannot describe the pruned model; it was not saved")
    model.save_pretrained(folder, safe_serialization=True, **save_kwargs)
    tokenizer.save_pretrained(folder)
    if per_block:
        (Path(folder) / SHRINK_FILE).write_text(json.dumps(shrink_spec(model, name), indent=1))
    return LOADER if per_block else "from_pretrained"


def add_zero_biases(model: nn.Module, flags: dict[str, bool]) -> None:
    """Give every linear that the architecture with `flags` has a bias on, and `model` lacks, a zero bias, so that
    the model's tensors are what its saved config describes (Llama's attention_bias covers q, k, v and o)."""
    if not flags:
        return
    reference = meta_model(_with(model.config, flags))
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.bias is None and \
                getattr(reference.get_submodule(name), "bias", None) is not None:
            module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype,
                                                   device=module.weight.device),
                                       requires_grad=module.weight.requires_grad)


def shrink_spec(model: nn.Module, model_name: str) -> dict[str, Any]:
    """SHRINK_FILE's content: each block's head and channel counts (the loader narrows the dense blocks to them)."""
    blocks_path, blocks = find_blocks(model)
    widths = []
    for block in blocks:
        a = block_anatomy(block, model.config, model_name)
        widths.append({"heads": a.heads, "kv_heads": a.kv_heads, "head_dim": a.head_dim, "channels": a.channels})
    return {"format": FORMAT, "loader": LOADER, "blocks_path": blocks_path, "blocks": widths,
            "why": "widths differ per block, which this architecture's config cannot say; "
                   "load with wanda_engine.inputs.shrunk.load_shrunk(folder)"}


def _state(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder} holds no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def load_shrunk(folder: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """The model saved in `folder` with per-block widths (SHRINK_FILE): the dense architecture from its config
    (uninitialised), each block narrowed to its saved counts, then every saved tensor loaded into it; in eval mode.

    ModelLoadError when the folder is not such a model or a tensor is missing, unexpected or of another shape."""
    folder = Path(folder)
    spec = json.loads((folder / SHRINK_FILE).read_text())
    if spec.get("format") != FORMAT:
        raise ModelLoadError(f"{folder / SHRINK_FILE} has format {spec.get('format')!r}; this loader reads {FORMAT}")
    config = AutoConfig.from_pretrained(folder)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, **({"dtype": dtype} if dtype is not None else {}))
    blocks_path, blocks = find_blocks(model)
    if blocks_path != spec["blocks_path"] or len(blocks) != len(spec["blocks"]):
        raise ModelLoadError(f"{folder / SHRINK_FILE} describes {len(spec['blocks'])} blocks at {spec['blocks_path']}, "
                             f"the config {len(blocks)} at {blocks_path}")
    for block, widths in zip(blocks, spec["blocks"]):
        anatomy = block_anatomy(block, config, type(model).__name__)
        anatomy = keep_groups(block, anatomy, torch.arange(widths["kv_heads"]))
        keep_channels(block, anatomy, torch.arange(widths["channels"]))
    state, expected = _state(folder), model.state_dict()
    tied = {name for name in expected if name not in state and _is_tied(model, name)}
    wrong = [n for n, t in expected.items() if n in state and tuple(state[n].shape) != tuple(t.shape)]
    if set(state) | tied != set(expected) or wrong:
        raise ModelLoadError(f"the weights in {folder} do not match the widths in its {SHRINK_FILE}"
                             + (f" ({wrong[0]})" if wrong else ""))
    model.load_state_dict({n: t.to(expected[n].dtype) for n, t in state.items()}, strict=False)
    model.tie_weights()
    return model.eval()


def _is_tied(model: nn.Module, name: str) -> bool:
    """Whether `name` (a state-dict key) is the output embedding tied to the input embedding (saved once)."""
    out = model.get_output_embeddings()
    return bool(getattr(model.config, "tie_word_embeddings", False)) and out is not None and \
        name.rpartition(".")[0] == next((n for n, m in model.named_modules() if m is out), None)
