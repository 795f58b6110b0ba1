"""What runs cost before they run, from this machine's past runs (the run store's timings): one run, the Compare's
pair, a sweep's plan; and the sentence a page says about it. Never a number written in advance: without a run
alike on this machine the estimate is unknown, and says so.

Torch-free (the sweep's plan is only a type here): the app's pages and its job runner read it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import PruneConfig, RunRequest
from ..core.stages import STAGES
from ..store.run_record import RunRecord

if TYPE_CHECKING:
    from .grid import SweepPlan

# the stages before pruning that every run of the app goes through, and their timing keys in run.json
SETUP = {s.name: s.timing for s in STAGES if s.name in ("load", "calibration-data", "copy")}


def _median(values: Sequence[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def cost_kind(prune: PruneConfig) -> str:
    """Which earlier runs a run's pruning time is estimated from: whatever sums the Gram matrix and solves on it
    (SparseGPT, the OBS update of any mask) costs alike; a selection on calibrated statistics (magnitude, Wanda,
    RIA, with or without protection) costs the same two passes per block; pruning from the weights alone costs no
    passes; OWL adds one dense pass."""
    if prune.needs_gram:
        kind = "a solve on the Gram matrix"
    elif not prune.calibrate:
        kind = "a selection from the weights alone"
    else:
        kind = "a selection on calibrated statistics"
    return kind + (" after OWL's pass" if prune.layerwise == "owl" else "")


def calibration_tokens(prune: PruneConfig) -> int:
    """The calibration tokens a run reads: none when it prunes from the weights alone."""
    return prune.nsamples * prune.seqlen if prune.calibrate else 0


def _prune_seconds(past: RunRecord, prune: PruneConfig) -> float:
    """A past run's pruning time, scaled to `prune`'s calibration tokens when both calibrate."""
    scale = calibration_tokens(prune) / calibration_tokens(past.request.prune) if prune.calibrate else 1.0
    return past.timings["prune_s"] * scale


@dataclass(frozen=True)
class RunCost:
    """One run's expected seconds on this machine, stage by stage, and the past runs they come from."""

    request: RunRequest
    prune: tuple[float, ...]  # each alike run's pruning time, scaled to this request's tokens
    evaluation: tuple[float, ...]  # each alike run's evaluation of the pruned model
    setup: dict[str, float]  # stage -> its median over this model's runs (checking the model, its data, the copy)
    dense_cached: bool  # a run alike evaluated the dense model: its perplexity is cached

    @property
    def known(self) -> bool:
        return bool(self.prune) and (self.request.eval is None or bool(self.evaluation))

    @property
    def dense_evaluation(self) -> float:
        """The dense model's evaluation, when it is not cached: as long as the pruned model's."""
        return 0.0 if self.dense_cached or self.request.eval is None else (_median(self.evaluation) or 0.0)

    def seconds(self, with_dense: bool = True) -> float | None:
        """The run's median expected seconds (None when no run alike has finished here)."""
        if not self.known:
            return None
        evaluation = _median(self.evaluation) or 0.0
        return sum(self.setup.values()) + _median(self.prune) + evaluation + (self.dense_evaluation if with_dense else 0.0)

    def span(self) -> tuple[float, float] | None:
        """The fastest and slowest of the runs alike, as this run would take them."""
        if not self.known:
            return None
        evaluation = (min(self.evaluation), max(self.evaluation)) if self.evaluation else (0.0, 0.0)
        rest = sum(self.setup.values()) + self.dense_evaluation
        return rest + min(self.prune) + evaluation[0], rest + max(self.prune) + evaluation[1]

    @property
    def runs(self) -> int:
        return len(self.prune)

    def stage_seconds(self) -> dict[str, float]:
        """Each stage's expected seconds, by the stage table's names (only those known)."""
        out = dict(self.setup)
        if self.prune:
            out["prune"] = _median(self.prune)
        if self.evaluation:
            out["eval"] = _median(self.evaluation)
            out["eval-dense"] = self.dense_evaluation
        return out


def run_cost(request: RunRequest, past_runs: Sequence[RunRecord]) -> RunCost:
    """What `request` costs here, from the complete runs in `past_runs` on the same model."""
    same_model = [m for m in past_runs if m.complete and m.request.model == request.model]
    kind = cost_kind(request.prune)
    prune = tuple(_prune_seconds(m, request.prune) for m in same_model
                  if m.timings.get("prune_s") and cost_kind(m.request.prune) == kind)
    evaluated = [m for m in same_model if request.eval is not None and m.request.eval == request.eval]
    evaluation = tuple(m.timings["eval_s"] for m in evaluated if m.timings.get("eval_s"))
    setup = {stage: _median([m.timings[key] for m in same_model if key in m.timings]) for stage, key in SETUP.items()}
    return RunCost(request, prune, evaluation, {k: v for k, v in setup.items() if v is not None},
                   dense_cached=bool(evaluated))


def batch_seconds(requests: Sequence[RunRequest], past_runs: Sequence[RunRecord]) -> float | None:
    """Requests run one after the other (the Compare's pair): their seconds, the dense evaluation once."""
    costs = [run_cost(r, past_runs) for r in requests]
    if not costs or not all(c.known for c in costs):
        return None
    return sum(c.seconds(with_dense=False) for c in costs) + max(c.dense_evaluation for c in costs)


def estimate_work(plan: SweepPlan, past_runs: list[RunRecord] | None = None) -> dict[str, Any]:
    """What a plan costs: runs, the calibration tokens they read, evaluation tokens, and seconds if earlier runs
    allow: each point's pruning from earlier complete runs of the same model and cost kind (scaled by calibration
    tokens), its evaluation from earlier runs evaluated the same way, the dense evaluation once unless cached;
    None when some point has no such earlier run."""
    requests = list(plan.requests)
    ev = requests[0].eval if requests else None
    costs = [run_cost(r, past_runs or []) for r in requests]
    known = [c for c in costs if c.known]
    seconds = None
    if costs and len(known) == len(costs):
        seconds = round(sum(c.seconds(with_dense=False) for c in costs) + max(c.dense_evaluation for c in costs), 1)
    return {"runs": len(plan), "skipped": len(plan.skipped),
            "calibration_tokens": sum(calibration_tokens(r.prune) for r in requests),
            "calibrating_runs": sum(bool(calibration_tokens(r.prune)) for r in requests),
            "eval_tokens_per_run": ev.windows * ev.seqlen if ev is not None and ev.windows else None,
            "evaluations": len(plan) + 1 if ev else 0, "seconds": seconds, "estimated_points": len(known),
            "fewest_runs_alike": min((c.runs for c in known), default=0),
            "unmeasured": list(dict.fromkeys(settings_text(c.request) for c in costs if not c.known))}


# --- what a page says -------------------------------------------------------------------------------------
def duration_text(seconds: float) -> str:
    """'48 s', '1 min 12 s', '12 min': a time as a sentence says it."""
    whole = max(round(seconds), 0)
    minutes, rest = divmod(whole, 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest and minutes < 10 else f"{minutes} min"


def settings_text(request: RunRequest) -> str:
    """'wanda 50%, 16 × 256 calibration tokens, 10 × 512 evaluation tokens': what a run's time depends on."""
    prune, ev = request.prune, request.eval
    calibration = f"{prune.nsamples} × {prune.seqlen} calibration tokens" if prune.calibrate else \
        "pruned from the weights alone"
    evaluation = "no evaluation" if ev is None else (f"{ev.windows} × {ev.seqlen} evaluation tokens" if ev.windows
                                                     else f"the whole evaluation text in windows of {ev.seqlen}")
    return f"{prune.label} ({calibration}, {evaluation})"


def run_sentence(cost: RunCost) -> str:
    """How long a run like `cost.request` took on this machine, or that none has finished here yet."""
    what = settings_text(cost.request)
    if not cost.known:
        return (f"No run like {what} has finished on this machine yet, so no time is promised: the progress "
                "shows each stage and estimates the time left as it goes.")
    low, high = cost.span()
    spread = f"{duration_text(low)} to {duration_text(high)}, " if round(high) > round(low) else ""
    runs = lambda n: f"{n} run" if n == 1 else f"{n} runs"  # noqa: E731
    alike = (f"{runs(cost.runs)} pruned and {runs(len(cost.evaluation))} evaluated alike here" if cost.evaluation
             else f"{runs(cost.runs)} pruned alike here")
    dense = (f", its first run also evaluating the dense model (~{duration_text(cost.dense_evaluation)}, cached "
             "afterwards)" if cost.dense_evaluation else "")
    return f"On this machine a run like {what} takes about {duration_text(cost.seconds())} ({spread}from the " \
           f"{alike}){dense}."


def batch_sentence(requests: Sequence[RunRequest], past_runs: Sequence[RunRecord], what: str) -> str:
    """'The Compare (magnitude 50% from the weights alone, then wanda 50%) takes about 1 min 10 s here, from ...'
    or what is not measured yet."""
    costs = [run_cost(r, past_runs) for r in requests]
    runs = ", then ".join(c.request.prune.label + ("" if c.request.prune.calibrate else " from the weights alone")
                          for c in costs)
    seconds = batch_seconds(requests, past_runs)
    if seconds is None:
        missing = " and ".join(c.request.prune.label for c in costs if not c.known)
        return f"{what} ({runs}) has no time on this machine yet: {missing} at these settings not measured here."
    return (f"{what} ({runs}) takes about {duration_text(seconds)} on this machine, from its past runs alike"
            + ("" if all(c.dense_cached for c in costs) else ", the dense model's first evaluation included") + ".")
