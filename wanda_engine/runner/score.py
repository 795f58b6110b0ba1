"""Scoring a run that already exists on zero-shot tasks: its dense model (cached per model and task settings, as in
a run) and its pruned model, re-created from its record or loaded from its saved model with the mask checked
(`recreate`); the results join the run's run.json ("zeroshot"), beside any it had at the same settings.

Everything that can fail on bad input (a run that is not complete, unknown tasks, settings that do not agree with
the run's earlier results) fails before any model is loaded, and nothing is written until both models are scored.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from ..config import ScoreRequest
from ..core.errors import EngineError
from ..core.events import EventCallback, ignore_events
from ..evaluation.tasks import check_tasks
from ..evaluation.zeroshot import evaluate_zeroshot
from ..inputs.device import resolve_device
from ..inputs.models import LoadedModel
from ..store.run_record import RunRecord
from ..store.run_store import Run, atomic_write_json, load_run
from ..store.zeroshot_record import ZeroShotRecord, ZeroShotScores, joined_config
from .dense import dense_zeroshot
from .lifecycle import StageClock, timestamp
from .recreate import dense_copy, pruned_model


def scorable_run(request: ScoreRequest) -> Run:
    """The complete run `request` scores, whose earlier results (if any) the new ones can join; one sentence
    otherwise. Loads no model: the app's worker asks before it loads the dense model."""
    run = load_run(request.run)
    if run.record is None or not run.complete:
        raise EngineError(f"run {Path(request.run).name!r} is not a complete run ({run.status}); only a finished "
                          "run can be scored")
    joined_config(run.record.zeroshot, request.zeroshot)
    return run


def _merged(earlier: ZeroShotScores | None, new: dict) -> ZeroShotScores:
    scores = ZeroShotScores.from_json(new)
    if earlier is None:
        return scores
    results = {**earlier.results, **scores.results}
    return dataclasses.replace(scores, tasks=tuple(results), results=results,
                               seconds=(earlier.seconds or 0.0) + (scores.seconds or 0.0))


def score_run(request: ScoreRequest, on_event: EventCallback = ignore_events, cancel: threading.Event | None = None,
              loaded: LoadedModel | None = None) -> RunRecord:
    """Score `request.run`'s dense and pruned models on `request.zeroshot`'s tasks and add the results to its
    run.json; returns the updated record. `loaded`: the run's dense model already loaded (the app's cache): copied,
    never changed."""
    clock = StageClock(on_event, cancel)
    run, zc = scorable_run(request), request.zeroshot
    record = run.record
    config = joined_config(record.zeroshot, zc)
    with clock.stage("zeroshot-tasks", ", ".join(zc.tasks)):
        plans = check_tasks(zc)
    device = resolve_device(request.device)
    with clock.stage("load", record.request.model):
        dense = loaded if loaded is not None else dense_copy(record, None)
    with clock.stage("zeroshot-dense", ", ".join(zc.tasks)):
        dense_scores, cached = dense_zeroshot(dense, zc, plans, device)
    with clock.stage("recreate", f"run {run.name}"):
        pruned = pruned_model(run.path, record, request.device, dense, cancel)  # a copy of the dense model, pruned
    with clock.stage("zeroshot", ", ".join(zc.tasks)):
        pruned_scores = evaluate_zeroshot(pruned.model, pruned.tokenizer, zc, device, plans)
    earlier = record.zeroshot
    how = {"tasks": list(zc.tasks), "at": timestamp(), "pruned_model": pruned.detail,
           "mask_verified": pruned.mask_verified}
    result = ZeroShotRecord(
        dense=_merged(earlier.dense if earlier else None, dense_scores),
        pruned=_merged(earlier.pruned if earlier else None, pruned_scores), config=config,
        harness=pruned_scores["harness"], dense_cached=cached if earlier is None else bool(cached and earlier.dense_cached),
        extra={**(earlier.extra if earlier else {}),
               "scored_later": [*((earlier.extra.get("scored_later") or []) if earlier else []), how]})
    updated = dataclasses.replace(record, zeroshot=result)
    if load_run(run.path).record != record:  # written meanwhile (renamed, rescored): keep what is there
        raise EngineError(f"run {run.name!r} changed while it was scored; score it again")
    atomic_write_json(run.path / "run.json", updated.to_json())
    return updated
