"""Validated settings, torch-free: bad values raise ConfigError at construction, naming the field. A run's record
(`store/run_record.py`) rebuilds its RunRequest from run.json with these classes alone.

prune.py    what to prune and how (PruneConfig, read against the table of methods), and the one method label
measure.py  what a run measures: perplexity windows, lm-eval tasks, speed
model.py    how a model is loaded: its offload budget, and what identifies its weights
request.py  everything one job needs: RunRequest (a run), ScoreRequest (zero-shot scores of existing runs),
            GenerateRequest (a prompt through the dense model and existing runs)

The names below are the settings' public API (`from wanda_engine.config import PruneConfig`); each is defined
once, in its module. Imports `core` and `methods` only.
"""
from .measure import PAPER_TASKS, EvalConfig, SpeedConfig, ZeroShotConfig
from .model import ModelSpec, OffloadConfig
from .prune import ALLOCATIONS, LAYERWISE, TARGETS, WEIGHT_UPDATES, PruneConfig, method_label, protect_suffix, update_suffix
from .request import GenerateRequest, RunRequest, ScoreRequest

__all__ = ["ALLOCATIONS", "LAYERWISE", "PAPER_TASKS", "TARGETS", "WEIGHT_UPDATES", "EvalConfig", "GenerateRequest",
           "ModelSpec", "OffloadConfig", "PruneConfig", "RunRequest", "ScoreRequest", "SpeedConfig", "ZeroShotConfig",
           "method_label", "protect_suffix", "update_suffix"]
