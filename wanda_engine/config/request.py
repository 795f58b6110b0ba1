"""Everything one job needs: RunRequest (a run), ScoreRequest (zero-shot scores of existing runs) and
GenerateRequest (one prompt through the dense model and existing runs, side by side)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..core.parsing import canonical_dtype, check_device, check_run_name
from .measure import EvalConfig, SpeedConfig, ZeroShotConfig
from .model import ModelSpec, OffloadConfig
from .prune import PruneConfig


@dataclass(frozen=True)
class RunRequest:
    """Everything one run needs. eval=None skips perplexity; zeroshot=None skips lm-eval;
    offload=None keeps the whole model on one device."""

    model: str = "default"
    prune: PruneConfig = field(default_factory=PruneConfig)
    eval: EvalConfig | None = field(default_factory=EvalConfig)
    dtype: str = "float32"
    save_model: str | None = None
    name: str | None = None
    trust_remote_code: bool = False
    zeroshot: ZeroShotConfig | None = None
    offload: OffloadConfig | None = None
    speed: SpeedConfig | None = None  # None: the speed of the dense and pruned models is not measured

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must be 'default', a Hugging Face id, a folder or a .gguf file")
        for name, cls in (("prune", PruneConfig), ("eval", EvalConfig), ("zeroshot", ZeroShotConfig),
                          ("offload", OffloadConfig), ("speed", SpeedConfig)):
            value = getattr(self, name)
            if not isinstance(value, cls) and (name == "prune" or value is not None):
                raise ConfigError(f"{name} must be a {cls.__name__}{'' if name == 'prune' else ' or None'}, "
                                  f"got {type(value).__name__}")
        canonical_dtype(self.dtype)
        if not isinstance(self.trust_remote_code, bool):
            raise ConfigError(f"trust_remote_code must be true or false, got {self.trust_remote_code!r}")
        if self.save_model is not None and (not isinstance(self.save_model, str) or not self.save_model.strip()):
            raise ConfigError("save_model must be a folder path or None")
        if self.name is not None:
            check_run_name(self.name)
        if self.speed is not None and self.offload is not None:
            raise ConfigError("speed is measured with the whole model on one device; leave out offload or speed")

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.dtype, self.trust_remote_code, self.offload)

    def to_dict(self) -> dict[str, Any]:
        """run.json's "config". The run's name is its folder's, so it is not repeated here."""
        return {"model": self.model, "dtype": self.dtype, **self.prune.to_dict(),
                "eval": self.eval.to_dict() if self.eval else None, "save_model": self.save_model,
                "trust_remote_code": self.trust_remote_code,
                "zeroshot": self.zeroshot.to_dict() if self.zeroshot else None,
                "offload": self.offload.to_dict() if self.offload else None,
                **({"speed": self.speed.to_dict()} if self.speed else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str | None = None) -> "RunRequest":
        """The request that `to_dict` wrote (settings it lacks take their defaults); ConfigError names a bad one."""
        if not isinstance(d, dict):
            raise ConfigError(f"a run's config must be a mapping, got {type(d).__name__}")
        parts = {}
        for key, cls_ in (("eval", EvalConfig), ("zeroshot", ZeroShotConfig), ("offload", OffloadConfig),
                          ("speed", SpeedConfig)):
            value = d.get(key, {} if key == "eval" else None)
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"a run's config field {key!r} must be a mapping or null, got {type(value).__name__}")
            parts[key] = cls_.from_dict(value) if value is not None else None
        return cls(model=d.get("model", "default"), prune=PruneConfig.from_dict(d), dtype=d.get("dtype", "float32"),
                   save_model=d.get("save_model"), name=name, trust_remote_code=d.get("trust_remote_code", False),
                   **parts)


@dataclass(frozen=True)
class ScoreRequest:
    """Score an existing run on zero-shot tasks: its dense model and its pruned model (its saved model, or re-created
    from its record, the mask checked) on `zeroshot`'s tasks; the results go into its run.json."""

    run: str  # the run's directory
    zeroshot: ZeroShotConfig
    device: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.run, str) or not self.run.strip():
            raise ConfigError("score run must be the run's directory")
        if not isinstance(self.zeroshot, ZeroShotConfig):
            raise ConfigError(f"score zeroshot must be a ZeroShotConfig, got {type(self.zeroshot).__name__}")
        check_device(self.device, "score device")


MAX_PROMPT_CHARS, MAX_NEW_TOKENS = 4000, 512


@dataclass(frozen=True)
class GenerateRequest:
    """One prompt through the dense model (`dense`) and the pruned model of each of `runs` (their directories), each
    continued by `max_new_tokens` new tokens: greedy at temperature 0, else sampled from a generator seeded with
    `seed`. `model`: the dense model when no run is given (a run brings its own). `name`: the record's (default: the
    time)."""

    prompt: str
    runs: tuple[str, ...] = ()
    max_new_tokens: int = 32
    dense: bool = True
    temperature: float = 0.0
    seed: int = 0
    device: str = "auto"
    model: str = "default"
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigError("generate needs a prompt: some text to continue")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise ConfigError(f"the prompt is {len(self.prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
        runs = (self.runs,) if isinstance(self.runs, str) else self.runs
        if not isinstance(runs, (tuple, list)) or not all(isinstance(r, str) and r.strip() for r in runs):
            raise ConfigError("generate runs must be run directories")
        if len(set(runs)) != len(runs):
            raise ConfigError("generate names a run twice")
        object.__setattr__(self, "runs", tuple(runs))
        if not self.runs and not self.dense:
            raise ConfigError("generate needs a model: the dense one, or at least one run")
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_NEW_TOKENS:
            raise ConfigError(f"max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS}, got {n!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ConfigError(f"temperature must be 0 (greedy) or a positive number, got {t!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.dense, bool):
            raise ConfigError(f"dense must be true or false, got {self.dense!r}")
        check_device(self.device)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model must be 'default', a Hugging Face id, a folder or a .gguf file")
        if self.name is not None:
            check_run_name(self.name)
