"""The one layer-by-layer loop that serves every method.

    capture block 0's inputs, and the keyword arguments the model passes every block
    for each block:
        calibration pass over the dense block, hooks feeding InputStats of each linear
        per linear: score -> select mask (or SparseGPT solve) -> record -> apply
        propagation pass through the pruned block -> the next block's inputs
        emit events; stop here if cancelled

A method is what its entry in the table of methods (`methods.table`) says: a scorer plus the
selectors (magnitude, wanda, ria, wanda variant) or a solver (sparsegpt); weight_update='obs' follows any
selector's mask with SparseGPT's update of the kept weights (the block's Gram matrix is then accumulated too,
as for a solver that needs it). calibrate=False (magnitude only) skips capture,
calibration and propagation: each block's masks come from its weights alone. The loop itself knows
nothing of architectures: it replays whatever arguments the model itself passed each block (masks,
positions, rotary tables), recorded once per calibration batch by `capture`.

A structure remover (wanda-sp, flap, magnitude-sp, block-influence) is another kind of step in the same loop
(`structure.Shrinker`): per block it scores KV groups and MLP channels and removes them now (uniform), or scores
every block of the dense model first and removes after the loop (global allocation, depth).

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

import torch
from torch import nn

from .blocks import PruningRun, block_held, calibrate, distributed, propagate, rank_share
from .capture import Chunk, activation_storage, capture_block_inputs
from .checks import CheckedForPruning, check_finite_weights, model_layout
from ..config import PruneConfig
from ..core.errors import ConfigError, NumericalError, PruneCancelled
from ..core.events import BlockFinished, EventCallback, MatrixPruned, PruneFinished, StageStarted, ignore_events
from ..inputs.device import resolve_device
from ..inputs.layers import find_blocks, find_linears, weight_of
from ..inputs.offload import block_on_device, has_offloaded_weights
from ..store.matrix_records import BlockRecord, MatrixRecord
from ..store.shrink_record import StructureRecord
from .structure import Shrinker, check_removable
from .recording import record_matrix
from ..methods.scoring import InputStats, magnitude_score, wanda_score
from ..methods.selection import (Selection, prune_adaptive_alpha, prune_adaptive_alpha_protected, protection_shortfall, select,
                        select_protected)
from ..methods.sparsegpt import sparsegpt_prune
from ..methods.table import Kind, get as get_method
from ..core.stages import BY_NAME

# The stages the pipeline announces itself (the runner announces 'prune' around it).
OWL_STAGE, CAPTURE_STAGE, SCORES_STAGE = BY_NAME["owl"], BY_NAME["capture"], BY_NAME["structure-scores"]


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
    # a structure remover's run: what it took out (and `sparsity` is the fraction of the blocks' parameters removed)
    structure: StructureRecord | None = None


def _scores(config: PruneConfig, weight: torch.Tensor, stats: InputStats | None) -> dict[str, torch.Tensor]:
    """The records' metrics, magnitude and Wanda (Wanda only with statistics), each computed once, and a mask
    method's own score where it is neither: a magnitude or Wanda run selects on the records' score."""
    magnitude = magnitude_score(weight, stats)
    scores = {"magnitude": magnitude}
    if stats is not None:
        # Wanda's score from the magnitudes already computed: |W_ij|·‖X_j‖ (the same values as wanda_score)
        scores["wanda"] = magnitude * stats.channel_norms.to(weight.device).view(1, -1)
    method = config.method_entry
    if method.kind is Kind.MASK and config.method not in scores:
        scores[config.method] = method.score(weight, stats, config)
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


def _own_group(metric: str, nm: tuple[int, int] | None) -> str:
    """The comparison group a record chooses another metric's mask in: that metric's own default (magnitude per
    matrix, Wanda per output row), so that a Wanda run's magnitude mask is the very mask of the magnitude run at the
    same settings, whose perplexity the pages quote beside it (issue 19); N:M patterns bring their own groups."""
    return "nm" if nm is not None else get_method(metric).default_group


def _selector_mask(config: PruneConfig, scores: dict[str, torch.Tensor], stats: InputStats | None, sparsity: float,
                   cutoffs: dict[str, float]) -> torch.Tensor:
    """The selector's mask (True = prune); its cut-off score goes into `cutoffs` where the selection gives one."""
    protect = config.protect_channels
    if config.variant and protect:
        mask, _alpha = prune_adaptive_alpha_protected(scores[config.method], stats.channel_norms, sparsity, protect)
    elif config.variant:
        mask, _alpha = prune_adaptive_alpha(scores[config.method], sparsity)
    elif protect:
        mask, cutoffs[config.method] = select_protected(scores[config.method], stats.channel_norms, sparsity,
                                                        config.resolved_group, protect)
    else:
        mask, cutoffs[config.method] = select(scores[config.method], sparsity, config.resolved_group, config.nm)
    return mask


def _prune_layer(config: PruneConfig, layer: nn.Module, stats: InputStats | None, sparsity: float,
                 block: int, name: str, full_name: str, record: bool) -> tuple[MatrixRecord | None, float]:
    """Prune one layer in place to `sparsity`; return its record (if asked) and achieved sparsity.

    `stats=None` (calibrate=False): a method that needs no activations (magnitude) from the weights alone, recorded
    without activation statistics."""
    weight = weight_of(layer)  # [out, in] view
    original = weight.float()
    nm, group = config.nm, config.resolved_group
    scores = _scores(config, original, stats)
    cutoffs: dict[str, float] = {}
    # The records' masks of the other metrics are selected on a second CPU thread while this one
    # selects (or solves) the run's own: torch.topk runs on one core. They are never protected: the
    # records compare a protected run with what the other metric alone prunes.
    groups = {config.method: group} | {metric: _own_group(metric, nm) for metric in scores if metric != config.method}
    others = {metric: _select_elsewhere(score, sparsity, groups[metric], nm, original.device)
              for metric, score in scores.items() if record and metric != config.method}

    pruned = None  # a selector without weight update: the kept weights stay as they are
    method = config.method_entry
    if method.kind is Kind.SOLVER:  # it chooses the mask, and the kept weights are updated too
        pruned = method.solve(original, stats, sparsity, config)
        mask = pruned == 0
    else:
        mask = _selector_mask(config, scores, stats, sparsity, cutoffs)
        if config.weight_update == "obs":
            # SparseGPT's update of the kept weights on this fixed mask (the Wanda paper's ablation). Weights
            # that are zero already (quantised models hold some) stay zero: the run's zeros are the selector's.
            pruned = sparsegpt_prune(original, stats.hessian(), sparsity, nm, config.blocksize, config.percdamp,
                                     mask=mask | (original == 0))

    rec = None
    if record:  # before the weight changes: `original` may be the weight itself
        # Each metric's own mask at the run's settings; the run's mask stands for its own metric.
        masks = {config.method: mask} if config.method in scores else {}
        for metric, pending in others.items():
            masks[metric], cutoffs[metric] = pending.result()
        # the records' two metrics: a magnitude run is compared with Wanda's mask, every other run with magnitude's
        reference = "wanda" if config.method == "magnitude" else "magnitude"
        rec = record_matrix(block=block, name=name, full_name=full_name, method=config.method, group=group,
                            original=original, mask=mask, pruned=pruned, stats=stats, masks_by_metric=masks,
                            scores_by_metric=scores, reference=reference, cutoffs_by_metric=cutoffs,
                            groups_by_metric=groups)
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
    if config.structure is not None:
        check_removable(model, config)
    if config.nm is not None:
        m = config.nm[1]
        bad = sorted({weight_of(l).shape[1] for l in layers.values() if weight_of(l).shape[1] % m})
        if bad:
            raise ConfigError(f"pattern {config.pattern}: M={m} does not divide the input width {bad[0]} of some layers")
    if config.protect_channels:
        # OWL may set a block up to 2·lambda above the target
        highest = config.target_sparsity + (2 * config.owl_lambda if config.layerwise == "owl" else 0.0)
        group = "row" if config.variant else config.resolved_group
        for shape in sorted({tuple(weight_of(l).shape) for l in layers.values()}):
            why = protection_shortfall(shape, highest, config.protect_channels, group)
            if why is not None:
                raise ConfigError(why)


def check_for_pruning(model: nn.Module, config: PruneConfig) -> CheckedForPruning:
    """Every check `prune_model` needs before any weight changes; raises ConfigError or NumericalError."""
    check_prunable(model, config)
    check_finite_weights(model)  # NaN/Inf named per block and layer, before they reach any activation
    return CheckedForPruning(config, model_layout(model))


def _owl_targets(model: nn.Module, blocks: nn.ModuleList, windows: torch.Tensor, config: PruneConfig,
                 device: torch.device, storage: torch.device, cancel: threading.Event | None) -> tuple[list[float], list[float]]:
    """One dense pass over all blocks: each block's outlier ratio, and OWL's block sparsities from them."""
    chunks = capture_block_inputs(model, blocks, windows, config.batch_size, storage)
    ratios = []
    for i, block in enumerate(blocks):
        if cancel is not None and cancel.is_set():
            raise PruneCancelled(f"pruning was cancelled while measuring outliers, after {i} of {len(blocks)} blocks")
        with block_on_device(block, device):
            linears = find_linears(block)
            stats, outputs = calibrate(block, i, chunks, device, False, storage)
            ratios.append(outlier_ratio([wanda_score(weight_of(linears[n]).float(), st) for n, st in stats.items()],
                                        config.owl_m))
        for chunk, out in zip(chunks, outputs):
            chunk.hidden = out
    return ratios, owl_sparsities(ratios, config.target_sparsity, config.owl_lambda)


def _prune_linears(run: PruningRun, linears: dict[str, nn.Module], index: int, target: float,
                   stats: dict[str, InputStats] | None) -> tuple[float, int]:
    """Score, select, record and apply every linear of block `index` (from the dense block's inputs' statistics,
    or from the weights alone when `stats` is None); returns the block's zeros and weights."""
    zeros, total = 0.0, 0
    for name, layer in linears.items():
        full_name = f"{run.blocks_path}.{index}.{name}"
        rec, sp = _prune_layer(run.config, layer, stats[name] if stats is not None else None, target, index, name,
                               full_name, run.record)
        if rec is not None:
            run.records.append(rec)
        n = weight_of(layer).numel()
        zeros, total = zeros + sp * n, total + n
        run.on_event(MatrixPruned(run.elapsed(), index, run.num_blocks, name, sp))
    return zeros, total


def _finish_block(run: PruningRun, index: int, zeros: float, total: int, block_error: float | None, started: float,
                  target: float, outlier_ratio: float | None) -> BlockRecord:
    run.zeros, run.total = run.zeros + zeros, run.total + total
    run.on_event(BlockFinished(run.elapsed(), index, run.num_blocks, zeros / total, block_error, run.zeros / run.total))
    return BlockRecord(index, zeros / total, block_error, time.perf_counter() - started, target=target,
                       outlier_ratio=outlier_ratio)


def _prune_block(run: PruningRun, block: nn.Module, index: int, chunks: list[Chunk], target: float,
                 outlier_ratio: float | None) -> BlockRecord:
    """Calibrate, prune and propagate one block; `chunks` then hold the next block's inputs."""
    started = time.perf_counter()
    with block_held(run, block, index) as linears:
        # 1. calibration pass through the dense block; keep its outputs to measure the block error.
        #    (Magnitude needs no statistics to prune, but its records compare it with Wanda's masks.)
        with run.timed("calibrate_s"):
            stats, dense_outputs = calibrate(block, index, chunks, run.device, run.config.needs_gram, run.storage)
        # 2. score, select, record, apply: every linear of the block from the dense block's inputs
        with run.timed("select_s"):
            zeros, total = _prune_linears(run, linears, index, target, stats)
            del stats
        # 3. propagation pass through the pruned block: the next block sees pruned activations
        with run.timed("propagate_s"):
            err_num, err_den = propagate(block, index, chunks, dense_outputs, run)
        del dense_outputs
    if not math.isfinite(err_num):
        raise NumericalError(f"block {index}: the pruned block's outputs contain NaN or Inf")
    return _finish_block(run, index, zeros, total, err_num / err_den if err_den else 0.0, started, target,
                         outlier_ratio)


def _prune_block_from_weights(run: PruningRun, block: nn.Module, index: int, target: float) -> BlockRecord:
    """Magnitude's masks of one block from its weights alone (calibrate=False): no activations, so no
    block error and no statistics in the records."""
    started = time.perf_counter()
    with block_held(run, block, index) as linears:
        with run.timed("select_s"):
            zeros, total = _prune_linears(run, linears, index, target, None)
    return _finish_block(run, index, zeros, total, None, started, target, None)


class _Masks:
    """The mask methods' and solvers' step of the loop: each block's masks now, from the dense block's inputs' statistics
    (or from its weights alone), recorded as it goes."""

    def __init__(self, run: PruningRun, chunks: list[Chunk] | None, targets: list[float],
                 ratios: list[float | None]):
        self.run, self.chunks, self.targets, self.ratios = run, chunks, targets, ratios
        self.records: list[BlockRecord] = []

    def prune_block(self, block: nn.Module, index: int) -> None:
        if self.chunks is not None:
            self.records.append(_prune_block(self.run, block, index, self.chunks, self.targets[index],
                                             self.ratios[index]))
        else:
            self.records.append(_prune_block_from_weights(self.run, block, index, self.targets[index]))

    def finish(self, model: nn.Module) -> tuple[list[BlockRecord], None]:
        return self.records, None


def prune_model(model: nn.Module, windows: torch.Tensor, config: PruneConfig,
                on_event: EventCallback = ignore_events, cancel: threading.Event | None = None,
                record: bool = True, checked: CheckedForPruning | None = None) -> PruneResult:
    """Prune `model` in place, block by block, calibrating on `windows` [nsamples, seqlen].

    `checked`: `check_for_pruning`'s proof for this model (or an unchanged copy) and `config`, so that it is not
    checked twice; without it the model is checked here. Under torch.distributed every rank passes the same
    `windows` and calibrates on its contiguous share of them; the result (masks, records) is the same on every rank.
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    if checked is None or not checked.fits(model, config):
        check_for_pruning(model, config)
    blocks_path, blocks = find_blocks(model)
    rank, world = distributed()
    windows = rank_share(windows, rank, world)
    storage = activation_storage(model, windows, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = PruningRun(config, device, storage, blocks_path, len(blocks), on_event, record, world,
                   offloaded=has_offloaded_weights(model), started=started)

    with torch.inference_mode():
        targets, ratios = [config.target_sparsity] * len(blocks), [None] * len(blocks)
        if config.layerwise == "owl":
            on_event(StageStarted(run.elapsed(), OWL_STAGE.name,
                                  f"outlier ratios of {len(blocks)} blocks (M={config.owl_m:g})"))
            with run.timed("owl_s"):
                ratios, targets = _owl_targets(model, blocks, windows, config, device, storage, cancel)

        chunks = None
        if config.calibrate:
            on_event(StageStarted(run.elapsed(), CAPTURE_STAGE.name,
                                  f"{len(windows)} windows x {windows.shape[1]} tokens"))
            with run.timed("capture_s"):
                chunks = capture_block_inputs(model, blocks, windows, config.batch_size, storage)

        kind = Shrinker(run, model, chunks) if config.structure else _Masks(run, chunks, targets, ratios)
        if config.structure and kind.dense_first:
            on_event(StageStarted(run.elapsed(), SCORES_STAGE.name, f"{len(blocks)} blocks of the dense model"))
        for i, block in enumerate(blocks):
            if cancel is not None and cancel.is_set():
                raise PruneCancelled(f"pruning was cancelled after {i} of {len(blocks)} blocks")
            kind.prune_block(block, i)
        block_records, structure = kind.finish(model)

    sparsity = structure.removed_fraction if structure else run.zeros / run.total if run.total else 0.0
    on_event(PruneFinished(run.elapsed(), len(blocks), sparsity))
    return PruneResult(config=config, records=run.records, blocks=block_records, sparsity=sparsity, structure=structure,
                       seconds=run.elapsed(), timings={k: round(v, 4) for k, v in run.timings.items()},
                       device=str(device), activations_on=str(storage), block_targets=targets, world_size=world,
                       peak_device_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)
