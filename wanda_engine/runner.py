"""One whole run: load → calibration windows → dense perplexity (cached) → prune → evaluate → run directory.

The CLI and the app both call `execute_run`; neither repeats any of these steps.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from . import __version__
from .config import EvalConfig, OffloadConfig, PruneConfig
from .data import calibration_windows, eval_tokens
from .errors import ConfigError, EngineError, OutOfMemory, PruneCancelled
from .evaluate import Perplexity, check_windows, perplexity
from .events import EventCallback, StageStarted, ignore_events
from .models import LoadedModel, cache_dir, check_finite_weights, context_length, load_model, sparsity_of_blocks
from .offload import discard_pruned_copies, is_dispatched, model_on_device
from .pipeline import check_prunable, prune_model, resolve_device
from .runs import (Run, RunStore, atomic_write_json, check_run_name, create_run_dir, load_run, write_records,
                   writer_identity)
from .zeroshot import TaskPlan, ZeroShotConfig, check_tasks, evaluate_zeroshot, plans_stamp

OOM_ERRORS = (torch.OutOfMemoryError, MemoryError)


def out_of_memory(error: BaseException, during: str) -> OutOfMemory:
    """An allocation failure as one sentence with what to try instead; frees what the allocator caches."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        try:
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - a broken CUDA context must not hide the real error
            pass
    where = "GPU" if isinstance(error, torch.OutOfMemoryError) else "host"
    first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
    return OutOfMemory(
        f"out of {where} memory while {during} ({first}); try fewer or shorter calibration windows "
        "(--nsamples, --seqlen), a smaller --batch-size, fewer or shorter evaluation windows, "
        "a smaller --dtype (bfloat16), another device (--device cpu or cuda), or a smaller model"
    )


@dataclass(frozen=True)
class RunRequest:
    """Everything one run needs. eval=None skips perplexity."""

    model: str = "default"
    prune: PruneConfig = field(default_factory=PruneConfig)
    eval: EvalConfig | None = field(default_factory=EvalConfig)
    dtype: str = "float32"
    save_model: str | None = None
    name: str | None = None
    trust_remote_code: bool = False
    zeroshot: ZeroShotConfig | None = None  # lm-eval tasks on the dense and pruned model; None skips them
    offload: OffloadConfig | None = None  # accelerate device_map under a memory budget; None: all on one device

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must be 'default', a Hugging Face id, a folder or a .gguf file")
        if self.name is not None:
            check_run_name(self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "dtype": self.dtype, **self.prune.to_dict(),
                "eval": self.eval.to_dict() if self.eval else None, "save_model": self.save_model,
                "trust_remote_code": self.trust_remote_code,
                "zeroshot": self.zeroshot.to_dict() if self.zeroshot else None,
                "offload": self.offload.to_dict() if self.offload else None}


def run_stem(model_name: str, pc: PruneConfig) -> str:
    """The readable part of a default run name, e.g. 'default-wanda-unstructured-0.50'."""
    return f"{model_name}-{pc.method}{'-variant' if pc.variant else ''}-{pc.pattern.replace(':', 'of')}-{pc.target_sparsity:.2f}"


def model_fingerprint(loaded: LoadedModel) -> str:
    """Identifies the weights for the dense-perplexity cache without hashing gigabytes."""
    src = Path(loaded.source)
    stamp = ""
    if src.exists():
        files = sorted(p for p in (src.iterdir() if src.is_dir() else [src]) if p.is_file())
        stamp = ",".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files)
    return f"{loaded.source}|{loaded.label}|{loaded.info.get('params')}|{loaded.info.get('dtype')}|{stamp}"


def _cached(file: str, key: str, compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """A dense-model result from the JSON cache `file` in cache_dir(), or computed and stored there."""
    path = cache_dir() / file
    try:
        cache = json.loads(path.read_text()) if path.exists() else {}
    except (ValueError, OSError):
        cache = {}
    if key in cache:
        return cache[key], True
    cache[key] = compute()
    try:
        atomic_write_json(path, cache)
    except OSError:
        pass  # a read-only cache only costs a recomputation next time
    return cache[key], False


def dense_perplexity(loaded: LoadedModel, tokens: torch.Tensor, label: str, ev: EvalConfig,
                     device: torch.device, cancel: threading.Event | None = None) -> tuple[Perplexity, bool]:
    """The unpruned model's perplexity on the same windows, cached per model and evaluation settings."""
    key = f"{model_fingerprint(loaded)}|{label}|{tokens.numel()}|{ev.seqlen}|{ev.windows}"
    result, cached = _cached("dense_perplexity.json", key,
                             lambda: _evaluate(loaded.model, tokens, label, ev, device, cancel).to_dict())
    return Perplexity(**result), cached


def dense_zeroshot(loaded: LoadedModel, zc: ZeroShotConfig, plans: list[TaskPlan],
                   device: torch.device) -> tuple[dict[str, Any], bool]:
    """The unpruned model's zero-shot results, cached per model, task settings, harness and local task files."""
    key = f"{model_fingerprint(loaded)}|{json.dumps(zc.to_dict(), sort_keys=True)}|{plans_stamp(plans)}"
    return _cached("dense_zeroshot.json", key, lambda: evaluate_zeroshot(loaded.model, loaded.tokenizer, zc, device, plans))


def _evaluate(model: Any, tokens: torch.Tensor, label: str, ev: EvalConfig, device: torch.device,
              cancel: threading.Event | None = None) -> Perplexity:
    with model_on_device(model, device):
        return perplexity(model, tokens, ev.seqlen, label, ev.windows, ev.batch_size, device, cancel)


def _versions() -> dict[str, str]:
    import transformers

    return {"wanda_engine": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def execute_run(request: RunRequest, store: RunStore | None = None, run_dir: str | Path | None = None,
                on_event: EventCallback = ignore_events, cancel: threading.Event | None = None,
                loaded: LoadedModel | None = None) -> Run:
    """Run `request`, writing its run directory as it goes; returns the finished Run.

    `loaded`: an already loaded model (the app's cache); it is deep-copied, never mutated.
    Bad input raises before anything is written; once the run directory exists, an error or a
    cancellation marks it 'failed' or 'cancelled' and propagates.
    """
    t_start = time.perf_counter()
    keep_loaded = loaded is not None
    elapsed = lambda: time.perf_counter() - t_start  # noqa: E731

    current = ["starting"]  # the stage an out-of-memory error is reported in

    def stage(name: str, detail: str) -> None:
        """Announce a stage; a cancel request stops the run here, as it does between blocks."""
        if cancel is not None and cancel.is_set():
            raise PruneCancelled(f"cancelled before the {name!r} stage")
        current[0] = {"load": "loading the model", "calibration-data": "preparing the calibration data",
                      "eval-dense": "evaluating the dense model", "prune": "pruning", "eval": "evaluating the pruned model",
                      "save": "saving the pruned model"}.get(name, f"in stage {name!r}")
        on_event(StageStarted(elapsed(), name, detail))

    pc, ev = request.prune, request.eval
    device = resolve_device(pc.device)
    if run_dir is None:
        store = store or RunStore()
        run_dir = store.path_for(request.name) if request.name else store.root / store.new_name(
            run_stem(Path(request.model).name, pc))
    run_dir = Path(run_dir)
    if (run_dir / "run.json").exists():
        raise EngineError(f"run directory {run_dir} already holds a run; choose another name")

    # Phase 1: everything that can fail on bad input, before anything is written or pruned.
    timings: dict[str, float] = {}
    zc, zs_plans = request.zeroshot, []
    if zc is not None:  # first: unknown tasks, missing files or hub data offline fail before the model loads
        stage("zeroshot-tasks", ", ".join(zc.tasks))
        zs_plans = check_tasks(zc)
    stage("load", request.model)
    t = time.perf_counter()
    if loaded is None:
        try:
            loaded = load_model(request.model, dtype=request.dtype, trust_remote_code=request.trust_remote_code,
                                offload=request.offload)
        except OOM_ERRORS as e:
            raise out_of_memory(e, current[0]) from e
    timings["load_s"] = round(time.perf_counter() - t, 3)
    check_prunable(loaded.model, pc)
    check_finite_weights(loaded.model)  # NaN/Inf weights: refused, named per layer, before anything is written
    stage("calibration-data", pc.calib)
    t = time.perf_counter()
    windows, calib_info = calibration_windows(loaded.tokenizer, pc.calib, pc.nsamples, pc.seqlen, pc.seed)
    limit = context_length(loaded.model)
    if limit is not None and pc.seqlen > limit:
        raise ConfigError(f"seqlen {pc.seqlen} is longer than the model's context of {limit} tokens")
    eval_data = None
    if ev is not None:
        eval_data = eval_tokens(loaded.tokenizer, ev.dataset)
        if limit is not None and ev.seqlen > limit:
            raise ConfigError(f"eval seqlen {ev.seqlen} is longer than the model's context of {limit} tokens")
        check_windows(eval_data[0], ev.seqlen, ev.windows, eval_data[1])
    timings["data_s"] = round(time.perf_counter() - t, 3)

    # Phase 2: the run directory exists from here on, marked 'running' until it completes.
    meta: dict[str, Any] = {"format": 1, "status": "running", "name": run_dir.name,
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": request.to_dict(),
                            "versions": _versions(), "device": str(device), "timings": timings,
                            "model": {"source": loaded.source, "label": loaded.label, **loaded.info},
                            "calibration": calib_info, "writer": writer_identity()}
    create_run_dir(run_dir, meta)  # atomically: the folder appears with its run.json, status 'running'
    try:
        t = time.perf_counter()
        model = copy.deepcopy(loaded.model) if keep_loaded else loaded.model
        timings["copy_s"] = round(time.perf_counter() - t, 3)

        if eval_data is not None:
            stage("eval-dense", eval_data[1])
            t = time.perf_counter()
            dense, cached = dense_perplexity(loaded, eval_data[0], eval_data[1], ev, device, cancel)
            timings["eval_dense_s"] = round(time.perf_counter() - t, 3)
            meta["ppl_dense"], meta["ppl_dense_cached"] = dense.ppl, cached

        if zc is not None:  # before pruning: without `loaded` from the caller, `model` is the dense model itself
            stage("zeroshot-dense", ", ".join(zc.tasks))
            t = time.perf_counter()
            zs_dense, zs_cached = dense_zeroshot(loaded, zc, zs_plans, device)
            timings["zeroshot_dense_s"] = round(time.perf_counter() - t, 3)

        stage("prune", f"{pc.label} on {len(windows)}x{pc.seqlen} tokens")
        offset = elapsed()  # the pipeline counts from its own start; events from a run count from the run's
        result = prune_model(model, windows, pc, cancel=cancel,
                             on_event=lambda e: on_event(dataclasses.replace(e, elapsed_s=e.elapsed_s + offset)))
        timings["prune_s"] = round(result.seconds, 3)
        timings.update({f"prune_{k}": v for k, v in result.timings.items()})
        meta["activations_on"] = result.activations_on
        meta["world_size"] = result.world_size  # torch.distributed ranks that shared the calibration windows
        if result.peak_device_bytes is not None:
            meta["peak_device_mib"] = round(result.peak_device_bytes / 2**20, 1)
        sparsity, layers = sparsity_of_blocks(model)
        meta.update({"sparsity": sparsity, "layers": layers, "blocks": [b.to_dict() for b in result.blocks]})
        meta["files"] = write_records(run_dir, result.records)  # sizes and checksums: truncation is detected

        if eval_data is not None:
            stage("eval", eval_data[1])
            t = time.perf_counter()
            pruned = _evaluate(model, eval_data[0], eval_data[1], ev, device, cancel)
            timings["eval_s"] = round(time.perf_counter() - t, 3)
            meta["ppl"] = pruned.ppl
            meta["eval"] = {k: v for k, v in pruned.to_dict().items() if k not in ("ppl", "seconds")}
            meta["eval"]["tokens_per_s"] = round(pruned.tokens / max(pruned.seconds, 1e-9), 1)
        else:
            meta["ppl"] = meta["ppl_dense"] = meta["eval"] = None

        if zc is not None:
            stage("zeroshot", ", ".join(zc.tasks))
            t = time.perf_counter()
            zs_pruned = evaluate_zeroshot(model, loaded.tokenizer, zc, device, zs_plans)
            timings["zeroshot_s"] = round(time.perf_counter() - t, 3)
            meta["zeroshot"] = {"dense": zs_dense, "pruned": zs_pruned, "config": zc.to_dict(),
                                "harness": zs_pruned["harness"], "dense_cached": zs_cached}

        if request.save_model:
            stage("save", request.save_model)
            t = time.perf_counter()
            # an offloaded model is gathered shard by shard in host memory: keep the shards small
            model.save_pretrained(request.save_model, safe_serialization=True,
                                  **({"max_shard_size": "1GB"} if is_dispatched(model) else {}))
            loaded.tokenizer.save_pretrained(request.save_model)
            timings["save_s"] = round(time.perf_counter() - t, 3)
            meta["saved_model"] = str(request.save_model)
        timings["total_s"] = round(elapsed(), 3)
        meta["status"] = "complete"
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(run_dir / "run.json", meta)
    except BaseException as e:
        if isinstance(e, OOM_ERRORS):
            oom = out_of_memory(e, current[0])
            e.__traceback__ = None  # let the frames holding the run's tensors go
            meta["status"], meta["error"] = "failed", str(oom)
        else:
            oom = None
            meta["status"] = "cancelled" if isinstance(e, (PruneCancelled, KeyboardInterrupt)) else "failed"
            meta["error"] = str(e) if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
        timings["total_s"] = round(elapsed(), 3)
        try:  # best effort: the original error matters more than a failed status write
            atomic_write_json(run_dir / "run.json", meta)
        except OSError:
            pass
        if oom is not None:
            raise oom from None
        raise
    finally:
        if not keep_loaded:  # the pruned weights written next to an offload folder die with this model
            discard_pruned_copies(loaded.model)
    return load_run(run_dir)


def prune_on_rank(request: RunRequest) -> None:
    """A torch.distributed rank other than 0: load, calibrate on this rank's share, prune, write nothing.

    Rank 0 runs `execute_run`; its `prune_model` meets this one at every all-reduce.
    """
    loaded = load_model(request.model, dtype=request.dtype, trust_remote_code=request.trust_remote_code,
                        offload=request.offload)
    check_prunable(loaded.model, request.prune)
    windows, _ = calibration_windows(loaded.tokenizer, request.prune.calib, request.prune.nsamples,
                                     request.prune.seqlen, request.prune.seed)
    prune_model(loaded.model, windows, request.prune)
