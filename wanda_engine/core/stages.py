"""The stages a run goes through: one table, used by the runner, the pipeline, the sweep, the app.

Every StageStarted event names a stage of this table; the app shows its label, the runner records
its seconds under its timing key, and `time_left` estimates what remains from the stages still ahead.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str
    label: str  # plain words, also the end of "out of memory while ..."
    timing: str | None = None  # the key of run.json's timings that holds its seconds


STAGES = (  # in the order a run goes through them
    Stage("queued", "waiting in the queue"),
    Stage("load-model", "loading the model"),  # the app's worker and a sweep: once, before the runs
    Stage("sweep-point", "starting the next point of the sweep"),
    Stage("zeroshot-tasks", "checking the zero-shot tasks"),
    Stage("load", "loading and checking the model", "load_s"),
    Stage("calibration-data", "preparing the calibration and evaluation data", "data_s"),
    Stage("copy", "copying the dense model", "copy_s"),
    Stage("eval-dense", "evaluating the dense model", "eval_dense_s"),
    Stage("zeroshot-dense", "running the zero-shot tasks on the dense model", "zeroshot_dense_s"),
    Stage("owl", "measuring each block's outlier ratio (OWL)"),  # the pipeline's, inside pruning
    Stage("capture", "capturing the first block's inputs"),  # the pipeline's, inside pruning
    # the pipeline's, inside pruning: global allocation and depth score every block before removing any
    Stage("structure-scores", "scoring every block of the dense model"),
    Stage("prune", "pruning"),
    Stage("eval", "evaluating the pruned model", "eval_s"),
    Stage("zeroshot", "running the zero-shot tasks on the pruned model", "zeroshot_s"),
    Stage("speed", "measuring the dense and the pruned model's speed", "speed_s"),
    Stage("save", "saving the pruned model", "save_s"),
    # scoring a run that exists (runner/score.py): its pruned model again, from its saved model or its record
    Stage("recreate", "re-creating the pruned model from its record (its mask checked)"),
    # a prompt continued by the dense model and existing runs side by side (runner/generate.py)
    Stage("generate", "continuing the prompt"),
    # a repair's (repair/run.py), timed into repair.json's timings
    Stage("repair-load", "loading the pruned model to repair", "load_s"),
    Stage("repair-data", "preparing the training text", "data_s"),
    Stage("repair-eval", "evaluating the model under repair", "eval_s"),
    Stage("repair-train", "fine-tuning", "train_s"),
    Stage("repair-merge", "merging the adapters under the mask", "merge_s"),
    Stage("repair-save", "saving the repaired model", "save_s"),
)
BY_NAME = {s.name: s for s in STAGES}
ORDER = tuple(s.name for s in STAGES)
REPAIR_ORDER = tuple(name for name in ORDER if name.startswith("repair-"))  # a repair's, never a run's


def label(name: str) -> str:
    """A stage's plain words; a name outside the table (a job's 'done', 'failed') reads as itself."""
    stage = BY_NAME.get(name)
    return stage.label if stage else name


def stage_order(request: Any, copies_model: bool = True) -> list[str]:
    """The stages `request` (a RunRequest) goes through, in order. `copies_model`: the run was handed a
    loaded model (the app's cache), which it copies before pruning."""
    skipped = {"queued", "sweep-point", "recreate", "generate", *REPAIR_ORDER}
    if request.eval is None:
        skipped |= {"eval-dense", "eval"}
    if request.zeroshot is None:
        skipped |= {"zeroshot-tasks", "zeroshot-dense", "zeroshot"}
    if not request.save_model:
        skipped.add("save")
    if request.prune.layerwise != "owl":
        skipped.add("owl")
    if not (request.prune.structure and (request.prune.allocation == "global" or request.prune.structure.value == "depth")):
        skipped.add("structure-scores")
    if getattr(request, "speed", None) is None:
        skipped.add("speed")
    if not copies_model:
        skipped |= {"load-model", "copy"}
    return [name for name in ORDER if name not in skipped]


def expected_seconds(prune_memory: Mapping[str, float], eval_memory: Mapping[str, float],
                     spent: Mapping[str, float]) -> dict[str, float]:
    """Seconds each stage is expected to take: evaluations from the last run evaluated alike
    (`eval_memory`), the rest from the last run pruned alike (`prune_memory`); without either, the
    pruned model's evaluation takes what the dense one just took (`spent`: this run's stages so far)."""
    expected = {k: v for k, v in eval_memory.items() if k in ("eval", "eval-dense")}
    expected.update({k: v for k, v in prune_memory.items() if k not in ("eval", "eval-dense")})
    if "eval" not in expected and spent.get("eval-dense", 0.0) > 1.0:
        expected["eval"] = spent["eval-dense"]
    return expected


def stage_left(current: str, spent_in_current: float, remembered: Mapping[str, float], fraction: float) -> float | None:
    """Seconds left in the stage now running: extrapolated from its own pace when it reports its progress
    (`fraction` done: pruning by blocks, an evaluation by windows), else what is left of its remembered time;
    None when neither is known."""
    if fraction > 0:
        return spent_in_current / fraction * (1 - fraction)
    if current in remembered:
        return max(remembered[current] - spent_in_current, 0.0)
    return None


def time_left(order: Sequence[str], current: str, spent_in_current: float, remembered: Mapping[str, float],
              prune_fraction: float, prune_spent: float, stage_fraction: float = 0.0,
              dense_ahead: float | None = None) -> tuple[float | None, bool]:
    """Seconds left in a run now in stage `current`, and whether the estimate leaves a stage out.

    Pruning is extrapolated from its own pace (`prune_fraction` done in `prune_spent` seconds), an evaluation
    from its windows (`stage_fraction` done); otherwise the current stage takes what is left of its remembered
    time; each stage after it takes its remembered time once. The dense evaluation ahead is left out (cached after
    the first run alike) unless `dense_ahead` says what it will take. None when pruning is still ahead or under
    way with nothing to go by; partial when the pruned model's evaluation has no remembered time.
    """
    if current == "prune":
        left = stage_left(current, prune_spent, {}, prune_fraction) if prune_fraction > 0 else \
            stage_left(current, spent_in_current, remembered, 0.0)
        if left is None:
            return None, False
    else:
        left = stage_left(current, spent_in_current, remembered, stage_fraction) or 0.0
    ahead = order[order.index(current) + 1:] if current in order else order
    partial = False
    for name in ahead:
        if name == "eval-dense":
            left += dense_ahead or 0.0
        elif name in remembered:
            left += remembered[name]
        elif name == "prune":
            return None, False
        else:
            partial = partial or name == "eval"
    return left, partial
