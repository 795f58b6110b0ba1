"""Validated settings. Bad values raise ConfigError at construction, naming the field."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError

METHODS = ("magnitude", "wanda", "sparsegpt", "ria")
LAYERWISE = ("uniform", "owl")
GROUPS = ("row", "matrix")
# The reference's choices: magnitude compares within the whole matrix, Wanda within each output row.
# RIA (Zhang et al. 2024) compares within the whole matrix by default.
DEFAULT_GROUP = {"magnitude": "matrix", "wanda": "row", "sparsegpt": "row", "ria": "matrix"}


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """'unstructured' -> None; 'N:M' -> (N, M) with 0 < N < M. Raises ConfigError otherwise."""
    if pattern == "unstructured":
        return None
    parts = str(pattern).split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"pattern must be 'unstructured' or 'N:M' with integers N < M, got {pattern!r}")
    n, m = int(parts[0]), int(parts[1])
    if not 0 < n < m:
        raise ConfigError(f"pattern {pattern!r}: N:M needs 0 < N < M (N weights pruned in every M consecutive inputs)")
    return n, m


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how. `group=None` takes the method's reference default."""

    method: str = "wanda"
    sparsity: float = 0.5
    pattern: str = "unstructured"
    group: str | None = None
    variant: bool = False  # Wanda's adaptive-alpha variant (reference: --use_variant)
    # The reference calibrates on 128 x 2048 tokens of C4 on a GPU; these defaults fit the default
    # text (Emma, 222k tokens) and a laptop CPU. Wanda is robust to few samples (paper, fig. 3).
    nsamples: int = 64
    seqlen: int = 512
    seed: int = 0
    calib: str = "default"
    batch_size: int = 8  # calibration windows run through a block at once
    device: str = "auto"
    blocksize: int = 128  # SparseGPT column block
    percdamp: float = 0.01  # SparseGPT damping, fraction of mean diag(H)
    # OWL (Yin et al. 2024): per-block sparsity from each block's share of outlier Wanda scores.
    layerwise: str = "uniform"
    owl_m: float = 5.0  # a score is an outlier above owl_m x its matrix's mean score
    owl_lambda: float = 0.08  # block ratios spread within target +- owl_lambda
    ria_power: float = 0.5  # RIA's exponent a on ||X_j||

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) or not 0 <= self.sparsity < 1:
            raise ConfigError(f"sparsity must be a number in [0, 1), got {self.sparsity!r}")
        nm = parse_pattern(self.pattern)
        if nm is not None and self.sparsity != 0.5 and abs(self.sparsity - nm[0] / nm[1]) > 1e-9:
            raise ConfigError(
                f"sparsity {self.sparsity} contradicts pattern {self.pattern} (which prunes {nm[0] / nm[1]:g}); "
                "leave sparsity at its default or set it to N/M"
            )
        if self.group is not None and self.group not in GROUPS:
            raise ConfigError(f"group must be one of {', '.join(GROUPS)} or None, got {self.group!r}")
        if self.variant and self.method != "wanda":
            raise ConfigError("variant (adaptive alpha) applies only to method 'wanda'")
        if self.variant and nm is not None:
            raise ConfigError("variant (adaptive alpha) applies only to the unstructured pattern")
        if nm is not None and self.group == "matrix":
            raise ConfigError("group 'matrix' applies only to the unstructured pattern; N:M groups are M consecutive inputs")
        for name in ("nsamples", "seqlen", "batch_size", "blocksize"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.layerwise not in LAYERWISE:
            raise ConfigError(f"layerwise must be one of {', '.join(LAYERWISE)}, got {self.layerwise!r}")
        if self.layerwise == "owl" and nm is not None:
            raise ConfigError("layerwise 'owl' applies only to the unstructured pattern (N:M fixes every block's sparsity)")
        for name in ("owl_m", "owl_lambda", "ria_power"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
        # OWL spreads block ratios over a range 2·lambda wide around the target: within target ± 2·lambda.
        if self.layerwise == "owl" and not (0 <= self.sparsity - 2 * self.owl_lambda and self.sparsity + 2 * self.owl_lambda < 1):
            raise ConfigError(f"owl_lambda {self.owl_lambda} could take block sparsities outside [0, 1) around sparsity "
                              f"{self.sparsity} (blocks range within sparsity ± 2·owl_lambda); use a smaller owl_lambda")
        if not 0 < self.percdamp < 1:
            raise ConfigError(f"percdamp must be in (0, 1), got {self.percdamp!r}")
        if not isinstance(self.calib, str) or not self.calib:
            raise ConfigError("calib must name a source: default, wikitext2, c4, a .txt file or a .npy file")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern)

    @property
    def target_sparsity(self) -> float:
        nm = self.nm
        return nm[0] / nm[1] if nm else float(self.sparsity)

    @property
    def resolved_group(self) -> str:
        """The comparison group actually used: 'nm' for N:M, else the chosen or reference default."""
        if self.nm is not None:
            return "nm"
        return self.group or DEFAULT_GROUP[self.method]

    @property
    def label(self) -> str:
        name = ("owl-" if self.layerwise == "owl" else "") + self.method + ("-variant" if self.variant else "")
        return f"{name} {self.pattern if self.nm else f'{self.target_sparsity:.0%}'}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolved_group"] = self.resolved_group
        d["target_sparsity"] = self.target_sparsity
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruneConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


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


_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'300MiB', '2GB', '1.5GiB' -> bytes. Raises ConfigError otherwise."""
    value = str(text).strip()
    number = value.rstrip("KMGTiBkmgtib ")
    unit = value[len(number):].strip().upper()
    try:
        size = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise ConfigError(f"a memory size is a number and a unit (B, KB, MB, GB, KiB, MiB, GiB), got {text!r}") from None
    if size <= 0:
        raise ConfigError(f"a memory size must be positive, got {text!r}")
    return int(size)


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
