"""A decoder block's heads and MLP channels, found by the names transformers gives its layers, and how to take them
out physically: rows of the layers that produce a structure, columns of the layer that reads it.

A block is mapped when its attention has separate query, key and value projections and one output projection,
and its MLP one or two input projections (gate and up, or fc1) and one output projection (down, or fc2); head_dim
comes from the attention module itself (transformers' attention modules hold it), the head counts from the weights.
Anything else is refused with a sentence naming what was found: a fused q/k/v projection (GPT-2's c_attn,
GPT-NeoX's query_key_value) cannot be split into heads without per-model code, so it is never guessed at.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ConfigError
from .layers import find_linears

# The names transformers' causal LMs give the layers of a head and of an MLP channel.
_QUERY, _KEY, _VALUE = "q_proj", "k_proj", "v_proj"
_ATTENTION_OUT = ("o_proj", "out_proj", "dense")
_MLP = (("down_proj", ("gate_proj", "up_proj")), ("down_proj", ("up_proj",)), ("fc2", ("fc1",)))
# Attributes of attention and MLP modules that transformers' forwards read for the head and channel counts.
_HEAD_COUNTS = ("num_heads", "num_attention_heads")
_KV_HEAD_COUNTS = ("num_key_value_heads", "num_kv_heads")
_CHANNEL_COUNTS = ("intermediate_size", "ffn_dim")
# Config flags that give a family's linears biases (Llama: attention_bias covers q, k, v and o together).
BIAS_FLAGS = ("attention_bias", "mlp_bias", "enable_bias", "bias", "use_bias")


@dataclass(frozen=True)
class BlockAnatomy:
    """Where a block's heads and MLP channels live (names inside the block) and how many it has now."""

    attention: str  # the attention module, e.g. 'self_attn'
    query: str
    key: str
    value: str
    attention_out: str  # reads the heads: o_proj's input channel h·head_dim + d is head h's dimension d
    mlp_in: tuple[str, ...]  # produce the MLP channels (gate, up): one row each
    mlp_out: str  # reads them (down): one column each
    head_dim: int
    heads: int
    kv_heads: int
    channels: int

    @property
    def heads_per_group(self) -> int:
        """Query heads that share one KV head (1 without grouped-query attention)."""
        return self.heads // self.kv_heads

    def group_params(self, block: nn.Module) -> int:
        """Parameters one KV group takes with it: its query heads' and KV head's rows (and biases), o's columns."""
        linears = find_linears(block)
        rows = lambda name, count: count * (linears[name].in_features + (linears[name].bias is not None))  # noqa: E731
        hd = self.head_dim
        return (rows(self.query, self.heads_per_group * hd) + rows(self.key, hd) + rows(self.value, hd)
                + self.heads_per_group * hd * linears[self.attention_out].out_features)

    def channel_params(self, block: nn.Module) -> int:
        """Parameters one MLP channel takes with it: a row of each input projection (and its bias), a column of the
        output projection."""
        linears = find_linears(block)
        return (sum(linears[n].in_features + (linears[n].bias is not None) for n in self.mlp_in)
                + linears[self.mlp_out].out_features)


def _head_dim(module: nn.Module, config: object) -> int | None:
    for value in (getattr(module, "head_dim", None), getattr(config, "head_dim", None)):
        if isinstance(value, int) and value > 0:
            return value
    return None


def _mlp(linears: dict[str, nn.Module], attention: str) -> tuple[str, tuple[str, ...]] | None:
    """(output projection, input projections) of the block's MLP: the first module outside the attention holding
    one of the known pairs (gate/up -> down, up -> down, fc1 -> fc2)."""
    for owner in sorted({name.rpartition(".")[0] for name in linears} - {attention}):
        m = f"{owner}." if owner else ""
        for down, ins in _MLP:
            if m + down in linears and all(m + i in linears for i in ins):
                return m + down, tuple(m + i for i in ins)
    return None


def block_anatomy(block: nn.Module, config: object, model_name: str) -> BlockAnatomy:
    """The heads and MLP channels of `block`; ConfigError naming `model_name`'s layout when it cannot be mapped."""
    linears = find_linears(block)
    found = ", ".join(linears) or "none"
    attention = next((name.rpartition(".")[0] for name in linears if name.rpartition(".")[2] == _QUERY), None)
    prefix = f"{attention}." if attention else ""
    out = next((f"{prefix}{o}" for o in _ATTENTION_OUT if f"{prefix}{o}" in linears), None)
    if attention is None or out is None or not {prefix + _KEY, prefix + _VALUE} <= set(linears):
        raise ConfigError(
            f"width pruning cannot map {model_name}'s attention to heads: its block's linears are {found}, without "
            f"separate query, key and value projections ({_QUERY}, {_KEY}, {_VALUE}) and an output projection "
            f"({', '.join(_ATTENTION_OUT)}); a fused projection is not split by guesswork")
    mlp = _mlp(linears, attention)
    if mlp is None:
        raise ConfigError(f"width pruning cannot map {model_name}'s MLP to channels: its block's linears are {found}, "
                          "without an output projection (down_proj, fc2) and its input projections (gate/up, fc1)")
    names = (prefix + _QUERY, prefix + _KEY, prefix + _VALUE, out, *mlp[1], mlp[0])
    if not all(type(linears[n]) is nn.Linear for n in names):
        raise ConfigError(f"width pruning cannot map {model_name}: its projections are not plain linear layers")
    head_dim = _head_dim(block.get_submodule(attention), config)
    q, k, v, o = (linears[n] for n in names[:4])
    if head_dim is None or q.out_features % head_dim or k.out_features % head_dim or k.out_features != v.out_features \
            or o.in_features != q.out_features or (q.out_features // head_dim) % (k.out_features // head_dim):
        raise ConfigError(f"width pruning cannot map {model_name}'s attention to heads: its projections' widths "
                          f"(q {q.out_features}, k {k.out_features}, v {v.out_features}) are not whole heads of "
                          f"head_dim {head_dim} in whole KV groups")
    return BlockAnatomy(attention, *names[:4], mlp_in=mlp[1], mlp_out=mlp[0], head_dim=head_dim,
                        heads=q.out_features // head_dim, kv_heads=k.out_features // head_dim,
                        channels=linears[mlp[0]].in_features)


def _parameter(data: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    """A new parameter holding `data`: a normal tensor even when made under inference mode (the pruned model is
    used, and may be trained, afterwards), with `like`'s requires_grad."""
    with torch.inference_mode(False), torch.no_grad():
        return nn.Parameter(data.clone().contiguous(), requires_grad=like.requires_grad)


def _keep_rows(layer: nn.Linear, rows: torch.Tensor) -> None:
    layer.weight = _parameter(layer.weight.data.index_select(0, rows.to(layer.weight.device)), layer.weight)
    if layer.bias is not None:
        layer.bias = _parameter(layer.bias.data.index_select(0, rows.to(layer.bias.device)), layer.bias)
    layer.out_features = len(rows)


def _keep_columns(layer: nn.Linear, columns: torch.Tensor) -> None:
    layer.weight = _parameter(layer.weight.data.index_select(1, columns.to(layer.weight.device)), layer.weight)
    layer.in_features = len(columns)


def _set_counts(module: nn.Module, names: Sequence[str], value: int) -> None:
    for name in names:
        if isinstance(getattr(module, name, None), int):
            setattr(module, name, value)


def keep_groups(block: nn.Module, anatomy: BlockAnatomy, groups: torch.Tensor) -> BlockAnatomy:
    """Keep only the KV groups `groups` (sorted indices) of the block's attention: the query heads of each kept group
    and its KV head (q, k, v rows), and those heads' columns of the output projection. Returns the new anatomy."""
    hd, per = anatomy.head_dim, anatomy.heads_per_group
    groups = groups.to(torch.long).sort().values
    heads = (groups.view(-1, 1) * per + torch.arange(per).view(1, -1)).reshape(-1)
    q_rows = (heads.view(-1, 1) * hd + torch.arange(hd).view(1, -1)).reshape(-1)
    kv_rows = (groups.view(-1, 1) * hd + torch.arange(hd).view(1, -1)).reshape(-1)
    linears = find_linears(block)
    _keep_rows(linears[anatomy.query], q_rows)
    _keep_rows(linears[anatomy.key], kv_rows)
    _keep_rows(linears[anatomy.value], kv_rows)
    _keep_columns(linears[anatomy.attention_out], q_rows)
    module = block.get_submodule(anatomy.attention)
    _set_counts(module, _HEAD_COUNTS, len(heads))  # the groups' size, num_key_value_groups, stays as it was
    _set_counts(module, _KV_HEAD_COUNTS, len(groups))
    return dataclasses.replace(anatomy, heads=len(heads), kv_heads=len(groups))


def keep_channels(block: nn.Module, anatomy: BlockAnatomy, channels: torch.Tensor) -> BlockAnatomy:
    """Keep only the MLP channels `channels` (sorted indices): their rows of the input projections, their columns of
    the output projection. Returns the new anatomy."""
    channels = channels.to(torch.long).sort().values
    linears = find_linears(block)
    for name in anatomy.mlp_in:
        _keep_rows(linears[name], channels)
    _keep_columns(linears[anatomy.mlp_out], channels)
    owner = anatomy.mlp_out.rpartition(".")[0]
    _set_counts(block.get_submodule(owner) if owner else block, _CHANNEL_COUNTS, len(channels))
    return dataclasses.replace(anatomy, channels=len(channels))


def add_to_bias(layer: nn.Linear, delta: torch.Tensor) -> None:
    """bias += delta, giving the layer a bias first if it has none."""
    delta = delta.to(layer.weight.device, layer.weight.dtype)
    layer.bias = _parameter(delta if layer.bias is None else layer.bias.data + delta,
                            layer.weight if layer.bias is None else layer.bias)


def remove_blocks(model: nn.Module, blocks_path: str, keep: Sequence[int]) -> None:
    """Delete every decoder block not in `keep`; the kept ones are re-indexed for the KV cache (each module's
    `layer_idx`), and the config's layer count and per-layer types follow."""
    blocks = model.get_submodule(blocks_path)
    kept = [blocks[i] for i in sorted(keep)]
    for index, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = index
    parent, _, name = blocks_path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, nn.ModuleList(kept))
    config = model.config
    if isinstance(getattr(config, "layer_types", None), list) and len(config.layer_types) == len(blocks):
        config.layer_types = [config.layer_types[i] for i in sorted(keep)]
    config.num_hidden_layers = len(kept)
