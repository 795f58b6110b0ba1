"""Calibration activations between blocks: capturing what the model feeds its blocks, and replaying it.

The model runs once per batch of windows with every decoder block replaced by a recorder: block 0's
input hidden states are kept, and for every block the further arguments the model passed it
(attention masks, positions, rotary tables), so any block can later be run on its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.errors import EngineError
from ..inputs.offload import execution_device


class _StopAtBlock(Exception):
    """Raised by the capture hook: the rest of the model need not run."""


@dataclass
class Chunk:
    """A batch of calibration windows at the input of the current block."""

    hidden: torch.Tensor  # [batch, seqlen, hidden]
    calls: list[tuple[tuple, dict[str, Any]]]  # per block: the further args and kwargs it was called with


def _to(obj: Any, device: torch.device, memo: dict[int, Any] | None = None) -> Any:
    """Move tensors inside obj to device; `memo` keeps a tensor shared by several blocks shared."""
    if isinstance(obj, torch.Tensor):
        if memo is None:
            return obj.to(device, non_blocking=True)
        if id(obj) not in memo:
            memo[id(obj)] = obj.to(device, non_blocking=True)
        return memo[id(obj)]
    if isinstance(obj, tuple):
        return tuple(_to(o, device, memo) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device, memo) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device, memo) for k, v in obj.items()}
    return obj


# Arguments that must not be replayed: caches would grow across blocks and batches.
_DROP_KWARGS = {"past_key_value": None, "past_key_values": None, "layer_past": None, "cache": None,
                "use_cache": False, "output_attentions": False}


def capture_block_inputs(model: nn.Module, blocks: nn.ModuleList, windows: torch.Tensor,
                         batch_size: int, storage: torch.device) -> list[Chunk]:
    """Run the model over each batch of windows with every block replaced by a recorder.

    Keeps block 0's input hidden states and, for *every* block, the arguments the model passes it:
    architectures such as Gemma 2/3 or Qwen2 with sliding-window layers give each layer its own
    attention mask or rotary table. The recorders return their input unchanged, so nothing is
    computed; the last one stops the forward pass before the final norm and the LM head.
    """
    captured: list[Chunk] = []
    calls: dict[int, tuple] = {}
    memo: dict[int, Any] = {}

    def recorder(i: int):
        def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            kwargs.update({k: v for k, v in _DROP_KWARGS.items() if k in kwargs})
            calls[i] = (hidden, _to(tuple(args[1:]), storage, memo), _to(kwargs, storage, memo))
            if i == len(blocks) - 1:
                raise _StopAtBlock
            return hidden
        return forward

    saved = [block.__dict__.get("forward") for block in blocks]  # accelerate's hooks live there too
    for i, block in enumerate(blocks):
        block.forward = recorder(i)  # an instance attribute shadows the class's forward
    input_device = execution_device(model.get_input_embeddings())
    try:
        for batch in windows.split(batch_size):
            calls.clear()
            memo.clear()
            try:
                model(input_ids=batch.to(input_device), use_cache=False)
            except _StopAtBlock:
                pass
            if len(calls) != len(blocks):
                raise EngineError(f"the model called {len(calls)} of its {len(blocks)} decoder blocks; "
                                  "it does not run them in sequence, which this pipeline needs")
            captured.append(Chunk(calls[0][0].to(storage), [(calls[i][1], calls[i][2]) for i in range(len(blocks))]))
    finally:
        for block, forward in zip(blocks, saved):
            if forward is None:
                del block.forward
            else:
                block.forward = forward
    return captured


def activation_storage(model: nn.Module, windows: torch.Tensor, device: torch.device) -> torch.device:
    """Where the calibration activations live between blocks: on the compute device when two
    buffers of them (block inputs and the dense outputs) take at most half of its free memory,
    else in host memory, moved to the device one batch at a time."""
    if device.type != "cuda":
        return device
    hidden = model.get_input_embeddings().weight.shape[1]
    itemsize = next(model.parameters()).element_size()
    needed = 2 * windows.numel() * hidden * itemsize
    free, total = torch.cuda.mem_get_info(device)
    get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    if get_fraction is not None:  # a cap set with set_per_process_memory_fraction counts, not the whole device
        free = min(free, int(total * get_fraction(device)) - torch.cuda.memory_allocated(device))
    return device if needed <= free // 2 else torch.device("cpu")


def run_block(block: nn.Module, index: int, chunk: Chunk, device: torch.device) -> torch.Tensor:
    """Block `index` over one chunk, with the arguments the model passed it; its output hidden states."""
    args, kwargs = chunk.calls[index]
    out = block(chunk.hidden.to(device), *_to(args, device), **_to(kwargs, device))
    return out[0] if isinstance(out, (tuple, list)) else out
