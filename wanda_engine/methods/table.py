"""The one table of pruning methods: what each method is, what it accepts, where its math lives and how it looks.

Every reader asks the table instead of comparing method names: the settings' rules (`config.PruneConfig`), the
pipeline's dispatch (score -> select, solve, or remove structures), the sweep, the CLI, the app's forms and the
figures. A method is one frozen `Method`; `register` adds one (a plugin, a test), `get` finds one by name. Built in:
the masks and solver magnitude, Wanda, SparseGPT and RIA, and the structure removers wanda-sp, flap and
magnitude-sp (width: attention heads and MLP channels) and block-influence (depth: whole decoder blocks).

A *choice* is how a user names a method where its variant is a method of its own (forms, sweeps, figure
series): 'wanda' or 'wanda-variant'; `parse_choice` is the one parser of it.

Torch-free: the math is named as 'module:function' and imported on first use (a test's entry may give the
callable itself), so the app's server and the figures read the table without loading torch.
"""
from __future__ import annotations

import enum
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..core.errors import ConfigError
from ..core.palette import BLUE, DARK_GREY, GREEN, ORANGE, PURPLE, SKY, VERMILLION, MethodStyle

GROUPS = ("row", "matrix")  # the comparison groups of an unstructured mask (N:M patterns bring their own)
VARIANT_SUFFIX = "-variant"
# How a structure remover counts its ratio (PruneConfig.target): the fraction of the decoder blocks' parameters, or
# the published tables' per-block pruning_ratio of heads and channels (methods/structure.py: uniform_counts).
PARAMS, PER_BLOCK = "params", "per-block"
# no '+', ' ' or '(' and no '-' at either end: labels and folder names are built around it ('wanda-sp' is a name,
# 'wanda-variant' a method's variant)
_NAME = re.compile(r"[a-z][a-z0-9_]*(?:-[a-z0-9_]+)*")
_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class Kind(enum.Enum):
    """What a method does to a weight matrix."""

    MASK = "mask"  # scores every weight; the generic selectors choose the mask (row, matrix, N:M, variant, protection)
    SOLVER = "solver"  # chooses its own mask and updates the kept weights
    STRUCTURE = "structure"  # removes whole heads, MLP channels or blocks: the model gets smaller, not sparser


class Structure(enum.Enum):
    """What a structure remover takes out of the decoder blocks."""

    WIDTH = "width"  # attention heads (whole KV groups) and MLP intermediate channels
    DEPTH = "depth"  # whole decoder blocks


class Family(enum.Enum):
    """How a method makes a model cheaper: the frontier's families (outputs/figures/frontier.py). Zeros stored in
    dense weights leave the model as large and, on dense kernels, as slow; width and depth make it smaller."""

    ZEROS = "zeros"  # masks and solvers, unstructured or N:M: the zeros are stored
    WIDTH = "width"
    DEPTH = "depth"

    @property
    def label(self) -> str:
        return {"zeros": "zeros kept in dense weights (same size)", "width": "heads and MLP channels removed",
                "depth": "whole blocks removed"}[self.value]


class Pattern(enum.Enum):
    """The sparsity patterns a method can prune to."""

    UNSTRUCTURED = "unstructured"
    NM = "N:M"


@dataclass(frozen=True)
class Variant:
    """Wanda's adaptive-alpha variant (reference --use_variant): the same scores, selected per row by the
    reference's alpha search instead of a fixed count; unstructured only. Chosen as '<method>-variant'."""

    label: str  # in the forms
    look: MethodStyle  # in the figures: a look of its own


@dataclass(frozen=True)
class Method:
    """One pruning method.

    `math` is the method's function, as 'module:function' (imported on first use) or the callable itself:
      MASK    scorer(weight [out, in], stats: InputStats | None, config: PruneConfig) -> score [out, in], low = pruned
              first (stats is None only when the method prunes from the weights alone, calibrate=False);
      SOLVER  solver(weight [out, in], stats: InputStats, sparsity: float, config: PruneConfig) -> the pruned and
              updated weight, fp32 [out, in], whose zeros are the mask;
      STRUCTURE, width  scorer(weight [out, in] of an output projection (o_proj, down_proj), stats of its input or
              None) -> one score per input channel [in], low = removed first (a head group sums its channels);
      STRUCTURE, depth  scorer(block input [tokens, hidden], block output [tokens, hidden]) -> the block's score.
    """

    name: str
    kind: Kind
    math: str | Callable[..., Any]
    label: str  # in the forms
    look: MethodStyle  # in the figures
    default_group: str = "row"  # the reference's comparison group for unstructured masks
    groups: tuple[str, ...] = GROUPS
    patterns: tuple[Pattern, ...] = (Pattern.UNSTRUCTURED, Pattern.NM)
    variant: Variant | None = None
    allows_protection: bool = True  # protect_channels
    allows_weight_update: bool = True  # weight_update='obs' after its mask
    needs_activations: bool = True  # False: it can prune from the weights alone (calibrate=False)
    needs_gram: bool = False  # the Gram matrix of each layer's inputs (SparseGPT's Hessian)
    # how a solver picks its own mask, said where it refuses a selector's option: 'chooses its mask per column block'
    own_mask: str = ""
    removes: Structure | None = None  # a structure remover's structure; None for masks and solvers

    def __post_init__(self) -> None:
        why = self._incoherence()
        if why:
            raise ConfigError(f"method {self.name!r} cannot be registered: {why}")

    def _incoherence(self) -> str:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name) or self.name.endswith(VARIANT_SUFFIX):
            return (f"a name is lower-case letters, digits, '_' and inner '-', starting with a letter and not ending "
                    f"in {VARIANT_SUFFIX!r}")
        if not isinstance(self.kind, Kind):
            return f"kind must be one of {', '.join(k.name for k in Kind)}"
        if not callable(self.math) and not (isinstance(self.math, str) and _REFERENCE.fullmatch(self.math)):
            return "math must be a callable or 'module:function'"
        if (self.kind is Kind.STRUCTURE) != isinstance(self.removes, Structure):
            return "a structure remover, and only it, says what it removes (Structure.WIDTH or Structure.DEPTH)"
        if self.kind is Kind.STRUCTURE and (self.groups or self.needs_gram or self.patterns != (Pattern.UNSTRUCTURED,)):
            return "a structure remover takes no comparison group, N:M pattern or Gram matrix"
        if self.kind is not Kind.STRUCTURE and (not self.groups or not set(self.groups) <= set(GROUPS)
                                                or self.default_group not in self.groups):
            return f"groups must be some of {', '.join(GROUPS)}, the default group among them"
        if not self.patterns or not all(isinstance(p, Pattern) for p in self.patterns):
            return "patterns must be some of Pattern.UNSTRUCTURED, Pattern.NM"
        if self.kind is not Kind.MASK and (self.variant or self.allows_protection or self.allows_weight_update):
            return "the variant, protect_channels and weight_update choose or update a mask's weights: mask methods only"
        if self.needs_gram and not self.needs_activations:
            return "the Gram matrix is made of the activations"
        return ""

    @property
    def family(self) -> Family:
        """The frontier's family: what the method does to the model's size."""
        return Family(self.removes.value) if self.removes is not None else Family.ZEROS

    def refusal(self, option: str) -> str:
        """The sentence that refuses a setting this method does not take: "group 'matrix' does not apply to method
        'sparsegpt', which chooses its mask per column block"."""
        return f"{option} does not apply to method {self.name!r}" + (f", which {self.own_mask}" if self.own_mask else "")

    @property
    def function(self) -> Callable[..., Any]:
        """The math itself (imported on first use)."""
        if callable(self.math):
            return self.math
        try:
            return _imported(self.math)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"method {self.name!r}: its math {self.math!r} cannot be imported ({e})") from None

    def score(self, weight: Any, stats: Any, config: Any) -> Any:
        """A mask method's score per weight (see the class)."""
        return self.function(weight, stats, config)

    def channel_score(self, weight: Any, stats: Any) -> Any:
        """A width remover's score per input channel of an output projection (see the class)."""
        return self.function(weight, stats)

    def block_score(self, block_input: Any, block_output: Any) -> Any:
        """A depth remover's score of one block from its input and output hidden states (see the class)."""
        return self.function(block_input, block_output)

    def solve(self, weight: Any, stats: Any, sparsity: float, config: Any) -> Any:
        """A solver's pruned and updated weight (see the class)."""
        return self.function(weight, stats, sparsity, config)


@cache
def _imported(reference: str) -> Callable[..., Any]:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


# What every structure remover's entry shares: no comparison group, pattern, variant, protection or weight update.
_REMOVER: dict[str, Any] = dict(groups=(), default_group="", patterns=(Pattern.UNSTRUCTURED,), allows_protection=False,
                                allows_weight_update=False, own_mask="removes whole attention heads and MLP channels")

BUILT_IN = (
    Method("magnitude", Kind.MASK, "wanda_engine.methods.scoring:magnitude_score", "Magnitude |W|",
           MethodStyle(ORANGE, "dash", "square", "/"), default_group="matrix", needs_activations=False),
    Method("wanda", Kind.MASK, "wanda_engine.methods.scoring:wanda_score", "Wanda |W|·‖Xⱼ‖₂",
           MethodStyle(BLUE, "solid", "circle", ""),
           variant=Variant("Wanda variant (adaptive α)", MethodStyle(SKY, "longdash", "x", "\\"))),
    Method("sparsegpt", Kind.SOLVER, "wanda_engine.methods.sparsegpt:sparsegpt_solve", "SparseGPT",
           MethodStyle(GREEN, "dot", "diamond", "."), groups=("row",), allows_protection=False,
           allows_weight_update=False, needs_gram=True, own_mask="chooses its mask per column block"),
    # RIA (Zhang et al. 2024) compares within the whole matrix by default.
    Method("ria", Kind.MASK, "wanda_engine.methods.scoring:ria_score_at", "RIA (relative importance · ‖Xⱼ‖₂^0.5)",
           MethodStyle(PURPLE, "dashdot", "triangle-up", "x"), default_group="matrix"),
    # Structure removers: an open marker and a dotted line say 'structured' next to their mask relatives' colours.
    # Wanda-sp: Wanda's score summed over the output rows (the Wanda paper's structured variant as FLAP ports it).
    Method("wanda-sp", Kind.STRUCTURE, "wanda_engine.methods.structure:wanda_sp_score", "Wanda-sp Σᵢ |W|·‖Xⱼ‖₂",
           MethodStyle(BLUE, "dot", "circle-open", "-"), **_REMOVER, removes=Structure.WIDTH),
    # FLAP (An et al., AAAI 2024): the fluctuation of each input channel times its column's squared norm.
    Method("flap", Kind.STRUCTURE, "wanda_engine.methods.structure:flap_score", "FLAP Var(Xⱼ)·‖W:ⱼ‖₂²",
           MethodStyle(VERMILLION, "solid", "hexagon-open", "|"), **_REMOVER, removes=Structure.WIDTH),
    Method("magnitude-sp", Kind.STRUCTURE, "wanda_engine.methods.structure:magnitude_sp_score",
           "Magnitude-sp ‖W:ⱼ‖₂", MethodStyle(ORANGE, "dot", "square-open", "-"), **_REMOVER,
           needs_activations=False, removes=Structure.WIDTH),
    # ShortGPT (Men et al. 2024): a block that changes its input least (high cosine) is removed first.
    Method("block-influence", Kind.STRUCTURE, "wanda_engine.methods.structure:block_influence",
           "Block influence 1 − cos(x_in, x_out)", MethodStyle(DARK_GREY, "dashdot", "star-open", "+"),
           **{**_REMOVER, "own_mask": "removes whole decoder blocks"}, removes=Structure.DEPTH),
)
_TABLE: dict[str, Method] = {method.name: method for method in BUILT_IN}


def register(method: Method) -> Method:
    """Add a method to the table (its name must be new); returns it."""
    if not isinstance(method, Method):
        raise ConfigError(f"register takes a Method, got {type(method).__name__}")
    if method.name in _TABLE:
        raise ConfigError(f"method {method.name!r} is already in the table")
    _TABLE[method.name] = method
    return method


def unregister(name: str) -> None:
    """Take a registered method out of the table again; the built-in ones stay."""
    if any(method.name == name for method in BUILT_IN):
        raise ConfigError(f"method {name!r} is built in and stays in the table")
    _TABLE.pop(name, None)


def methods() -> tuple[Method, ...]:
    """Every method in the table, the built-in ones first, in the order they were registered."""
    return tuple(_TABLE.values())


def names() -> tuple[str, ...]:
    return tuple(_TABLE)


def get(name: str) -> Method:
    """The method called `name`; ConfigError naming the table's methods otherwise."""
    if not isinstance(name, str) or name not in _TABLE:
        raise ConfigError(f"method must be one of {', '.join(_TABLE)}, got {name!r}")
    return _TABLE[name]


def with_variant() -> tuple[str, ...]:
    """The methods that have Wanda's adaptive-alpha variant."""
    return tuple(method.name for method in _TABLE.values() if method.variant is not None)


def from_weights_alone() -> tuple[str, ...]:
    """The methods that can prune from the weights alone, without activations."""
    return tuple(method.name for method in _TABLE.values() if not method.needs_activations)


def choice(name: str, variant: bool) -> str:
    """('wanda', True) -> 'wanda-variant': how forms, sweeps and figure series name a method."""
    return name + (VARIANT_SUFFIX if variant else "")


def removers() -> tuple[str, ...]:
    """The structure removers' names (they make the model smaller instead of sparser)."""
    return tuple(method.name for method in _TABLE.values() if method.kind is Kind.STRUCTURE)


def choices(structures: bool = False) -> dict[str, str]:
    """The choices and their labels for the forms: each method that masks weights, its variant right after it; with
    `structures`, the structure removers instead."""
    out = {}
    for method in _TABLE.values():
        if (method.kind is Kind.STRUCTURE) != structures:
            continue
        out[method.name] = method.label
        if method.variant is not None:
            out[choice(method.name, True)] = method.variant.label
    return out


def parse_choice(text: str) -> tuple[Method, bool]:
    """'wanda' -> (Wanda's entry, False); 'wanda-variant' -> (Wanda's entry, True). ConfigError otherwise."""
    text = str(text).strip()
    name, variant = (text.removesuffix(VARIANT_SUFFIX), True) if text.endswith(VARIANT_SUFFIX) else (text, False)
    if name not in _TABLE:
        raise ConfigError(f"method {text!r} is not one of {', '.join([*choices(), *choices(True)])}")
    if variant and _TABLE[name].variant is None:
        raise ConfigError(f"{text!r}: only {', '.join(with_variant()) or 'no method'} has a variant (adaptive alpha)")
    return _TABLE[name], variant


def look(text: str) -> MethodStyle:
    """The look of a choice in the figures: the variant's own, or its method's."""
    method, variant = parse_choice(text)
    return method.variant.look if variant else method.look
