"""A repair's settings, validated once: RepairConfig (what to train, how long) and RepairRequest (on which run).

Torch-free: the app's page builds and checks these without the engine's heavy parts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.parsing import check_device, check_run_name
from ..core.errors import ConfigError

REPAIR_METHODS = ("finetune", "lora")
SCHEDULES = ("cosine", "linear", "constant")
EVALUATE = ("merged", "adapter")
# Full fine-tuning moves every kept weight, LoRA only a low-rank update: the reference's lora_ft trains its
# adapters at 1e-4 over many more steps; at this budget a larger step does the same work.
DEFAULT_LR = {"finetune": 2e-5, "lora": 2e-4}


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"repair {name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class RepairConfig:
    """What a repair trains and for how long; lr None takes the method's default (DEFAULT_LR)."""

    method: str = "lora"  # 'finetune' (sparse full fine-tuning) | 'lora' (adapters, masked merge)
    steps: int = 80  # ~5 s a 2×256 step on 2 shared cores: a default repair of the embedded model in < 10 min
    batch_size: int = 2
    seqlen: int = 256
    lr: float | None = None
    schedule: str = "cosine"
    warmup_steps: int = 10  # at most a tenth of the steps (train.lr_factor)
    weight_decay: float = 0.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ()  # names inside a block ('self_attn.q_proj'); () = every decoder linear
    evaluate: str = "merged"  # lora: 'merged' (W + (BA)⊙mask) | 'adapter' (unmerged)
    train_text: str = "default"  # 'default' = the run's calibration text; or a .txt path
    eval_every: int = 40  # 3 evaluations of a default repair (before, halfway, after): ~20 s each here
    seed: int = 0
    device: str = "auto"
    dense: bool = False  # fine-tune the DENSE model with the same budget: the fair reference

    def __post_init__(self) -> None:
        if self.method not in REPAIR_METHODS:
            raise ConfigError(f"repair method must be one of {', '.join(REPAIR_METHODS)}, got {self.method!r}")
        for name in ("steps", "batch_size", "seqlen", "lora_rank", "eval_every"):
            _positive_int(name, getattr(self, name))
        if self.seqlen < 2:
            raise ConfigError(f"repair seqlen must be at least 2 tokens, got {self.seqlen!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError(f"repair warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.method])
        for name in ("lr", "lora_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"repair {name} must be a positive number, got {value!r}")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not math.isfinite(wd) or wd < 0:
            raise ConfigError(f"repair weight_decay must be a non-negative number, got {wd!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"repair schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.evaluate not in EVALUATE:
            raise ConfigError(f"repair evaluate must be 'merged' or 'adapter', got {self.evaluate!r}")
        if self.evaluate == "adapter" and self.method != "lora":
            raise ConfigError("repair evaluate 'adapter' needs method 'lora' (only LoRA has an unmerged adapter)")
        targets = tuple(self.lora_targets) if isinstance(self.lora_targets, (list, tuple)) else self.lora_targets
        if not isinstance(targets, tuple) or not all(isinstance(t, str) and t.strip() for t in targets):
            raise ConfigError(f"repair lora_targets must be a list of layer names, got {self.lora_targets!r}")
        object.__setattr__(self, "lora_targets", targets)
        if not isinstance(self.train_text, str) or not self.train_text.strip():
            raise ConfigError("repair train_text must be 'default' or a path to a .txt file")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"repair seed must be an integer, got {self.seed!r}")
        check_device(self.device, "repair device")
        if not isinstance(self.dense, bool):
            raise ConfigError(f"repair dense must be true or false, got {self.dense!r}")

    def label(self) -> str:
        """'lora r8 · 100 steps', 'finetune · 100 steps', 'dense finetune · 100 steps': the same everywhere."""
        what = f"lora r{self.lora_rank}" if self.method == "lora" else "finetune"
        return f"{'dense ' if self.dense else ''}{what} · {self.steps} steps"

    def stem(self) -> str:
        """The label as a folder name: 'lora-r8-100steps', 'dense-finetune-100steps'."""
        what = f"lora-r{self.lora_rank}" if self.method == "lora" else "finetune"
        return f"{'dense-' if self.dense else ''}{what}-{self.steps}steps"

    def tokens(self) -> int:
        """The training budget: steps × batch_size × seqlen tokens."""
        return self.steps * self.batch_size * self.seqlen

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RepairConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a repair's config must be a mapping, got {type(d).__name__}")
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if isinstance(kw.get("lora_targets"), list):
            kw["lora_targets"] = tuple(kw["lora_targets"])
        return cls(**kw)


@dataclass(frozen=True)
class RepairRequest:
    """One repair of one pruned run."""

    run: str  # the pruned run's directory (absolute path)
    config: RepairConfig = field(default_factory=RepairConfig)
    name: str | None = None  # the repair's folder under <run>/repairs/ (default: from the label)
    save_model: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.run, str) or not self.run.strip():
            raise ConfigError("repair run must be the pruned run's directory")
        if not isinstance(self.config, RepairConfig):
            raise ConfigError(f"repair config must be a RepairConfig, got {type(self.config).__name__}")
        if self.name is not None:
            check_run_name(self.name)
        if self.save_model is not None and (not isinstance(self.save_model, str) or not self.save_model.strip()):
            raise ConfigError("repair save_model must be a folder path or None")

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "config": self.config.to_dict(), "name": self.name, "save_model": self.save_model}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RepairRequest":
        if not isinstance(d, dict):
            raise ConfigError(f"a repair request must be a mapping, got {type(d).__name__}")
        return cls(run=d.get("run", ""), config=RepairConfig.from_dict(d.get("config") or {}), name=d.get("name"),
                   save_model=d.get("save_model"))
