"""How a model is loaded: its offload budget (OffloadConfig) and what identifies its weights (ModelSpec)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..core.errors import ConfigError
from ..core.parsing import DTYPES, parse_size


@dataclass(frozen=True)
class OffloadConfig:
    """Load with accelerate's device_map='auto' under a memory budget per device; what does not fit
    goes to the next one (GPU -> host -> disk). The pipeline then prunes one block at a time.

    max_memory: device -> size, e.g. {"cpu": "300MiB"} or {"0": "4GiB", "cpu": "16GiB"} ("0" = cuda:0).
    folder: where weights offloaded to disk, and their pruned versions, are written (default: the cache).
    """

    max_memory: dict[str, str]
    folder: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_memory, dict) or not self.max_memory:
            raise ConfigError("offload max_memory must give at least one device a budget, e.g. {'cpu': '300MiB'}")
        for device, size in self.max_memory.items():
            if not (device == "cpu" or str(device).isdigit()):
                raise ConfigError(f"offload max_memory: device {device!r} must be 'cpu' or a GPU index (0, 1, ...)")
            parse_size(size)
        if self.folder is not None and (not isinstance(self.folder, str) or not self.folder.strip()):
            raise ConfigError("offload folder must be a path or None")

    @classmethod
    def parse(cls, text: str, folder: str | None = None) -> "OffloadConfig":
        """'cpu=300MiB' or '0=4GiB,cpu=16GiB' (cuda:0 is also accepted for 0)."""
        budget = {}
        for part in str(text).split(","):
            device, sep, size = part.partition("=")
            if not sep:
                raise ConfigError(f"max memory must read DEVICE=SIZE[,DEVICE=SIZE], e.g. cpu=300MiB; got {text!r}")
            device = device.strip().removeprefix("cuda:")
            budget[device] = size.strip()
        return cls(budget, folder)

    def accelerate_max_memory(self) -> dict[int | str, int]:
        return {(int(d) if d.isdigit() else d): parse_size(s) for d, s in self.max_memory.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OffloadConfig":
        return cls(max_memory=dict(d.get("max_memory") or {}), folder=d.get("folder"))


@dataclass(frozen=True)
class ModelSpec:
    """What decides which weights a run prunes: a loaded model is reused only for a request of the same spec."""

    source: str
    dtype: str = "float32"
    trust_remote_code: bool = False
    offload: OffloadConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", DTYPES.get(self.dtype, self.dtype))  # 'fp16' and 'float16' agree

    def mismatch(self, other: "ModelSpec") -> str | None:
        """The name of the first setting in which `other` differs from this spec; None when they agree."""
        return next((name for name in ("source", "dtype", "trust_remote_code", "offload")
                     if getattr(self, name) != getattr(other, name)), None)
