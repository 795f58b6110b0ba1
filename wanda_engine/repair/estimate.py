"""How long a repair will take on this machine: the page's "about N minutes". Torch-free."""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..store.run_record import RunRecord
from .config import RepairRequest
from .record import RepairRecord

# Measured on this project's 2 shared cores (the embedded 135M model, 2×256-token steps, other jobs running):
# a LoRA step 4.2-5.8 s, a sparse fine-tuning step 4.6-6.2 s. Per training token and parameter, used until a
# repair alike has run on this machine.
SECONDS_PER_TOKEN_PARAM = {"lora": 5.0 / (512 * 134.5e6), "finetune": 5.5 / (512 * 134.5e6)}
FALLBACK_EVAL_S = 20.0  # one evaluation of 10×512 tokens of the embedded model here


def evaluations(request: RepairRequest) -> int:
    """How many times a repair evaluates: before training, every eval_every steps, and at the end."""
    c = request.config
    return 1 + math.ceil(c.steps / c.eval_every)


def estimate_seconds(request: RepairRequest, run: RunRecord, previous: Sequence[RepairRecord] = ()) -> float:
    """Seconds `request` is expected to take: training at the pace of the latest complete repair of the same
    method in `previous` (else SECONDS_PER_TOKEN_PARAM for the run's model), evaluations at the run's own
    evaluation time, and re-creating the pruned model at the run's pruning time when it has no saved model."""
    c = request.config
    alike = [r for r in previous if r.complete and r.request.config.method == c.method
             and r.timings.get("train_s") and r.request.config.tokens()]
    if alike:
        last = alike[-1]
        train = last.timings["train_s"] / last.request.config.tokens() * c.tokens()
    else:
        train = SECONDS_PER_TOKEN_PARAM[c.method] * c.tokens() * (run.model.params or 134.5e6)
    per_eval = run.timings.get("eval_s") or FALLBACK_EVAL_S
    start = run.timings.get("load_s", 5.0)
    if not (run.saved_model or c.dense):
        start += run.timings.get("prune_s", 0.0)
    return round(start + train + evaluations(request) * per_eval, 1)
