"""A run's zero-shot results (run.json's "zeroshot") as typed, frozen records in run.json's own layout.

`evaluation.zeroshot.evaluate_zeroshot` scores one model; the runner scores the dense and the pruned model on
the same tasks and keeps both, with the task settings. Torch-free: the pages, figures and tables read it.
`from_json` raises TypeError or ConfigError on a wrong type (the run record says which file in one sentence);
`to_json` writes the keys in the order the runner has always written them, unknown keys kept in `extra`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import ZeroShotConfig
from ..core.errors import ConfigError

_TASK_FIELDS = ("n", "version", "dataset")
_STDERR = "_stderr"


def _object(d: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise TypeError(f"zero-shot {what} is not an object")
    return d


@dataclass(frozen=True)
class TaskScore:
    """One task scored on one model: each metric lm-eval reported ('acc', 'acc_norm': fractions in [0, 1]) with
    its standard error, and how many questions were scored."""

    metrics: dict[str, float] = field(default_factory=dict)
    stderrs: dict[str, float | None] = field(default_factory=dict)  # only for metrics whose stderr was recorded
    n: int | None = None
    version: Any = None  # lm-eval's version of the task (a number or a string)
    dataset: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        return self.metrics.get(metric)

    def stderr(self, metric: str) -> float | None:
        return self.stderrs.get(metric)

    @classmethod
    def from_json(cls, d: Any) -> "TaskScore":
        d = _object(d, "task result")
        # a metric is any other number (evaluate_zeroshot writes metric, then metric_stderr, for each it found)
        metrics = {k: v for k, v in d.items() if k not in _TASK_FIELDS and not k.endswith(_STDERR)
                   and isinstance(v, (int, float)) and not isinstance(v, bool)}
        stderrs = {m: d[m + _STDERR] for m in metrics if m + _STDERR in d}
        taken = {*metrics, *(m + _STDERR for m in stderrs), *_TASK_FIELDS}
        return cls(metrics, stderrs, d.get("n"), d.get("version"), d.get("dataset", ""),
                   {k: v for k, v in d.items() if k not in taken})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for metric, value in self.metrics.items():
            out[metric] = value
            if metric in self.stderrs:
                out[metric + _STDERR] = self.stderrs[metric]
        return {**out, "n": self.n, "version": self.version, "dataset": self.dataset, **self.extra}


@dataclass(frozen=True)
class ZeroShotScores:
    """One model's zero-shot evaluation: every task's score, with what it was measured with."""

    harness: str | None = None  # lm-eval's version
    tasks: tuple[str, ...] = ()
    limit: int | None = None  # at most this many questions per task (None: all)
    num_fewshot: int = 0
    seconds: float | None = None
    results: dict[str, TaskScore] = field(default_factory=dict)  # task -> its score
    extra: dict[str, Any] = field(default_factory=dict)

    def value(self, task: str, metric: str) -> float | None:
        """`metric` of `task`; None where the task was not scored or does not report it."""
        score = self.results.get(task)
        return score.value(metric) if score is not None else None

    def stderr(self, task: str, metric: str) -> float | None:
        score = self.results.get(task)
        return score.stderr(metric) if score is not None else None

    @classmethod
    def from_json(cls, d: Any) -> "ZeroShotScores":
        d = _object(d, "scores")
        results = _object(d.get("results") or {}, "results")
        known = ("harness", "tasks", "limit", "num_fewshot", "seconds", "results")
        return cls(d.get("harness"), tuple(d.get("tasks") or ()), d.get("limit"), d.get("num_fewshot", 0),
                   d.get("seconds"), {task: TaskScore.from_json(r) for task, r in results.items()},
                   {k: v for k, v in d.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        return {"harness": self.harness, "tasks": list(self.tasks), "limit": self.limit,
                "num_fewshot": self.num_fewshot, "seconds": self.seconds,
                "results": {task: score.to_json() for task, score in self.results.items()}, **self.extra}


@dataclass(frozen=True)
class ZeroShotRecord:
    """The dense and the pruned model scored on the same tasks and settings (run.json's "zeroshot")."""

    dense: ZeroShotScores
    pruned: ZeroShotScores
    config: ZeroShotConfig  # the run's request.zeroshot
    harness: str | None = None  # lm-eval's version when the pruned model was scored
    dense_cached: bool | None = None  # the dense scores came from the cache of an earlier run alike
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Any) -> "ZeroShotRecord":
        d = _object(d, "results")
        known = ("dense", "pruned", "config", "harness", "dense_cached")
        return cls(ZeroShotScores.from_json(d.get("dense") or {}), ZeroShotScores.from_json(d.get("pruned") or {}),
                   ZeroShotConfig.from_dict(_object(d.get("config") or {}, "config")), d.get("harness"),
                   d.get("dense_cached"), {k: v for k, v in d.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        return {"dense": self.dense.to_json(), "pruned": self.pruned.to_json(), "config": self.config.to_dict(),
                "harness": self.harness, "dense_cached": self.dense_cached, **self.extra}


def joined_config(earlier: ZeroShotRecord | None, zc: ZeroShotConfig) -> ZeroShotConfig:
    """A run's zero-shot settings once `zc`'s tasks join its earlier results: the same question limit and shots
    (accuracies measured otherwise would sit in one table as if alike), the tasks together; ConfigError otherwise."""
    if earlier is None:
        return zc
    old = earlier.config
    if (old.limit, old.num_fewshot) != (zc.limit, zc.num_fewshot):
        said = lambda c: f"{c.limit or 'every'} question(s) per task, {c.num_fewshot}-shot"  # noqa: E731
        raise ConfigError(f"the run's zero-shot results were scored at {said(old)}; score the new tasks the same "
                          f"way ({said(zc)} asked)")
    if old.task_dir and zc.task_dir and old.task_dir != zc.task_dir:
        raise ConfigError(f"the run's zero-shot tasks came from {old.task_dir}; score tasks from one folder per run")
    return ZeroShotConfig(tasks=tuple(dict.fromkeys((*old.tasks, *zc.tasks))), task_dir=old.task_dir or zc.task_dir,
                          limit=zc.limit, num_fewshot=zc.num_fewshot, batch_size=zc.batch_size)
