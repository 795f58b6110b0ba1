"""What a sweep's plan costs before it runs: runs, calibration and evaluation tokens, and seconds
where earlier runs of the same kind allow an estimate."""
from __future__ import annotations

from typing import Any

from ..config import PruneConfig
from ..store.run_record import RunRecord
from .grid import SweepPlan


def _median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def _cost_kind(prune: PruneConfig) -> str:
    """Which earlier runs a point's pruning time is estimated from: its method's, except that whatever sums the Gram
    matrix and solves on it (SparseGPT, the OBS update of any mask) costs alike, and pruning from the weights alone
    costs no passes."""
    if prune.needs_gram:
        return "a solve on the Gram matrix"
    return prune.method if prune.calibrate else f"{prune.method} from the weights"


def estimate_work(plan: SweepPlan, past_runs: list[RunRecord] | None = None) -> dict[str, Any]:
    """What a plan costs: runs, calibration and evaluation tokens, and seconds if earlier runs allow.

    Seconds: each point's pruning from earlier complete runs of the same model and cost kind (scaled by
    calibration tokens) plus its evaluation from earlier runs evaluated the same way; None when some
    point has no such earlier run.
    """
    calib = sum(r.prune.nsamples * r.prune.seqlen for r in plan.requests)
    ev = plan.requests[0].eval if plan.requests else None
    eval_tokens = ev.windows * ev.seqlen if ev is not None and ev.windows else None
    out: dict[str, Any] = {"runs": len(plan), "skipped": len(plan.skipped), "calibration_tokens": calib,
                           "eval_tokens_per_run": eval_tokens, "evaluations": len(plan) + 1 if ev else 0,
                           "seconds": None, "estimated_points": 0}
    past = [m for m in past_runs or [] if m.complete]
    total, known = 0.0, 0
    for r in plan.requests:
        alike = [m for m in past if m.request.model == r.model]
        rate = _median([m.timings["prune_s"] / (m.request.prune.nsamples * m.request.prune.seqlen)
                        for m in alike if _cost_kind(m.request.prune) == _cost_kind(r.prune) and m.timings.get("prune_s")])
        evals = _median([m.timings["eval_s"] for m in alike if m.timings.get("eval_s") and m.request.eval == r.eval])
        if rate is None or (r.eval is not None and evals is None):
            continue
        total += rate * r.prune.nsamples * r.prune.seqlen + (evals if r.eval is not None else 0.0)
        known += 1
    out["estimated_points"] = known
    if plan.requests and known == len(plan.requests):
        out["seconds"] = round(total, 1)
    return out
