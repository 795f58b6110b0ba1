"""Pruning a model whose weights accelerate keeps off the compute device.

A model loaded with a `device_map` that offloads weights (to host memory, or to disk when they do
not fit there either) carries accelerate `AlignDevicesHook`s: an offloaded module's tensors are
'meta' between forward passes and are read from the hook's weights map at every forward.

To prune such a block, `block_on_device` materialises its offloaded tensors on the compute device
once and pauses the hooks' offloading while the pipeline calibrates, prunes and propagates. On
leaving, the pruned weights go back into the weights map: copied in place when it holds them in
host memory, or written as new safetensors files under the offload folder (never into the model's
own checkpoint, which the weights map may read from), and the modules are 'meta' again.
Blocks without offloaded tensors are simply moved to the compute device and back.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Collection, Iterator
from typing import Any

import torch
from accelerate.hooks import AlignDevicesHook
from accelerate.utils import OffloadedWeightsLoader, PrefixedDataset, align_module_device, has_offloaded_params
from safetensors.torch import save_file
from torch import nn

# The folder holding the pruned weights written for each disk-offloaded weights map, by the map's id (one fresh
# folder per map: copies of a model never share files). Kept here rather than as an attribute on accelerate's
# loader, which is a Mapping and so cannot key a WeakKeyDictionary; an entry goes when its map is collected.
_PRUNED_FOLDERS: dict[int, str] = {}


def _pruned_folder(store: OffloadedWeightsLoader) -> str:
    folder = _PRUNED_FOLDERS.get(id(store))
    if folder is None:
        base = store.save_folder or tempfile.mkdtemp(prefix="wanda-offload-")
        folder = os.path.join(base, f"pruned-{uuid.uuid4().hex[:12]}")
        os.makedirs(folder, exist_ok=True)
        _PRUNED_FOLDERS[id(store)] = folder
        weakref.finalize(store, _PRUNED_FOLDERS.pop, id(store), None)
    return folder


def _placing_hook(module: nn.Module) -> AlignDevicesHook | None:
    """The hook accelerate placed on `module` to decide where it computes (and, if offloaded, to load its weights).

    accelerate has no public accessor for it; `_hf_hook` is the attribute its `add_hook_to_module` sets."""
    hook = getattr(module, "_hf_hook", None)
    return hook if isinstance(hook, AlignDevicesHook) else None


def _hooks(module: nn.Module) -> list[AlignDevicesHook]:
    """Every placing hook on `module` or inside it."""
    return [hook for m in module.modules() if (hook := _placing_hook(m)) is not None]


def has_offloaded_weights(module: nn.Module) -> bool:
    return any(has_offloaded_params(m) for m in module.modules())


def is_dispatched(model: nn.Module) -> bool:
    """Loaded with a device_map (accelerate hooks decide where each module runs): never `.to()` it whole."""
    return getattr(model, "hf_device_map", None) is not None or bool(_hooks(model))


@contextlib.contextmanager
def model_on_device(model: nn.Module, device: torch.device) -> Iterator[None]:
    """The whole model on `device` for the duration, and back; a dispatched model stays where
    accelerate placed it (its hooks move inputs and load offloaded weights themselves)."""
    if is_dispatched(model):
        yield
        return
    home = next(model.parameters()).device
    model.to(device)
    try:
        yield
    finally:
        model.to(home)


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its hook's execution device if accelerate placed it, else its weights' device."""
    hook = _placing_hook(module)
    if hook is not None and hook.execution_device is not None:
        return torch.device(hook.execution_device)
    tensor = next(module.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _write_back(weights_map: Any, name: str, value: torch.Tensor) -> None:
    """Store `value` as the weights map's entry `name`: in place in host memory, or as a new file on disk."""
    key, store = name, weights_map
    if isinstance(store, PrefixedDataset):
        key, store = store.prefix + name, store.dataset
    if isinstance(store, OffloadedWeightsLoader):
        if key in store.state_dict:
            store.state_dict[key].copy_(value)
            return
        path = os.path.join(_pruned_folder(store), f"{key}.safetensors")
        save_file({key: value.detach().to("cpu").contiguous()}, path)
        # the index entry in the form transformers writes for weights read from safetensors files
        store.index[key] = {"safetensors_file": path, "weight_name": key, "dtype": str(value.dtype).replace("torch.", "")}
        return
    store[key].copy_(value)  # a plain mapping of host tensors (accelerate's cpu_offload)


@contextlib.contextmanager
def block_on_device(block: nn.Module, device: torch.device, write_back: Collection[nn.Module] = ()) -> Iterator[None]:
    """Hold every tensor of `block` on `device` for the duration.

    Offloaded modules are materialised from their weights maps (accelerate's `align_module_device`), with
    offloading paused so that the block's forward passes keep them there; the weights of the layers in
    `write_back` (the pruned ones) go back to the weights maps on a normal exit (an error leaves the offloaded
    copy as it was). Other modules move with `.to()` and back.
    """
    written_back = {id(layer) for layer in write_back}
    offloaded = [m for m in block.modules() if has_offloaded_params(m)]
    hooks = _hooks(block)
    saved = [(hook, hook.offload, hook.execution_device) for hook in hooks]
    finished = False
    with contextlib.ExitStack() as aligned:
        for module in offloaded:  # on leaving (last): offloaded again, the modules' tensors 'meta'
            aligned.enter_context(align_module_device(module, device))
        # accelerate offers no public switch to pause offloading between forwards: its hooks' own fields
        for hook in hooks:  # inputs go where the weights now are; forward passes keep the weights there
            hook.offload, hook.execution_device = False, device
        # the tensors accelerate did not offload (all of them in a plain block) move and come back
        resident = [t for t in list(block.parameters()) + list(block.buffers()) if t.device != device]
        homes = [t.device for t in resident]
        for t in resident:
            t.data = t.data.to(device)
        try:
            yield
            finished = True
        finally:
            for hook, offload, where in saved:
                hook.offload, hook.execution_device = offload, where
            for t, home in zip(resident, homes):
                t.data = t.data.to(home)
            if finished:
                for module in offloaded:
                    if id(module) in written_back:
                        _write_back(_placing_hook(module).weights_map, "weight", module.weight.data)


def discard_pruned_copies(model: nn.Module) -> None:
    """Delete the files `block_on_device` wrote for `model`'s disk-offloaded weights (the model then
    reads stale paths: call this only when it is no longer used)."""
    for module in model.modules():
        if not has_offloaded_params(module):
            continue
        store = _placing_hook(module).weights_map
        store = store.dataset if isinstance(store, PrefixedDataset) else store
        folder = _PRUNED_FOLDERS.pop(id(store), None) if isinstance(store, OffloadedWeightsLoader) else None
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def return_freed_memory_promptly() -> None:
    """Fix glibc's mmap threshold at 1 MiB (mallopt M_MMAP_THRESHOLD; the same as the environment
    variable MALLOC_MMAP_THRESHOLD_=1048576).

    glibc raises the threshold each time a large buffer is freed, after which buffers of that size
    come from heaps it seldom returns to the system: a model streamed from disk block by block then
    keeps more host memory than if it were loaded whole. Measured with bench/prune_speed.py
    --max-memory cpu=100MiB on the embedded model (32x256, CPU): peak RssAnon 0.43 GiB instead of
    2.7 GiB, for pruning 1.3x slower (every activation buffer is a fresh mapping on a CPU; on a GPU
    the activations are not host memory). malloc_trim after each block did not help. Set only when
    a model is loaded with offloading; not glibc: nothing to do.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = -3 in <malloc.h>
    except (OSError, AttributeError):
        pass


def offload_summary(model: nn.Module) -> dict[str, int] | None:
    """How many modules of the device map sit on each device ('disk', 'cpu', 0, ...), or None if not dispatched."""
    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        return None
    counts: dict[str, int] = {}
    for where in device_map.values():
        counts[str(where)] = counts.get(str(where), 0) + 1
    return counts
