"""The one layer-by-layer loop that serves every method.

    capture block 0's inputs, and the keyword arguments the model passes every block
    for each block:
        calibration pass over the dense block, hooks feeding InputStats of each linear
        per linear: score -> select mask (or SparseGPT solve) -> record -> apply
        propagation pass through the pruned block -> the next block's inputs
        emit events; stop here if cancelled

A method is a scorer plus a selector (magnitude, wanda, ria, wanda variant) or a solver
(sparsegpt); the loop itself knows nothing of architectures: it replays whatever arguments the
model itself passed each block (masks, positions, rotary tables), recorded once per calibration batch.

OWL (layerwise='owl') adds one dense pass before the loop to measure each block's outlier ratio
and turn it into that block's sparsity. Under torch.distributed every rank calibrates on its own
share of the windows and the statistics are summed over ranks, so every rank selects the same masks.
A model whose weights accelerate offloaded (to host memory or disk) runs the same loop:
`offload.block_on_device` holds one block on the compute device at a time and writes its pruned weights back.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import PruneConfig
from .errors import ConfigError, EngineError, NumericalError, PruneCancelled
from .events import BlockFinished, BlockStarted, EventCallback, MatrixPruned, PruneFinished, StageStarted, ignore_events
from .models import check_finite_weights, find_blocks, find_linears, weight_of
from .offload import block_on_device, execution_device, has_offloaded_weights
from .records import BlockRecord, MatrixRecord
from .recording import record_matrix
from .scoring import SCORERS, InputStats
from .selection import Selection, prune_adaptive_alpha, select
from .sparsegpt import sparsegpt_prune


@dataclass
class PruneResult:
    config: PruneConfig
    records: list[MatrixRecord]
    blocks: list[BlockRecord]
    sparsity: float  # over the pruned matrices
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # capture_s, calibrate_s, select_s, propagate_s
    device: str = "cpu"
    activations_on: str = "cpu"  # where the calibration activations were kept between blocks
    block_targets: list[float] = field(default_factory=list)  # each block's sparsity (OWL: non-uniform)
    world_size: int = 1  # torch.distributed ranks that shared the calibration windows
    peak_device_bytes: int | None = None  # CUDA only: torch.cuda.max_memory_allocated during pruning


class _StopAtBlock(Exception):
    """Raised by the capture hook: the rest of the model need not run."""


@dataclass
class _Chunk:
    """A batch of calibration windows at the input of the current block."""

    hidden: torch.Tensor  # [batch, seqlen, hidden]
    calls: list[tuple[tuple, dict[str, Any]]]  # per block: the further args and kwargs it was called with


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available")
    return torch.device(name)


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
                         batch_size: int, storage: torch.device) -> list[_Chunk]:
    """Run the model over each batch of windows with every block replaced by a recorder.

    Keeps block 0's input hidden states and, for *every* block, the arguments the model passes it:
    architectures such as Gemma 2/3 or Qwen2 with sliding-window layers give each layer its own
    attention mask or rotary table. The recorders return their input unchanged, so nothing is
    computed; the last one stops the forward pass before the final norm and the LM head.
    """
    captured: list[_Chunk] = []
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
            captured.append(_Chunk(calls[0][0].to(storage), [(calls[i][1], calls[i][2]) for i in range(len(blocks))]))
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


def _run_block(block: nn.Module, index: int, chunk: _Chunk, device: torch.device) -> torch.Tensor:
    args, kwargs = chunk.calls[index]
    out = block(chunk.hidden.to(device), *_to(args, device), **_to(kwargs, device))
    return out[0] if isinstance(out, (tuple, list)) else out


def _scores(config: PruneConfig, weight: torch.Tensor, stats: InputStats) -> dict[str, torch.Tensor]:
    """The run's metric, plus magnitude and Wanda for the records' comparison (each computed once)."""
    magnitude = SCORERS["magnitude"](weight, stats)
    # Wanda's score from the magnitudes already computed: |W_ij|·‖X_j‖ (the same values as wanda_score)
    scores = {"magnitude": magnitude, "wanda": magnitude * stats.channel_norms.to(weight.device).view(1, -1)}
    if config.method == "ria":
        scores["ria"] = SCORERS["ria"](weight, stats, config.ria_power)
    return scores


_SELECT_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wanda-select")


def _select_elsewhere(score: torch.Tensor, sparsity: float, group: str, nm: tuple[int, int] | None,
                      device: torch.device) -> Future:
    """`select` on the helper thread for CPU tensors (inference mode is per thread); inline on GPUs."""
    def run() -> Selection:
        with torch.inference_mode():
            return select(score, sparsity, group, nm)
    if device.type != "cpu":
        done: Future = Future()
        done.set_result(run())
        return done
    return _SELECT_THREAD.submit(run)


def _prune_layer(config: PruneConfig, layer: nn.Module, stats: InputStats, sparsity: float,
                 block: int, name: str, full_name: str, record: bool) -> tuple[MatrixRecord | None, float]:
    """Prune one layer in place to `sparsity`; return its record (if asked) and achieved sparsity."""
    weight = weight_of(layer)  # [out, in] view
    original = weight.float()
    nm, group = config.nm, config.resolved_group
    scores = _scores(config, original, stats)
    cutoffs: dict[str, float] = {}
    # The records' masks of the other metrics are selected on a second CPU thread while this one
    # selects (or solves) the run's own: torch.topk runs on one core.
    others = {metric: _select_elsewhere(score, sparsity, group, nm, original.device)
              for metric, score in scores.items() if record and metric != config.method}

    if config.method == "sparsegpt":  # a solver: the kept weights are updated too
        pruned = sparsegpt_prune(original, stats.hessian(), sparsity, nm, config.blocksize, config.percdamp)
        mask = pruned == 0
    else:  # a selector: the kept weights stay as they are
        pruned = None
        if config.variant:
            mask, _alpha = prune_adaptive_alpha(scores["wanda"], sparsity)
        else:
            mask, cutoffs[config.method] = select(scores[config.method], sparsity, group, nm)

    rec = None
    if record:  # before the weight changes: `original` may be the weight itself
        # Each metric's own mask at the run's settings; the run's mask stands for its own metric.
        masks = {config.method: mask} if config.method in scores else {}
        for metric, pending in others.items():
            masks[metric], cutoffs[metric] = pending.result()
        reference = "wanda" if config.method == "magnitude" else "magnitude"
        rec = record_matrix(block=block, name=name, full_name=full_name, method=config.method, group=group,
                            original=original, mask=mask, pruned=pruned, stats=stats, masks_by_metric=masks,
                            scores_by_metric=scores, reference=reference, cutoffs_by_metric=cutoffs)
    if pruned is None:
        weight.mul_(mask.logical_not())  # in place; a multiply is several times faster than masked_fill on CPU
    else:
        weight.copy_(pruned.to(weight.dtype))
    return rec, int(torch.count_nonzero(mask)) / mask.numel()


def outlier_ratio(block_scores: list[torch.Tensor], m: float) -> float:
    """OWL's layerwise outlier distribution (LOD) of one block: the share of the Wanda scores of
    all its matrices together that exceed m x their mean (OWL reference: `check_outlier_mean` on
    the concatenated scores of the block)."""
    total = sum(score.numel() for score in block_scores)
    if not total:
        return 0.0
    threshold = m * sum(float(score.sum(dtype=torch.float64)) for score in block_scores) / total
    return sum(int(torch.count_nonzero(score > threshold)) for score in block_scores) / total


def owl_sparsities(ratios: list[float], target: float, lam: float) -> list[float]:
    """OWL's mapping from outlier ratios to block sparsities (reference `prune_wanda_outlier`):
    scale the ratios linearly onto [0, 2·lam], shift them so that their mean is the target's
    keep ratio 1 - target; a block with more outliers keeps more weights. Mean sparsity = target."""
    lo, hi = min(ratios), max(ratios)
    spread = [(r - lo) / (hi - lo) * 2 * lam if hi > lo else 0.0 for r in ratios]
    mean = sum(spread) / len(spread)
    return [1 - (x - mean + 1 - target) for x in spread]


def check_prunable(model: nn.Module, config: PruneConfig) -> None:
    """Raise before any weight changes if the model cannot be pruned with `config`."""
    blocks_path, blocks = find_blocks(model)
    layers = {f"{blocks_path}.{i}.{n}": l for i, b in enumerate(blocks) for n, l in find_linears(b).items()}
    if not layers:
        raise ConfigError("the model's decoder blocks hold no linear layers to prune")
    if config.nm is not None:
        m = config.nm[1]
        bad = sorted({weight_of(l).shape[1] for l in layers.values() if weight_of(l).shape[1] % m})
        if bad:
            raise ConfigError(f"pattern {config.pattern}: M={m} does not divide the input width {bad[0]} of some layers")
    if config.method == "sparsegpt" and config.resolved_group == "matrix":
        raise ConfigError("sparsegpt chooses its mask per column block; group 'matrix' does not apply")


def _distributed() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, or (0, 1) when it is not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _calibrate(block: nn.Module, index: int, chunks: list[_Chunk], device: torch.device, with_gram: bool,
               keep: torch.device | None) -> tuple[dict[str, InputStats], list[torch.Tensor]]:
    """Run the dense block over every chunk with hooks feeding each linear's InputStats.

    Returns the statistics (summed over torch.distributed ranks) and, if `keep`, the dense outputs there.
    """
    linears = find_linears(block)
    stats = {name: InputStats(weight_of(layer).shape[1], device, with_gram) for name, layer in linears.items()}
    # Layers fed the very same tensor (q/k/v, gate/up) share one InputStats: Σx² (and SparseGPT's
    # Gram matrix) is computed once per input instead of once per layer.
    fed: dict[tuple, tuple[torch.Tensor, InputStats]] = {}  # this chunk's inputs -> the stats they went to

    def hook(name: str):
        def add(module: nn.Module, inputs: tuple, output: Any) -> None:
            x = inputs[0]
            key = (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype)
            if key in fed:
                if stats[name] is not fed[key][1]:
                    stats[name] = fed[key][1]  # first chunk: share from now on
                return
            stats[name].add(x)
            fed[key] = (x, stats[name])  # holding x keeps its memory from being reused within the chunk
        return add

    handles = [layer.register_forward_hook(hook(name)) for name, layer in linears.items()]
    outputs = []
    try:
        for chunk in chunks:
            fed.clear()
            out = _run_block(block, index, chunk, device)
            outputs.append(out.to(keep) if keep is not None else out)
        fed.clear()
    finally:
        for h in handles:
            h.remove()
    if _distributed()[1] > 1:
        for st in {id(st): st for st in stats.values()}.values():  # each shared InputStats once
            st.all_reduce()
    for name, st in stats.items():
        if not st.is_finite():
            raise NumericalError(f"block {index} {name}: calibration activations contain NaN or Inf "
                                 "(the inputs of this block overflowed or the model is broken)")
    return stats, outputs


def _owl_targets(model: nn.Module, blocks: nn.ModuleList, windows: torch.Tensor, config: PruneConfig,
                 device: torch.device, storage: torch.device, cancel: threading.Event | None) -> tuple[list[float], list[float]]:
    """One dense pass over all blocks: each block's outlier ratio, and OWL's block sparsities from them."""
    chunks = capture_block_inputs(model, blocks, windows, config.batch_size, storage)
    ratios = []
    for i, block in enumerate(blocks):
        if cancel is not None and cancel.is_set():
            raise PruneCancelled(f"pruning was cancelled while measuring outliers, after {i} of {len(blocks)} blocks")
        with block_on_device(block, device, write_back=False):
            linears = find_linears(block)
            stats, outputs = _calibrate(block, i, chunks, device, False, storage)
            ratios.append(outlier_ratio([SCORERS["wanda"](weight_of(linears[n]).float(), st) for n, st in stats.items()],
                                        config.owl_m))
        for chunk, out in zip(chunks, outputs):
            chunk.hidden = out
    return ratios, owl_sparsities(ratios, config.target_sparsity, config.owl_lambda)


def prune_model(model: nn.Module, windows: torch.Tensor, config: PruneConfig,
                on_event: EventCallback = ignore_events, cancel: threading.Event | None = None,
                record: bool = True) -> PruneResult:
    """Prune `model` in place, block by block, calibrating on `windows` [nsamples, seqlen].

    Under torch.distributed every rank passes the same `windows` and calibrates on its contiguous
    share of them; the result (masks, records) is the same on every rank.
    """
    t_start = time.perf_counter()
    elapsed = lambda: time.perf_counter() - t_start  # noqa: E731
    device = resolve_device(config.device)
    check_prunable(model, config)
    check_finite_weights(model)  # NaN/Inf named per block and layer, before they reach any activation
    offloaded = has_offloaded_weights(model)  # accelerate offload: those weights are checked as each block loads
    blocks_path, blocks = find_blocks(model)
    num_blocks = len(blocks)
    rank, world = _distributed()
    if world > 1:
        if len(windows) < world:
            raise ConfigError(f"nsamples {len(windows)} is smaller than the {world} ranks sharing the calibration")
        windows = windows.tensor_split(world)[rank]
    storage = activation_storage(model, windows, device)
    with_gram = config.method == "sparsegpt"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    records: list[MatrixRecord] = []
    block_records: list[BlockRecord] = []
    timings = {"capture_s": 0.0, "calibrate_s": 0.0, "select_s": 0.0, "propagate_s": 0.0}
    pruned_zeros = pruned_total = 0

    with torch.inference_mode():
        targets, ratios = [config.target_sparsity] * num_blocks, [None] * num_blocks
        if config.layerwise == "owl":
            on_event(StageStarted(elapsed(), "owl", f"outlier ratios of {num_blocks} blocks (M={config.owl_m:g})"))
            t = time.perf_counter()
            ratios, targets = _owl_targets(model, blocks, windows, config, device, storage, cancel)
            timings["owl_s"] = time.perf_counter() - t

        on_event(StageStarted(elapsed(), "capture", f"{len(windows)} windows x {windows.shape[1]} tokens"))
        t = time.perf_counter()
        chunks = capture_block_inputs(model, blocks, windows, config.batch_size, storage)
        timings["capture_s"] = time.perf_counter() - t

        for i, block in enumerate(blocks):
            if cancel is not None and cancel.is_set():
                raise PruneCancelled(f"pruning was cancelled after {i} of {num_blocks} blocks")
            t_block = time.perf_counter()
            on_event(BlockStarted(elapsed(), i, num_blocks))
            # only this block on the compute device (read from accelerate's offload, if the model has one)
            with block_on_device(block, device):
                if offloaded:
                    check_finite_weights(block, f"block {i}")
                linears = find_linears(block)

                # 1. calibration pass through the dense block; keep its outputs to measure the block error.
                #    (Magnitude needs no statistics to prune, but its records compare it with Wanda's masks.)
                t = time.perf_counter()
                stats, dense_out = _calibrate(block, i, chunks, device, with_gram, storage)
                timings["calibrate_s"] += time.perf_counter() - t

                # 2. score, select, record, apply — every linear of the block from the dense block's inputs
                t = time.perf_counter()
                zeros = total = 0
                for name, layer in linears.items():
                    full_name = f"{blocks_path}.{i}.{name}"
                    rec, sp = _prune_layer(config, layer, stats[name], targets[i], i, name, full_name, record)
                    if rec is not None:
                        records.append(rec)
                    n = weight_of(layer).numel()
                    zeros, total = zeros + sp * n, total + n
                    on_event(MatrixPruned(elapsed(), i, num_blocks, name, sp))
                del stats
                timings["select_s"] += time.perf_counter() - t

                # 3. propagation pass through the pruned block: the next block sees pruned activations
                t = time.perf_counter()
                err = torch.zeros(2, dtype=torch.float64)  # ‖pruned − dense‖², ‖dense‖² over this rank's windows
                for chunk, dense in zip(chunks, dense_out):
                    out = _run_block(block, i, chunk, device)
                    dense = dense.to(device)
                    err += torch.stack([torch.sub(out, dense).float().pow_(2).sum(), dense.float().pow(2).sum()]).double().cpu()
                    chunk.hidden = out.to(storage)
                del dense_out
                if world > 1:
                    import torch.distributed as dist

                    dist.all_reduce(err)
                timings["propagate_s"] += time.perf_counter() - t

            pruned_zeros, pruned_total = pruned_zeros + zeros, pruned_total + total
            err_num, err_den = float(err[0]), float(err[1])
            if not math.isfinite(err_num):
                raise NumericalError(f"block {i}: the pruned block's outputs contain NaN or Inf")
            block_error = err_num / err_den if err_den else 0.0
            block_records.append(BlockRecord(i, zeros / total, block_error, time.perf_counter() - t_block,
                                             target=targets[i], outlier_ratio=ratios[i]))
            on_event(BlockFinished(elapsed(), i, num_blocks, zeros / total, block_error, pruned_zeros / pruned_total))

    sparsity = pruned_zeros / pruned_total if pruned_total else 0.0
    on_event(PruneFinished(elapsed(), num_blocks, sparsity))
    return PruneResult(config=config, records=records, blocks=block_records, sparsity=sparsity,
                       seconds=elapsed(), timings={k: round(v, 4) for k, v in timings.items()}, device=str(device),
                       activations_on=str(storage), block_targets=targets, world_size=world,
                       peak_device_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)
