"""One repair of a pruned run: validate -> start (saved or re-created model) -> train -> evaluate -> repair.json.

Everything that can fail on bad input (the run, the config, the training text, the model's start) fails before
anything is written. Then <run>/repairs/<name>/repair.json goes from 'running' to 'complete', 'failed' or
'cancelled' through the runs' one lifecycle (`runner.lifecycle.record_lifecycle`), written at its start, at each
evaluation and at its end; the pruned run's run.json and saved model are only ever read.
"""
from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.status import RunStatus
from ..core.errors import ConfigError, EngineError
from ..core.events import EventCallback, StageStarted, ignore_events
from ..evaluation.perplexity import check_windows, perplexity
from ..inputs.data import eval_tokens
from ..inputs.device import resolve_device
from ..inputs.layers import check_context
from ..inputs.models import LoadedModel
from ..pruning.checks import mask_checksum, sparsity_of_blocks
from ..runner.lifecycle import (OOM_ERRORS, RecordKind, RecordWriter, StageClock, out_of_memory, package_versions,
                                record_lifecycle, timestamp)
from ..store.run_record import EvalInfo, RunRecord
from ..store.run_store import atomic_write_json, load_run
from .config import RepairRequest
from .data import TrainingText, training_text
from .events import RepairEval, RepairStep
from .lora import add_adapters, adapted_layers, dense_merge, masked_merge, merged_for_evaluation, target_names
from .record import EVALUATED, RECORD_FILE, RepairRecord, repairs_dir
from .start import Start, start_model
from .train import block_parameters, pruned_masks, train


def _create_repair_folder(path: Path, first: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()  # two repairs choosing one name: one wins, the other is told
    except FileExistsError:
        raise EngineError(f"repair {path.name!r} was just started by another process; choose another name") from None
    atomic_write_json(path / RECORD_FILE, first)


# a repair's `finished` says when it stopped, however it stopped
REPAIR_RECORD = RecordKind(RECORD_FILE, _create_repair_folder, finished_when_stopped=True)


def pruned_run(request: RepairRequest) -> tuple[Path, RunRecord]:
    """The run to repair, checked: complete, evaluated, not offloaded; EngineError in one sentence otherwise."""
    run = load_run(request.run)
    if run.record is None or not run.complete:
        raise EngineError(f"run {run.name!r} cannot be repaired: it is {run.status}" + (f" ({run.error})" if run.error else ""))
    record = run.record
    if record.request.eval is None:
        raise EngineError(f"run {run.name!r} was not evaluated (eval none): a repair measures perplexity on the "
                          "run's evaluation windows")
    if record.request.offload is not None:
        raise EngineError(f"run {run.name!r} offloaded its model; a repair trains the whole model in memory")
    return run.path, record


def _repair_path(run_dir: Path, request: RepairRequest) -> Path:
    root = repairs_dir(run_dir)
    if request.name is not None:
        if (root / request.name).exists():
            raise ConfigError(f"repair name {request.name!r} is taken in run {run_dir.name!r}; choose another")
        return root / request.name
    stem = request.config.stem()
    n = 1
    while (root / (stem if n == 1 else f"{stem}-{n}")).exists():
        n += 1
    return root / (stem if n == 1 else f"{stem}-{n}")


def _check_save_folder(request: RepairRequest, record: RunRecord) -> None:
    """The repaired model never overwrites anything, least of all the run's own saved model."""
    if request.save_model is None:
        return
    folder = Path(request.save_model).expanduser()
    if record.saved_model and folder.resolve() == Path(record.saved_model).expanduser().resolve():
        raise ConfigError("repair save_model is the run's own saved model; the pruned run is never overwritten")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"repair save_model {str(folder)!r} already holds files; choose a new folder")


@dataclass
class _Prepared:
    path: Path
    record: RunRecord
    start: Start
    text: TrainingText
    eval_data: tuple[torch.Tensor, str]
    device: torch.device


def _prepare(request: RepairRequest, clock: StageClock, loaded: LoadedModel | None) -> _Prepared:
    config = request.config
    run_dir, record = pruned_run(request)
    path = _repair_path(run_dir, request)
    _check_save_folder(request, record)
    device = resolve_device(config.device)
    with clock.stage("repair-load", "the dense model" if config.dense else f"run {record.name}"):
        start = start_model(run_dir, record, config.dense, config.device, loaded, clock.cancel)
    with clock.stage("repair-data", config.train_text):
        check_context(start.model, config.seqlen, "repair seqlen")
        text = training_text(config, record, start.tokenizer)
        ev = record.request.eval
        tokens, label = eval_tokens(start.tokenizer, ev.dataset)
        check_windows(tokens, ev.seqlen, ev.windows, label)
        if config.method == "lora":
            target_names(start.model, config.lora_targets)  # unknown targets fail before anything is written
    return _Prepared(path, record, start, text, (tokens, label), device)


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def _first_record(request: RepairRequest, prep: _Prepared) -> RepairRecord:
    config, model = request.config, prep.start.model
    sparsity, _ = sparsity_of_blocks(model)
    evaluated = EVALUATED[config.evaluate] if config.method == "lora" else EVALUATED["finetune"]
    return RepairRecord(name=prep.path.name, status=RunStatus.RUNNING, created=timestamp(), run=prep.record.name,
                        request=request, start=prep.start.how, evaluated=evaluated,
                        mask_sha256_before=mask_checksum(model), mask_verified=prep.start.mask_verified,
                        sparsity_before=sparsity, train={**prep.text.describe(config), "start": prep.start.detail},
                        versions=package_versions(), device=str(prep.device))


def execute_repair(request: RepairRequest, on_event: EventCallback = ignore_events,
                   cancel: threading.Event | None = None, loaded: LoadedModel | None = None) -> RepairRecord:
    """Repair the run `request.run` names; returns the finished record (also in <run>/repairs/<name>/repair.json).

    Everything that can fail on bad input raises (one EngineError sentence) before anything is written.
    `loaded`: the run's dense model already loaded (the app's cache, matching the run's model spec); it is
    deep-copied, never mutated. Cancel is honoured between steps: the repair reads 'cancelled'."""
    clock = StageClock(on_event, cancel)
    prep = _prepare(request, clock, loaded)
    with record_lifecycle(REPAIR_RECORD, prep.path, _first_record(request, prep), clock) as repair:
        try:
            _Session(request, prep, clock, repair).run()
        except OOM_ERRORS as e:
            e.__traceback__ = None  # let the frames holding the model and the optimizer's state go
            raise out_of_memory(e, "repairing the model") from None
        finally:  # before the lifecycle's last write, however the repair ends
            repair.update(peak_rss_mib=_peak_rss_mib())
    return repair.record


class _Session:
    """The training and the evaluations of one prepared repair, feeding its record as they happen."""

    def __init__(self, request: RepairRequest, prep: _Prepared, clock: StageClock,
                 repair: RecordWriter[RepairRecord]):
        self.request, self.config, self.prep, self.clock, self.repair = request, request.config, prep, clock, repair
        self.eval_s = 0.0

    def evaluate(self, model: Any, step: int) -> None:
        tokens, label = self.prep.eval_data
        ev = self.prep.record.request.eval
        self.clock.on_event(StageStarted(self.clock.elapsed(), "repair-eval", f"after {step} steps, on {label}"))
        t = time.perf_counter()
        # one window at a time: the run's windows and sums, fewer logits alive next to the optimizer's state
        result = perplexity(model, tokens, ev.seqlen, label, ev.windows, 1, self.prep.device, self.clock.cancel)
        self.eval_s += time.perf_counter() - t
        r = self.repair.record
        self.repair.update(evals=(*r.evals, (step, step * self.config.batch_size * self.config.seqlen, result.ppl)),
                           ppl_before=result.ppl if step == 0 else r.ppl_before, ppl_after=result.ppl,
                           eval=EvalInfo(result.dataset, result.seqlen, result.windows, result.tokens,
                                         round(result.tokens_per_s, 1)),
                           timings={**r.timings, "eval_s": round(self.eval_s, 3)})
        self.repair.write()
        self.clock.on_event(RepairEval(self.clock.elapsed(), step, result.ppl))

    def on_step(self, event: RepairStep) -> None:
        r = self.repair.record
        self.repair.update(losses=(*r.losses, (event.step, event.loss, event.lr, round(event.elapsed_s, 3))))
        self.clock.on_event(event)

    def run(self) -> None:
        model = self.prep.start.model.to(self.prep.device)
        self.evaluate(model, 0)
        final = self._lora(model) if self.config.method == "lora" else self._finetune(model)
        self.evaluate(final, self.config.steps)
        if self.request.save_model:
            with self.clock.stage("repair-save", self.request.save_model):
                final.save_pretrained(self.request.save_model, safe_serialization=True)  # adapter mode: the adapter
                self.prep.start.tokenizer.save_pretrained(self.request.save_model)
            self.repair.update(saved_model=self.request.save_model)
        self._check_zeros(final.unload() if self.config.evaluate == "adapter" and self.config.method == "lora" else final)

    def _train(self, model: Any, params: list[torch.nn.Parameter], masks: dict | None,
               evaluated: Callable[[], AbstractContextManager], trained: str) -> None:
        r = self.repair.record
        self.repair.update(train={**r.train, "trained": trained, "parameters": sum(p.numel() for p in params)})
        self.clock.on_event(StageStarted(self.clock.elapsed(), "repair-train", self.config.label()))

        def evaluate_at(step: int) -> None:
            with evaluated() as m:
                self.evaluate(m, step)
            self.clock.on_event(StageStarted(self.clock.elapsed(), "repair-train", self.config.label()))

        done = train(model, params, self.prep.text.windows, self.config, self.prep.device, masks, self.on_step,
                     self.clock.cancel, evaluate_at, self.clock.elapsed)
        r = self.repair.record
        self.repair.update(timings={**r.timings, "train_s": done.seconds},
                           train={**r.train, "guard_changed": done.guard_changed})

    def _lora(self, model: Any) -> Any:
        c = self.config
        with torch.random.fork_rng(devices=[]):  # the adapters' A init from the repair's seed, global RNG untouched
            torch.manual_seed(c.seed)
            peft_model = add_adapters(model, c)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        targets = ", ".join(c.lora_targets) if c.lora_targets else "every decoder linear"
        trained = (f"LoRA adapters (rank {c.lora_rank}, alpha {c.lora_alpha:g}) on {len(adapted_layers(peft_model))} "
                   f"linears ({targets}); every other weight frozen")
        if c.evaluate == "adapter":
            self._train(peft_model, params, None, lambda: nullcontext(peft_model), trained)
            return peft_model
        self._train(peft_model, params, None, lambda: merged_for_evaluation(peft_model, masked=not c.dense), trained)
        with self.clock.stage("repair-merge", "W + (B A) ⊙ (W ≠ 0)" if not c.dense else "W + B A"):
            return dense_merge(peft_model) if c.dense else masked_merge(peft_model)

    def _finetune(self, model: Any) -> Any:
        params = block_parameters(model)
        masks = None if self.config.dense else pruned_masks(model)
        trained = ("every parameter of the decoder blocks; embeddings, final norm and head frozen"
                   + ("" if masks is None else "; the pruned weights' gradients masked to zero"))
        self._train(model, params, masks, lambda: nullcontext(model), trained)
        return model

    def _check_zeros(self, model: Any) -> None:
        sparsity, _ = sparsity_of_blocks(model)
        after = mask_checksum(model)
        self.repair.update(sparsity_after=sparsity, mask_sha256_after=after)
        if not self.config.dense and after != self.repair.record.mask_sha256_before:
            raise EngineError(f"the repair changed the pruned model's zeros (sparsity {self.repair.record.sparsity_before:.4%} "
                              f"-> {sparsity:.4%}); this is a bug, the repaired weights are not kept")
