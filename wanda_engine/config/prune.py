"""What to prune and how: PruneConfig, and the one method label every run and sweep point is named by."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..core.errors import ConfigError
from ..core.parsing import check_device, parse_pattern
from ..methods import table
from ..methods.table import GROUPS, PARAMS, PER_BLOCK, Kind, Method, Pattern, Structure

LAYERWISE = ("uniform", "owl")
WEIGHT_UPDATES = ("none", "obs")
# A structure remover's allocation: the same heads and channels from every block, or FLAP's global competition of
# every block's standardized scores; and what its ratio counts (methods/structure.py: uniform_counts).
ALLOCATIONS, TARGETS = ("uniform", "global"), (PARAMS, PER_BLOCK)


def method_label(method_name: str, pattern: str, sparsity: float) -> str:
    """'wanda 50%', 'owl-wanda 70%', 'magnitude+protect1% 50%', 'wanda+obs 50%', 'magnitude 2:4': how every run
    and sweep point is labelled."""
    return f"{method_name} {pattern if parse_pattern(pattern) else f'{sparsity:.0%}'}"


def protect_suffix(protect_channels: float) -> str:
    """The part of a method's name that says it protects channels: '+protect1%' for 0.01,
    '+protect0.1%' for 0.001; '' for 0."""
    return f"+protect{round(protect_channels * 100, 6):g}%" if protect_channels else ""


def update_suffix(weight_update: str) -> str:
    """The part of a method's name that says its kept weights were updated: '+obs'; '' for 'none'."""
    return "" if weight_update == "none" else f"+{weight_update}"


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
    # The weights of this fraction of input channels, the ceil(p·in) highest by ‖X_j‖₂ over the
    # calibration set, are never pruned; the rest of each group is pruned harder (selection.py).
    protect_channels: float = 0.0
    # 'obs': after any selector's mask, the kept weights are reconstructed by SparseGPT's OBS update on the
    # block's Gram matrix (the Wanda paper's ablation, reference lib/ablate.py); the mask stays the selector's.
    weight_update: str = "none"
    # False: magnitude's mask from the weights alone, no calibration or propagation passes (the records then
    # hold no activation statistics); the masks are exactly a calibrated magnitude run's.
    calibrate: bool = True
    # Structure removers only (their `sparsity` is the ratio to remove): see ALLOCATIONS and TARGETS. FLAP's bias
    # compensation adds W[:, removed]·mean(x_removed) to the output projection's bias.
    allocation: str = "uniform"
    target: str = PARAMS
    bias_compensation: bool = False

    def __post_init__(self) -> None:
        method = table.get(self.method)
        removes = method.kind is Kind.STRUCTURE  # its sparsity is the ratio to remove (counted as `target` says)
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) or not 0 <= self.sparsity < 1:
            raise ConfigError(f"{'the ratio to remove' if removes else 'sparsity'} must be a number in "
                              f"{'(0, 1)' if removes else '[0, 1)'}, got {self.sparsity!r}")
        nm = parse_pattern(self.pattern)
        if nm is not None and not removes and self.sparsity != 0.5 and abs(self.sparsity - nm[0] / nm[1]) > 1e-9:
            raise ConfigError(
                f"sparsity {self.sparsity} contradicts pattern {self.pattern} (which prunes {nm[0] / nm[1]:g}); "
                "leave sparsity at its default or set it to N/M"
            )
        if self.group is not None and self.group not in GROUPS:
            raise ConfigError(f"group must be one of {', '.join(GROUPS)} or None, got {self.group!r}")
        self._check_method(method, nm)
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
        check_device(self.device)
        self._check_protection(method)
        if self.weight_update not in WEIGHT_UPDATES:
            raise ConfigError(f"weight_update must be one of {', '.join(WEIGHT_UPDATES)}, got {self.weight_update!r}")
        if self.weight_update != "none" and not method.allows_weight_update:
            if method.kind is Kind.SOLVER:
                raise ConfigError(f"{self.method} already updates the kept weights; weight_update "
                                  f"{self.weight_update!r} applies to the selectors")
            raise ConfigError(method.refusal(f"weight_update {self.weight_update!r}"))
        if not isinstance(self.calibrate, bool):
            raise ConfigError(f"calibrate must be true or false, got {self.calibrate!r}")
        self._check_structure(method)
        if not self.calibrate and self.needs_calibration:
            raise ConfigError(f"calibrate false (pruning from the weights alone) does not apply here: "
                              f"{self.needs_calibration}")

    def _check_method(self, method: Method, nm: tuple[int, int] | None) -> None:
        """The method's own rules, read off its entry in the table: its kind, patterns, groups and variant."""
        pattern = Pattern.NM if nm is not None else Pattern.UNSTRUCTURED
        if pattern not in method.patterns and method.kind is Kind.STRUCTURE:
            raise ConfigError(method.refusal(f"pattern {self.pattern!r}"))
        if pattern not in method.patterns:
            raise ConfigError(f"pattern {self.pattern!r} does not apply to method {self.method!r}, which prunes only "
                              f"{' or '.join(p.value for p in method.patterns)}")
        if self.variant and method.variant is None:
            raise ConfigError("variant (adaptive alpha) applies only to method "
                              + " or ".join(repr(name) for name in table.with_variant()))
        if self.variant and nm is not None:
            raise ConfigError("variant (adaptive alpha) applies only to the unstructured pattern")
        if nm is not None and self.group == "matrix":
            raise ConfigError("group 'matrix' applies only to the unstructured pattern; N:M groups are M consecutive inputs")
        if self.group is not None and self.group not in method.groups:
            raise ConfigError(method.refusal(f"group {self.group!r}"))

    def _check_structure(self, method: Method) -> None:
        """A structure remover's settings, and none of them on a method that masks weights."""
        for name, allowed in (("allocation", ALLOCATIONS), ("target", TARGETS), ("bias_compensation", (False, True))):
            if getattr(self, name) not in allowed or type(getattr(self, name)) is not type(allowed[0]):
                raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}, got {getattr(self, name)!r}")
        changed = [name for name, default in (("allocation", "uniform"), ("target", PARAMS), ("bias_compensation", False))
                   if getattr(self, name) != default]
        if method.removes is None:
            if changed:
                raise ConfigError(f"{changed[0]} applies only to the structure removers "
                                  f"({', '.join(table.removers())}), not to method {self.method!r}")
            return
        if not self.sparsity:
            raise ConfigError(f"the ratio to remove must be a number in (0, 1), got {self.sparsity!r}")
        if self.layerwise != "uniform":
            raise ConfigError(method.refusal(f"layerwise {self.layerwise!r}") + "; its allocation is uniform or global")
        if method.removes is Structure.DEPTH and changed:
            raise ConfigError(method.refusal(changed[0]))
        if self.target == PER_BLOCK and self.allocation != "uniform":
            raise ConfigError("target 'per-block' takes the same share of every block, which needs allocation 'uniform'")

    @property
    def structure(self) -> Structure | None:
        """What a structure remover takes out (width or depth); None for methods that mask weights."""
        return self.method_entry.removes

    @property
    def method_entry(self) -> Method:
        """The method's entry in the table of methods (what it is, accepts and looks like)."""
        return table.get(self.method)

    @property
    def choice(self) -> str:
        """The method as forms, sweeps and figure series name it: 'wanda', 'wanda-variant'."""
        return table.choice(self.method, self.variant)

    @property
    def needs_calibration(self) -> str:
        """Why these settings need activation statistics ('' when the method's mask from the weights is all)."""
        if self.method_entry.needs_activations:
            alone = table.from_weights_alone()
            return (f"method {self.method!r} scores weights by their activations"
                    + (f" (only {' and '.join(alone)} {'does' if len(alone) == 1 else 'do'} not)" if alone else ""))
        if self.protect_channels:
            return "protect_channels picks the channels by their activation norms"
        if self.layerwise != "uniform":
            return f"layerwise {self.layerwise!r} measures each block's outliers on the activations"
        if self.weight_update != "none":
            return f"weight_update {self.weight_update!r} solves on the block's Gram matrix of the activations"
        if self.bias_compensation:
            return "bias_compensation adds the removed channels' mean activations to the biases"
        return ""

    @property
    def needs_gram(self) -> bool:
        """Whether calibration also sums each layer's Gram matrix: for a solver that needs it, or the OBS update."""
        return self.method_entry.needs_gram or self.weight_update != "none"

    def _check_protection(self, method: Method) -> None:
        p = self.protect_channels
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:  # NaN fails too
            raise ConfigError(f"protect_channels must be a fraction of the input channels in [0, 1), got {p!r}")
        if not p:
            return
        if self.nm is not None:
            raise ConfigError(f"protect_channels applies only to the unstructured pattern: channels kept whole would "
                              f"break the {self.pattern} groups, each of which must prune {self.nm[0]} of {self.nm[1]}")
        if not method.allows_protection:
            raise ConfigError(method.refusal("protect_channels"))
        owl = self.layerwise == "owl"
        highest = self.sparsity + (2 * self.owl_lambda if owl else 0.0)
        if p >= 1 - highest:
            raise ConfigError(f"protect_channels {p:g} leaves {1 - p:.4g} of each row's weights unprotected, too few "
                              f"to prune {'the block sparsities up to ' if owl else 'sparsity '}{highest:.4g} from; "
                              f"use protect_channels below {1 - highest:.4g}")

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
        return self.group or self.method_entry.default_group

    @property
    def _plain_method_name(self) -> str:
        return ("owl-" if self.layerwise == "owl" else "") + self.choice

    @property
    def method_name(self) -> str:
        """The method as runs are named after it: 'wanda', 'wanda-variant', 'owl-magnitude', 'magnitude+protect1%',
        'wanda+obs', 'flap+global+bias', 'wanda-sp+per-block' ... (not whether it calibrated: that changes no mask)."""
        if self.structure is not None:
            return self.choice + "".join(suffix for on, suffix in (
                (self.allocation == "global", "+global"), (self.target == PER_BLOCK, "+per-block"),
                (self.bias_compensation, "+bias")) if on)
        return self._plain_method_name + protect_suffix(self.protect_channels) + update_suffix(self.weight_update)

    @property
    def label(self) -> str:
        """THE method label: 'wanda 50%', 'owl-wanda 70%', 'magnitude+protect1% 50%', 'wanda+obs 50%', 'magnitude 2:4'."""
        return method_label(self.method_name, self.pattern, self.target_sparsity)

    @property
    def stem(self) -> str:
        """The label as a folder name's part: 'wanda-unstructured-0.50', 'owl-wanda-unstructured-0.70',
        'magnitude-protect0.01-unstructured-0.50', 'wanda-obs-unstructured-0.50'."""
        if self.structure is not None:  # 'flap-global-bias-width-0.20'
            return f"{self.method_name.replace('+', '-')}-{self.structure.value}-{self.target_sparsity:.2f}"
        protect = f"-protect{self.protect_channels:g}" if self.protect_channels else ""
        update = update_suffix(self.weight_update).replace("+", "-")
        return f"{self._plain_method_name}{protect}{update}-{self.pattern.replace(':', 'of')}-{self.target_sparsity:.2f}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolved_group"] = self.resolved_group
        d["target_sparsity"] = self.target_sparsity
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruneConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})
