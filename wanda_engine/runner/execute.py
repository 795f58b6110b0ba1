"""One whole run: prepare (tasks, model, checks, data) -> run directory -> dense results -> prune ->
evaluate -> speed (when asked) -> save (with its model card).

The CLI, the sweep and the app all call `execute_run`; none repeats any of these steps. `prepare`
does everything that can fail on bad input, before anything is written; `lifecycle.record_lifecycle`
takes the run directory from 'running' to 'complete', 'failed' or 'cancelled'; `StageClock.stage`
announces and times each stage and names it in an out-of-memory error; the dense model's results come
from `dense`'s caches.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import PruneConfig, RunRequest
from ..core.status import RunStatus
from ..core.errors import EngineError
from ..core.events import EventCallback, ignore_events
from ..evaluation.perplexity import check_windows, perplexity_on_device
from ..evaluation.tasks import TaskPlan, check_tasks
from ..store.zeroshot_record import ZeroShotRecord, ZeroShotScores
from ..evaluation.zeroshot import evaluate_zeroshot
from ..inputs.data import calibration_windows, eval_tokens, save_token_windows
from ..inputs.device import resolve_device
from ..inputs.layers import check_context
from ..evaluation.speed import measure_speed
from ..inputs.models import LoadedModel, base_model, load_model
from ..inputs.offload import discard_pruned_copies, is_dispatched, model_on_device
from ..inputs.shrunk import save_pruned
from ..pruning.checks import CheckedForPruning, mask_checksum, sparsity_of_blocks
from ..pruning.pipeline import check_for_pruning, prune_model
from ..store.model_card import CARD_FILE, model_card
from ..store.run_record import CalibrationInfo, EvalInfo, LayerSparsity, ModelInfo, RunRecord
from ..store.shrink_record import SpeedRecord
from ..store.run_store import Run, RunStore, create_run_dir, load_run, write_records, writer_identity
from .dense import dense_perplexity, dense_zeroshot
from .lifecycle import RecordKind, StageClock, package_versions, record_lifecycle, timestamp

CALIBRATION_FILE = "calibration.npy"  # in the run directory: the calibration windows as int64 token ids
# run.json in a folder created atomically with it; a run's `finished` says when it completed, so never on failure
RUN_RECORD = RecordKind("run.json", create_run_dir, finished_when_stopped=False)


def run_stem(model_name: str, pc: PruneConfig) -> str:
    """The readable part of a default run name, e.g. 'default-wanda-unstructured-0.50'."""
    return f"{model_name}-{pc.stem}"


@dataclass
class Prepared:
    """A request checked against its model and data: everything a run needs before it writes anything."""

    request: RunRequest
    loaded: LoadedModel
    owns_model: bool  # loaded by `prepare`: pruned in place; a model handed in is copied first
    device: torch.device
    windows: torch.Tensor  # calibration token ids [nsamples, seqlen]
    calibration: dict[str, Any]  # what data.calibration_windows says about them
    eval_data: tuple[torch.Tensor, str] | None  # evaluation token ids [1, T] and their label
    zeroshot_plans: list[TaskPlan]
    checked: CheckedForPruning  # the model passed the pruning's checks: `prune_model` does not repeat them


def check_model_matches(loaded: LoadedModel, request: RunRequest) -> None:
    """EngineError unless `loaded` was loaded the way `request` asks (source, dtype, remote code, offload)."""
    have, want = getattr(loaded, "spec", None), request.model_spec()
    if have is None:
        raise EngineError("the loaded model does not record how it was loaded; load it with models.load_model")
    name = have.mismatch(want)
    if name is not None:
        raise EngineError(f"the loaded model does not match the request: its {name} is {getattr(have, name)!r}, "
                          f"the request's {getattr(want, name)!r}; load the model the request describes")


def prepare(request: RunRequest, loaded: LoadedModel | None = None, clock: StageClock | None = None) -> Prepared:
    """Everything that can fail on bad input, before anything is written or pruned: the zero-shot tasks,
    the model (loaded here unless handed in, when it must match the request), its weights, the
    calibration and evaluation data, and the model's context length."""
    clock = clock or StageClock()
    pc, ev, zc = request.prune, request.eval, request.zeroshot
    if loaded is not None:
        check_model_matches(loaded, request)
    plans: list[TaskPlan] = []
    if zc is not None:  # first: unknown tasks, missing files or hub data offline fail before the model loads
        with clock.stage("zeroshot-tasks", ", ".join(zc.tasks)):
            plans = check_tasks(zc)
    owns_model = loaded is None
    with clock.stage("load", request.model):
        if loaded is None:
            loaded = load_model(request.model, dtype=request.dtype, trust_remote_code=request.trust_remote_code,
                                offload=request.offload)
        checked = check_for_pruning(loaded.model, pc)  # NaN/Inf weights named per layer, before anything is written
    with clock.stage("calibration-data", pc.calib):
        windows, calibration = calibration_windows(loaded.tokenizer, pc.calib, pc.nsamples, pc.seqlen, pc.seed)
        check_context(loaded.model, pc.seqlen, "seqlen")
        eval_data = None
        if ev is not None:
            eval_data = eval_tokens(loaded.tokenizer, ev.dataset)
            check_context(loaded.model, ev.seqlen, "eval seqlen")
            check_windows(eval_data[0], ev.seqlen, ev.windows, eval_data[1])
    return Prepared(request, loaded, owns_model, resolve_device(pc.device), windows, calibration, eval_data, plans,
                    checked)


def _run_path(request: RunRequest, store: RunStore | None, run_dir: str | Path | None) -> Path:
    if run_dir is None:
        store = store or RunStore()
        run_dir = store.path_for(request.name) if request.name else store.root / store.new_name(
            run_stem(Path(request.model).name, request.prune))
    run_dir = Path(run_dir)
    if (run_dir / RUN_RECORD.file).exists():
        raise EngineError(f"run directory {run_dir} already holds a run; choose another name")
    return run_dir


def _first_record(path: Path, prep: Prepared, clock: StageClock) -> RunRecord:
    loaded = prep.loaded
    return RunRecord(name=path.name, status=RunStatus.RUNNING, created=timestamp(), request=prep.request,
                     model=ModelInfo.from_json({"source": loaded.source, "label": loaded.label, **loaded.info}),
                     calibration=CalibrationInfo.from_json(prep.calibration), versions=package_versions(),
                     device=str(prep.device), timings=dict(clock.timings), writer=writer_identity())


def execute_run(request: RunRequest, store: RunStore | None = None, run_dir: str | Path | None = None,
                on_event: EventCallback = ignore_events, cancel: threading.Event | None = None,
                loaded: LoadedModel | None = None) -> Run:
    """Run `request`, writing its run directory as it goes; returns the finished Run.

    `loaded`: an already loaded model (the app's cache), which must match the request's model spec;
    it is deep-copied, never mutated. Bad input raises before anything is written; once the run
    directory exists, an error or a cancellation marks it 'failed' or 'cancelled' and propagates.
    """
    path = _run_path(request, store, run_dir)
    clock = StageClock(on_event, cancel)
    prep = prepare(request, loaded, clock)
    # the pruned weights written next to an offload folder die with the model that was pruned in place
    cleanup = (lambda: discard_pruned_copies(prep.loaded.model)) if prep.owns_model else None
    with record_lifecycle(RUN_RECORD, path, _first_record(path, prep, clock), clock, cleanup) as run:
        model = prep.loaded.model
        if not prep.owns_model:
            with clock.stage("copy", prep.loaded.label):
                model = copy.deepcopy(model)
        dense = _dense_kept_for_speed(model, prep, clock)  # before pruning: `model` may be the dense model itself
        run.update(**_evaluate_dense(prep, clock))
        zeroshot_dense = _zeroshot_dense(prep, clock)
        run.update(**_prune(model, prep, clock, path))
        run.update(**_evaluate_pruned(model, prep, clock))
        if zeroshot_dense is not None:
            run.update(zeroshot=_zeroshot_pruned(model, prep, clock, *zeroshot_dense))
        if request.speed is not None:
            run.update(speed=_speed(dense, model, prep, clock))
        del dense
        if request.save_model:
            run.update(**_save(model, prep, clock, run.record))
    return load_run(path)


def _evaluate_dense(prep: Prepared, clock: StageClock) -> dict[str, Any]:
    if prep.eval_data is None:
        return {}
    tokens, label = prep.eval_data
    with clock.stage("eval-dense", label):
        dense, cached = dense_perplexity(prep.loaded, tokens, label, prep.request.eval, prep.device, clock.cancel,
                                         clock.windows)
    return {"ppl_dense": dense.ppl, "ppl_dense_cached": cached}


def _zeroshot_dense(prep: Prepared, clock: StageClock) -> tuple[dict[str, Any], bool] | None:
    zc = prep.request.zeroshot
    if zc is None:
        return None
    with clock.stage("zeroshot-dense", ", ".join(zc.tasks)):
        return dense_zeroshot(prep.loaded, zc, prep.zeroshot_plans, prep.device)


def _prune(model: Any, prep: Prepared, clock: StageClock, path: Path) -> dict[str, Any]:
    pc = prep.request.prune
    on = f"on {len(prep.windows)}x{pc.seqlen} tokens" if pc.calibrate else "from the weights alone"
    with clock.stage("prune", f"{pc.label} {on}"):
        offset = clock.elapsed()  # the pipeline counts from its own start; events from a run count from the run's
        result = prune_model(model, prep.windows, pc, cancel=clock.cancel, on_event=lambda e: clock.on_event(
            dataclasses.replace(e, elapsed_s=e.elapsed_s + offset)), checked=prep.checked)
        clock.timings["prune_s"] = round(result.seconds, 3)
        clock.timings.update({f"prune_{k}": v for k, v in result.timings.items()})
        sparsity, layers = sparsity_of_blocks(model)
        files = write_records(path, result.records)  # sizes and checksums: truncation is detected
        # the windows themselves (a few kB): a bundle's command pins them, a repair re-creates the masks from them
        save_token_windows(path / CALIBRATION_FILE, prep.windows)
    peak = result.peak_device_bytes
    calibration = CalibrationInfo.from_json({**prep.calibration, "file": CALIBRATION_FILE})
    return {"structure": result.structure, "activations_on": result.activations_on, "world_size": result.world_size, "calibration": calibration,
            "mask_sha256": mask_checksum(model),
            "peak_device_mib": round(peak / 2**20, 1) if peak is not None else None, "sparsity": sparsity,
            "layers": tuple(LayerSparsity(**layer) for layer in layers),
            "blocks": tuple(result.blocks), "files": files}


def _evaluate_pruned(model: Any, prep: Prepared, clock: StageClock) -> dict[str, Any]:
    if prep.eval_data is None:
        return {}
    tokens, label = prep.eval_data
    with clock.stage("eval", label):
        pruned = perplexity_on_device(model, tokens, label, prep.request.eval, prep.device, clock.cancel, clock.windows)
    return {"ppl": pruned.ppl, "eval": EvalInfo(dataset=pruned.dataset, seqlen=pruned.seqlen, windows=pruned.windows,
                                               tokens=pruned.tokens, tokens_per_s=round(pruned.tokens_per_s, 1))}


def _zeroshot_pruned(model: Any, prep: Prepared, clock: StageClock, dense: dict[str, Any],
                     dense_cached: bool) -> ZeroShotRecord:
    zc = prep.request.zeroshot
    with clock.stage("zeroshot", ", ".join(zc.tasks)):
        pruned = evaluate_zeroshot(model, prep.loaded.tokenizer, zc, prep.device, prep.zeroshot_plans)
    return ZeroShotRecord(dense=ZeroShotScores.from_json(dense), pruned=ZeroShotScores.from_json(pruned), config=zc,
                          harness=pruned["harness"], dense_cached=dense_cached)


def _dense_kept_for_speed(model: Any, prep: Prepared, clock: StageClock) -> Any:
    """The dense model the speed measurement compares with: the loaded model when the run prunes a copy of it, else
    a copy made here before pruning (None when the run measures no speed)."""
    if prep.request.speed is None:
        return None
    if model is not prep.loaded.model:
        return prep.loaded.model
    with clock.stage("copy", "the dense model, kept for the speed measurement"):
        return copy.deepcopy(model)


def _speed(dense: Any, model: Any, prep: Prepared, clock: StageClock) -> SpeedRecord:
    """Dense and pruned, interleaved in this process, on the run's device: prefill of one evaluation window (a
    calibration window without evaluation), decode with the KV cache."""
    ev = prep.request.eval
    window = prep.eval_data[0][:, :ev.seqlen] if prep.eval_data is not None else prep.windows[:1]
    with clock.stage("speed", f"{window.shape[1]} tokens prefill, {prep.request.speed.decode_tokens} decoded"):
        with model_on_device(dense, prep.device), model_on_device(model, prep.device):
            return measure_speed(dense, model, window, prep.request.speed, prep.device)


def _save(model: Any, prep: Prepared, clock: StageClock, record: RunRecord) -> dict[str, Any]:
    """The pruned model (structurally pruned: in the form `inputs.shrunk` says loads it) and its model card."""
    folder = prep.request.save_model
    structure = record.structure
    with clock.stage("save", folder):
        if structure is not None:
            loader = save_pruned(model, prep.loaded.tokenizer, folder, width=structure.structure == "width")
            structure = dataclasses.replace(structure, loader=loader)
        else:
            # an offloaded model is gathered shard by shard in host memory: keep the shards small
            model.save_pretrained(folder, safe_serialization=True,
                                  **({"max_shard_size": "1GB"} if is_dispatched(model) else {}))
            prep.loaded.tokenizer.save_pretrained(folder)
            loader = "from_pretrained"
        card = model_card(dataclasses.replace(record, structure=structure), base_model(prep.loaded.source), loader)
        (Path(folder) / CARD_FILE).write_text(card)
    return {"saved_model": str(folder), "structure": structure}


def prune_on_rank(request: RunRequest) -> None:
    """A torch.distributed rank other than 0: load, calibrate on this rank's share, prune, write nothing.

    Rank 0 runs `execute_run`; its `prune_model` meets this one at every all-reduce.
    """
    loaded = load_model(request.model, dtype=request.dtype, trust_remote_code=request.trust_remote_code,
                        offload=request.offload)
    checked = check_for_pruning(loaded.model, request.prune)  # before the calibration data, as on rank 0
    windows, _ = calibration_windows(loaded.tokenizer, request.prune.calib, request.prune.nsamples,
                                     request.prune.seqlen, request.prune.seed)
    prune_model(loaded.model, windows, request.prune, checked=checked)
