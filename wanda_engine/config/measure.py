"""What a run measures and how: perplexity windows (EvalConfig), lm-eval tasks (ZeroShotConfig), speed (SpeedConfig)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..core.errors import ConfigError

# The Wanda paper's zero-shot tasks (Sun et al. 2023, table 2), in its order.
PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


@dataclass(frozen=True)
class EvalConfig:
    """Perplexity evaluation: non-overlapping windows of `seqlen` tokens (the reference's protocol)."""

    dataset: str = "default"
    seqlen: int = 512
    windows: int | None = None  # None: every full window of the split
    batch_size: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError("eval dataset must name a source: default, wikitext2, c4, a .txt file, or none")
        if isinstance(self.seqlen, bool) or not isinstance(self.seqlen, int) or self.seqlen < 2:
            raise ConfigError(f"eval seqlen must be an integer >= 2, got {self.seqlen!r}")
        if self.windows is not None and (isinstance(self.windows, bool) or not isinstance(self.windows, int) or self.windows < 1):
            raise ConfigError(f"eval windows must be a positive integer or None, got {self.windows!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"eval batch_size must be a positive integer, got {self.batch_size!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ZeroShotConfig:
    """Which lm-eval tasks to run and how. `limit`: at most this many questions per task (None: all)."""

    tasks: tuple[str, ...] = PAPER_TASKS
    task_dir: str | None = None
    limit: int | None = None
    num_fewshot: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        tasks = self.tasks
        if isinstance(tasks, str):
            tasks = tuple(t.strip() for t in tasks.split(",") if t.strip())
        if not isinstance(tasks, (tuple, list)) or not tasks:
            raise ConfigError("zero-shot tasks must be a non-empty list of lm-eval task names")
        if not all(isinstance(t, str) and t.strip() and t.strip() == t for t in tasks):
            raise ConfigError(f"zero-shot tasks must be task names without surrounding spaces, got {list(tasks)!r}")
        if len(set(tasks)) != len(tasks):
            raise ConfigError(f"zero-shot tasks name a task twice: {list(tasks)!r}")
        object.__setattr__(self, "tasks", tuple(tasks))
        if self.task_dir is not None and (not isinstance(self.task_dir, str) or not self.task_dir.strip()):
            raise ConfigError(f"zero-shot task_dir must be a folder path or None, got {self.task_dir!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigError(f"zero-shot limit must be a positive integer or None, got {self.limit!r}")
        if isinstance(self.num_fewshot, bool) or not isinstance(self.num_fewshot, int) or self.num_fewshot < 0:
            raise ConfigError(f"zero-shot num_fewshot must be an integer >= 0, got {self.num_fewshot!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"zero-shot batch_size must be a positive integer, got {self.batch_size!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ZeroShotConfig":
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        if "tasks" in kw and isinstance(kw["tasks"], list):
            kw["tasks"] = tuple(kw["tasks"])
        return cls(**kw)


@dataclass(frozen=True)
class SpeedConfig:
    """How the dense and the pruned model's speed is measured in a run: prefill of one window of the evaluation
    length, batch 1, and `decode_tokens` greedy new tokens with the KV cache; `repeats` interleaved rounds (median)."""

    decode_tokens: int = 32
    repeats: int = 5

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"speed {name} must be a positive integer, got {value!r}")

    to_dict = EvalConfig.to_dict
    from_dict = classmethod(EvalConfig.from_dict.__func__)
