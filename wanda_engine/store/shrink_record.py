"""What a structure remover took out (`StructureRecord`) and what the run measured of the dense and the pruned
model's speed (`SpeedRecord`): run.json's "structure" and "speed", typed and torch-free so that the app's pages and
the figures read them without loading a model.

Every number says what it counts: parameters are the decoder blocks' (all their tensors, norms included) unless
named `model_`; speeds are medians over interleaved repeats in one process, on the device, threads and dtype named
in the record; FLOPs are matmul FLOPs per token (2 per weight of every linear in the blocks and of the LM head).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


def typed_record(cls: type, d: Mapping[str, Any], **nested: Any) -> Any:
    """cls from the keys of `d` it knows (lists become tuples), `nested` overriding."""
    known = {f.name for f in fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
    return cls(**{**values, **nested})


class FlatRecord:
    """JSON for a record of scalars and tuples of scalars: tuples are written as lists and read back as tuples."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Any:
        return typed_record(cls, d)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ScoreHistogram(FlatRecord):
    """The scores of one kind of structure (head groups, MLP channels, blocks), split into kept and removed on
    shared bins, with the cut-off: the highest score removed (None when none was)."""

    structure: str  # 'KV group', 'MLP channel' or 'block'
    scale: str  # what the bins count: 'log10 score' (raw scores) or 'asinh(standardized score)' (global
    # allocation: asinh keeps the bulk on the bins, the tail on the axis) or 'block influence' (depth)
    edges: tuple[float, ...]
    kept: tuple[int, ...]
    removed: tuple[int, ...]
    cutoff: float | None  # on the bins' scale


@dataclass(frozen=True)
class BlockShrink:
    """One decoder block of the dense model and what it kept."""

    block: int  # its index in the dense model
    removed: bool  # the whole block went (depth)
    params_dense: int
    params_kept: int
    heads: int = 0  # query heads of the dense block (0 for depth)
    kv_heads: int = 0
    head_dim: int = 0
    heads_kept: tuple[int, ...] = ()  # the dense indices of the query heads kept
    channels: int = 0  # MLP channels of the dense block
    channels_kept: int = 0
    group_scores: tuple[float, ...] = ()  # one per KV group, on the scale the selection compared
    channel_scores: ScoreHistogram | None = None  # this block's MLP channels, kept and removed
    influence: float | None = None  # depth: ShortGPT's block influence, 1 − mean cos(x_in, x_out)

    @property
    def removed_fraction(self) -> float:
        return 1 - self.params_kept / self.params_dense if self.params_dense else 0.0

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "BlockShrink":
        hist = d.get("channel_scores")
        return typed_record(cls, d, channel_scores=ScoreHistogram.from_json(hist) if hist else None)

    def to_json(self) -> dict[str, Any]:
        return {**FlatRecord.to_json(self), "channel_scores": self.channel_scores.to_json() if self.channel_scores else None}


@dataclass(frozen=True)
class StructureRecord:
    """What a structure remover took out of the decoder blocks, and how it chose."""

    method: str
    structure: str  # 'width' or 'depth'
    allocation: str  # 'uniform' or 'global'
    target: str  # 'params' (fraction of the blocks' parameters) or 'per-block' (the published pruning_ratio)
    ratio: float  # what the run asked
    bias_compensation: bool
    grouping: str  # how heads were removed, in words: whole KV groups, and why
    removed_fraction: float  # exactly achieved: 1 − blocks' parameters kept / dense
    block_params_dense: int
    block_params_kept: int
    model_params_dense: int
    model_params_kept: int
    blocks: tuple[BlockShrink, ...]
    distributions: tuple[ScoreHistogram, ...]  # each kind of structure over all blocks
    scored_dense_first: bool  # global allocation and depth: every block scored on the dense model before any pruning
    loader: str | None = None  # how the saved folder loads: 'from_pretrained' or 'wanda_engine.inputs.shrunk'

    @property
    def removed_blocks(self) -> tuple[int, ...]:
        return tuple(b.block for b in self.blocks if b.removed)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "StructureRecord":
        return typed_record(cls, d, blocks=tuple(BlockShrink.from_json(b) for b in d.get("blocks") or ()),
                      distributions=tuple(ScoreHistogram.from_json(h) for h in d.get("distributions") or ()))

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(blocks=[b.to_json() for b in self.blocks], distributions=[h.to_json() for h in self.distributions],
                   removed_blocks=list(self.removed_blocks))
        return out


@dataclass(frozen=True)
class SpeedSample(FlatRecord):
    """One model's measurement (medians over the repeats; each repeat's seconds kept)."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    prefill_s: tuple[float, ...]
    decode_s: tuple[float, ...]
    params: int  # every parameter of the model
    weight_bytes: int  # their bytes as stored
    flops_per_token: int  # matmul FLOPs per token: 2 × weights of the blocks' linears and the LM head
    kv_cache_bytes: int  # the KV cache after the decode (prompt + new tokens)
    peak_device_bytes: int | None  # CUDA: max allocated during this model's measurement; None on a CPU
    pid: int  # the process that measured it


@dataclass(frozen=True)
class SpeedRecord:
    """The dense and the pruned model's speed, measured in one process, interleaved, on the run's device."""

    device: str  # e.g. 'cpu (x86_64)' or 'cuda:0 (NVIDIA H100 80GB HBM3)'
    threads: int  # torch's intra-op threads
    dtype: str
    prefill_batch: int
    prefill_tokens: int  # per sequence: the evaluation window length
    prompt_tokens: int  # the decode's prompt
    decode_tokens: int  # greedy new tokens, batch 1, with the KV cache
    repeats: int
    order: str  # how the two models took turns
    dense: SpeedSample
    pruned: SpeedSample

    @property
    def prefill_speedup(self) -> float:
        return self.pruned.prefill_tokens_per_s / self.dense.prefill_tokens_per_s

    @property
    def decode_speedup(self) -> float:
        return self.pruned.decode_tokens_per_s / self.dense.decode_tokens_per_s

    @property
    def ideal_speedup(self) -> float:
        """Dense matmul FLOPs per token over the pruned model's (weights stored densely count, zeros included)."""
        return self.dense.flops_per_token / self.pruned.flops_per_token

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SpeedRecord":
        return typed_record(cls, d, dense=SpeedSample.from_json(d["dense"]), pruned=SpeedSample.from_json(d["pruned"]))

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(dense=self.dense.to_json(), pruned=self.pruned.to_json(),
                   prefill_speedup=round(self.prefill_speedup, 4), decode_speedup=round(self.decode_speedup, 4),
                   ideal_speedup=round(self.ideal_speedup, 4))
        return out
