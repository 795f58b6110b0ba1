"""The Explain page's argument, computed: for each step its evidence and one sentence built from the
numbers of the run in front of the class (never a claim written in advance).

    1. toy            a small W and one outlier input channel: what magnitude and Wanda prune, what it costs
    2. outliers       how lopsided each matrix's input channels are (max/median norm, top-1% energy)
    3. outlier_cuts   how much of the weight feeding the top-1% channels each metric prunes
    4. error_share    how much of each metric's proxy error those channels carry
    5. intervention   perplexity of magnitude when the top-p channels are protected, against plain magnitude and Wanda

Pure numpy over the records (MatrixRecord) and run records (RunRecord): no torch, no Streamlit.
Steps 2–4 read one run's records, where both metrics' masks were chosen on the same weights and inputs, each in
its own default group: in the Wanda run's records the magnitude mask is per matrix, the very mask of the magnitude
run whose perplexity the page quotes (`mask_sources` says so, or says where older records differ).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from ..config import RunRequest
from ..store.run_record import RunRecord
from ..store.matrix_records import (ERROR_METRICS, GROUP_WORDS, METRIC_NAMES, MatrixRecord, mask_label,
                                    top1pct_count)
from ..store.run_store import Run

JARGON = {
    "activation norm": "‖Xⱼ‖₂, the size of input channel j's values over all calibration tokens: how hard "
                       "that input drives the layer.",
    "outlier feature": "an input channel whose activation norm is many times its layer's median channel.",
    "proxy error": "Σᵢⱼ ΔWᵢⱼ²·‖Xⱼ‖₂², the output error ‖(W − Ŵ)X‖² that pruning causes when the input "
                   "channels are treated as uncorrelated (its diagonal part), relative to Σᵢⱼ Wᵢⱼ²·‖Xⱼ‖₂².",
}
PROTECT_STEPS = (0.001, 0.005, 0.01, 0.02)  # the fractions of input channels step 5 protects
TOY_SCALE = 30  # step 1's outlier channel, times the others' norm, as the page opens (and as bundles draw it)
STRONGEST = 8  # step 3 shows the matrices with the strongest outliers
FRACTIONS = np.unique(np.concatenate([np.geomspace(1e-3, 1.0, 121), [0.01]]))  # step 4's x axis
NAMES = METRIC_NAMES
GROUP_NOUNS = {"row": "output row", "matrix": "matrix", "nm": "N:M group"}  # "50% of every output row"


def protect_text(p: float) -> str:
    """A protected fraction: 0.001 -> '0.1%', 0.01 -> '1%'."""
    return f"{p * 100:.3g}%"


def fraction_text(x: float) -> str:
    """A share as a class reads it: '42%', '3.5%', '0.4%', '99.6%' (never a rounded-up 100%)."""
    return f"{x:.0%}" if 0.095 <= x < 0.995 else f"{x:.1%}"


def number(x: float) -> str:
    """Three significant digits, and no exponent: '4.92', '541', '5,970'."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _times(a: float, b: float) -> str:
    """How a compares with b, in words: '12× as large as', 'about the same as'."""
    if b <= 0:
        return "infinitely larger than" if a > 0 else "the same as"
    ratio = a / b
    return "about the same as" if abs(ratio - 1) < 0.05 else f"{number(ratio)}× as large as"


def model_text(run: RunRecord) -> str:
    return (run.model.label or run.request.model).split(" ")[0]


def calibration_text(run: RunRecord) -> str:
    """'16 × 256 calibration tokens of austen:emma'."""
    prune = run.request.prune
    return f"{prune.nsamples} × {prune.seqlen} calibration tokens of {run.calibration.text_name(prune.calib)}"


def evaluation_text(run: RunRecord) -> str:
    """'austen:prideprejudice, 10 windows × 512 tokens = 5,120 tokens'."""
    return run.eval.describe() if run.eval is not None else "no perplexity measured"


# --- step 1: the toy --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Toy:
    """A small weight matrix pruned per output row by magnitude and by Wanda, on inputs of given norms."""

    weight: np.ndarray  # [rows, cols]
    norms: np.ndarray  # ‖X_j‖ of each input channel [cols]
    sparsity: float
    masks: dict[str, np.ndarray]  # metric -> [rows, cols] bool, True = pruned
    errors: dict[str, float]  # metric -> Σ_ij ΔW_ij²·‖X_j‖², the diagonal form of ‖(W − Ŵ)X‖²
    outlier: int | None = None  # the outlier channel's index
    scale: float = 1.0  # its norm over the others'

    @property
    def sentence(self) -> str:
        pruned = {m: int(self.masks[m][:, self.outlier].sum()) if self.outlier is not None else 0 for m in self.masks}
        mag, wanda = self.errors["magnitude"], self.errors["wanda"]
        return (f"With channel {self.outlier}'s activation norm at {self.scale:g}× the others', magnitude prunes "
                f"{pruned['magnitude']} of the {len(self.weight)} weights that channel feeds and Wanda "
                f"{pruned['wanda']}: the output error Σᵢⱼ ΔWᵢⱼ²·‖Xⱼ‖₂² is {number(mag)} for magnitude and "
                f"{number(wanda)} for Wanda, magnitude's {_times(mag, wanda)} Wanda's.")


def prune_toy(weight: np.ndarray, norms: np.ndarray, sparsity: float = 0.5, outlier: int | None = None,
              scale: float = 1.0) -> Toy:
    """Prune int(cols·sparsity) weights of every row by |W| and by |W|·‖X_j‖ (ties: the lower index first)."""
    weight, norms = np.asarray(weight, dtype=float), np.asarray(norms, dtype=float)
    k = int(weight.shape[1] * sparsity)
    masks, errors = {}, {}
    for metric, score in (("magnitude", np.abs(weight)), ("wanda", np.abs(weight) * norms)):
        mask = np.zeros(weight.shape, dtype=bool)
        np.put_along_axis(mask, np.argsort(score, axis=1, kind="stable")[:, :k], True, axis=1)
        masks[metric] = mask
        errors[metric] = float(((weight * mask) ** 2 @ norms**2).sum())
    return Toy(weight, norms, sparsity, masks, errors, outlier, scale)


def toy(outlier_scale: float, rows: int = 6, cols: int = 8, sparsity: float = 0.5, seed: int = 0) -> Toy:
    """Seeded weights (two decimals, as drawn on screen), every channel's norm 1 except one outlier's."""
    weight = np.random.default_rng(seed).normal(size=(rows, cols)).round(2)
    outlier = min(2, cols - 1)
    norms = np.ones(cols)
    norms[outlier] = float(outlier_scale)
    return prune_toy(weight, norms, sparsity, outlier, float(outlier_scale))


# --- step 2: outliers exist ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Outliers:
    """Per block and matrix type, max/median input-channel norm and the top-1% channels' share of ‖X‖² energy."""

    blocks: list[int]
    matrix_types: list[str]
    ratio: dict[str, list[float | None]]  # matrix type -> per block (None: not recorded)
    share: dict[str, list[float | None]]
    extreme: MatrixRecord  # the matrix with the largest max/median
    sentence: str


def _ratio(rec: MatrixRecord) -> float | None:
    value = (rec.channels or {}).get("max_over_median")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def outliers(records: list[MatrixRecord], run: RunRecord) -> Outliers | None:
    """None when the run recorded no activation statistics."""
    recs = [r for r in records if _ratio(r) is not None]
    if not recs:
        return None
    blocks = sorted({r.block for r in recs})
    types = list(dict.fromkeys(r.name for r in recs))
    by_key = {(r.block, r.name): r for r in recs}
    ratio = {t: [_ratio(by_key[b, t]) if (b, t) in by_key else None for b in blocks] for t in types}
    share = {t: [by_key[b, t].channels["top1pct_share"] if (b, t) in by_key else None for b in blocks] for t in types}
    extreme = max(recs, key=_ratio)
    ch = extreme.channels
    in_features = extreme.shape[1]
    median_ratio = float(np.median([_ratio(r) for r in recs]))
    sentence = (f"In {model_text(run)}, measured on {calibration_text(run)}: the most extreme input is channel "
                f"{ch['top_index'][0]} of block {extreme.block}'s {extreme.name}, with an activation norm "
                f"{number(_ratio(extreme))}× its matrix's median channel; there the top 1% of channels "
                f"({top1pct_count(in_features)} of {in_features}) carry {fraction_text(ch['top1pct_share'])} of "
                f"the energy Σⱼ‖Xⱼ‖₂², and in half of the {len(recs)} matrices the largest channel is at least "
                f"{number(median_ratio)}× the median.")
    return Outliers(blocks, types, ratio, share, extreme, sentence)


# --- step 3: magnitude cuts exactly those ------------------------------------------------------------
def has_error_records(records: list[MatrixRecord]) -> bool:
    """Whether the records hold what steps 3 and 4 read (runs recorded before them do not)."""
    return any(_decomposed(r) for r in records)


def _decomposed(rec: MatrixRecord) -> bool:
    return (rec.by_metric is not None and all(m in rec.by_metric for m in ERROR_METRICS)
            and "channel_norms" in rec.arrays and all(f"channel_error_{m}" in rec.arrays for m in ERROR_METRICS))


def _groups(recs: list[MatrixRecord]) -> dict[str, str | None]:
    """Each metric's comparison group in these records (None where they disagree)."""
    found = {m: {r.group_of(m) for r in recs} for m in ERROR_METRICS}
    return {m: next(iter(g)) if len(g) == 1 else None for m, g in found.items()}


def _words(recs: list[MatrixRecord]) -> dict[str, str]:
    """'per matrix' for each metric: the group its masks were chosen in, in words."""
    return {m: GROUP_WORDS.get(g, f"per {g} group") if g else "in mixed groups" for m, g in _groups(recs).items()}


def _labels(recs: list[MatrixRecord]) -> dict[str, str]:
    """'magnitude, per matrix' for each metric: what a legend and a sentence name each mask."""
    return {m: mask_label(m, g) if g else f"{NAMES[m]}, {_words(recs)[m]}" for m, g in _groups(recs).items()}


def _every_group(recs: list[MatrixRecord], sparsity: float) -> str:
    """'magnitude prunes 50% of every matrix and Wanda 50% of every output row' (or 'both prune ...')."""
    nouns = {m: GROUP_NOUNS.get(g, f"{g} group") if g else "comparison group" for m, g in _groups(recs).items()}
    if nouns["magnitude"] == nouns["wanda"]:
        return f"both prune {sparsity:.0%} of every {nouns['wanda']}"
    return f"magnitude prunes {sparsity:.0%} of every {nouns['magnitude']} and Wanda {sparsity:.0%} of every {nouns['wanda']}"


@dataclass(frozen=True)
class OutlierCuts:
    """For the matrices with the strongest outliers, the fraction of the top-1% channels' weights each metric prunes."""

    matrices: list[str]  # 'block 3 · mlp.down_proj', strongest first
    ratio: list[float]  # their max/median norm
    pruned: dict[str, list[float]]  # metric -> fraction pruned of the weights feeding the top-1% channels
    pooled: dict[str, float]  # metric -> the same over all the matrices shown
    sparsity: float  # of every comparison group, for both metrics
    sentence: str
    labels: dict[str, str]  # metric -> its mask, named with its group: 'magnitude, per matrix'


def outlier_cuts(records: list[MatrixRecord], run: RunRecord, count: int = STRONGEST) -> OutlierCuts | None:
    """None when the records hold no per-metric decomposition (re-run the Compare)."""
    recs = sorted((r for r in records if _decomposed(r) and _ratio(r) is not None), key=_ratio, reverse=True)[:count]
    if not recs:
        return None
    weights = np.array([r.shape[0] * top1pct_count(r.shape[1]) for r in recs], dtype=float)
    pruned = {m: [float(r.by_metric[m]["top1pct_pruned"]) for r in recs] for m in ERROR_METRICS}
    pooled = {m: float(np.dot(pruned[m], weights) / weights.sum()) for m in ERROR_METRICS}
    sparsity = run.request.prune.target_sparsity
    lo, hi = _ratio(recs[-1]), _ratio(recs[0])
    sentence = (f"In the {len(recs)} matrices with the strongest outliers ({number(lo)}× to {number(hi)}× "
                f"max/median), magnitude prunes {fraction_text(pooled['magnitude'])} of the weights that feed the top "
                f"1% of channels and Wanda {fraction_text(pooled['wanda'])}, while {_every_group(recs, sparsity)} "
                f"(both masks chosen on the same weights in the {run.label()} run, {calibration_text(run)}).")
    return OutlierCuts([f"block {r.block} · {r.name}" for r in recs], [_ratio(r) for r in recs], pruned, pooled,
                       sparsity, sentence, _labels(recs))


# --- step 4: that is where the error comes from ------------------------------------------------------
@dataclass(frozen=True)
class ErrorShare:
    """Cumulative share of each metric's proxy error against the fraction of channels, largest norm first."""

    fraction: np.ndarray  # of each matrix's input channels (the top ceil(f·n) by norm)
    cumulative: dict[str, np.ndarray]  # metric -> share of its proxy error, summed over the matrices
    top1pct: dict[str, float]  # metric -> share carried by each matrix's top1pct_count channels
    mean_error: dict[str, float]  # metric -> mean relative proxy error per matrix
    matrices: int
    sentence: str
    labels: dict[str, str]  # metric -> its mask, named with its group: 'magnitude, per matrix'


def error_share(records: list[MatrixRecord], run: RunRecord) -> ErrorShare | None:
    """None when the records hold no per-channel decomposition (re-run the Compare)."""
    recs = [r for r in records if _decomposed(r)]
    if not recs:
        return None
    cumulative = {m: np.zeros(FRACTIONS.size) for m in ERROR_METRICS}
    top, total = dict.fromkeys(ERROR_METRICS, 0.0), dict.fromkeys(ERROR_METRICS, 0.0)
    for rec in recs:
        norms = np.asarray(rec.arrays["channel_norms"], dtype=float)
        order = np.argsort(-norms, kind="stable")
        counts = np.clip(np.ceil(FRACTIONS * norms.size - 1e-9).astype(int), 1, norms.size)
        for m in ERROR_METRICS:
            running = np.cumsum(np.asarray(rec.arrays[f"channel_error_{m}"], dtype=float)[order])
            cumulative[m] += running[counts - 1]
            top[m] += running[top1pct_count(norms.size) - 1]
            total[m] += running[-1]
    share = {m: cumulative[m] / total[m] if total[m] > 0 else cumulative[m] for m in ERROR_METRICS}
    top1 = {m: top[m] / total[m] if total[m] > 0 else 0.0 for m in ERROR_METRICS}
    mean = {m: total[m] / len(recs) for m in ERROR_METRICS}
    words = _words(recs)
    sentence = (f"Summed over the {len(recs)} matrices of the {run.label()} run, the top 1% of channels by "
                f"activation norm carry {fraction_text(top1['magnitude'])} of magnitude's proxy error (its mask "
                f"{words['magnitude']}) and {fraction_text(top1['wanda'])} of Wanda's ({words['wanda']}); "
                f"magnitude's mean relative proxy error per matrix, {mean['magnitude']:.3g}, is "
                f"{_times(mean['magnitude'], mean['wanda'])} Wanda's, {mean['wanda']:.3g} ({calibration_text(run)}).")
    return ErrorShare(FRACTIONS, share, top1, mean, len(recs), sentence, _labels(recs))


# --- step 5: test it, protect the outliers -----------------------------------------------------------
def _settings(run: RunRecord) -> tuple:
    """What must agree for two runs' perplexities to be compared: model, calibration, sparsity, evaluation."""
    prune, ev = run.request.prune, run.request.eval
    return (run.request.model_spec(), prune.calib, prune.nsamples, prune.seqlen, prune.seed, prune.pattern,
            prune.target_sparsity, prune.layerwise, ev and (ev.dataset, ev.seqlen, ev.windows))


def same_settings(a: RunRecord, b: RunRecord) -> bool:
    """Runs that differ at most in their method, comparison group and protection (and in whether a magnitude run
    calibrated: its masks are the same either way, so the Compare's magnitude run from the weights pairs too)."""
    return _settings(a) == _settings(b)


def protected_runs(magnitude: RunRecord, candidates: Iterable[RunRecord]) -> list[RunRecord]:
    """The complete magnitude runs with protect_channels > 0 at `magnitude`'s settings, the newest per p, by p."""
    newest: dict[float, RunRecord] = {}
    for run in candidates:
        prune = run.request.prune
        if (run.complete and prune.method == "magnitude" and not prune.variant and prune.protect_channels > 0
                and prune.weight_update == "none"
                and prune.resolved_group == magnitude.request.prune.resolved_group and same_settings(run, magnitude)
                and run.ppl is not None):
            if prune.protect_channels not in newest or run.created > newest[prune.protect_channels].created:
                newest[prune.protect_channels] = run
    return [newest[p] for p in sorted(newest)]


def protect_requests(magnitude: RunRequest, steps: Iterable[float] = PROTECT_STEPS) -> list[RunRequest]:
    """Magnitude at the comparison's settings, protecting each fraction of channels in turn (named anew, nothing
    saved, no zero-shot)."""
    # protection picks channels by their activation norms: calibrated even where the Compare's magnitude was not
    return [replace(magnitude, prune=replace(magnitude.prune, protect_channels=p, calibrate=True), name=None,
                    save_model=None, zeroshot=None) for p in steps]


@dataclass(frozen=True)
class Intervention:
    """Perplexity against the fraction of protected channels, p = 0 being plain magnitude."""

    protect: list[float]
    ppl: list[float]
    runs: list[str]
    wanda: float | None
    dense: float | None
    evaluation: str
    sentence: str


def _verdict(closed: float) -> str:
    if closed >= 1:
        return "all of the gap and more"
    if closed >= 0.75:
        return "most of the gap"
    if closed >= 0.25:
        return "part of the gap"
    return "little of the gap" if closed > 0 else "none of the gap"


def _intervention_sentence(points: list[tuple[float, float]], wanda: float | None, dense: float | None,
                           evaluation: str, groups: tuple[str, str | None]) -> str:
    (_, plain), measured = points[0], points[1:]
    magnitude = f"magnitude ({GROUP_WORDS.get(groups[0], groups[0])})"
    wanda_name = f"Wanda ({GROUP_WORDS.get(groups[1], groups[1])})" if groups[1] else "Wanda"
    reference = f"{wanda_name} scores {wanda:.4g}" if wanda is not None else "no Wanda run to compare"
    if not measured:
        return (f"Not measured yet: plain {magnitude} scores perplexity {plain:.4g} and {reference} on {evaluation}; "
                f"the button prunes magnitude again protecting {', '.join(map(protect_text, PROTECT_STEPS))} of the "
                "input channels to test whether they carry the gap.")
    p, ppl = next(((p, v) for p, v in measured if p == 0.01), measured[-1])
    dense_txt = f"dense {dense:.4g}; " if dense is not None else ""
    if wanda is None or wanda >= plain:
        return (f"Protecting the top {protect_text(p)} of input channels takes {magnitude} from perplexity "
                f"{plain:.4g} to {ppl:.4g}; {reference}, so there is no gap to close here ({dense_txt}{evaluation}).")
    closed = (plain - ppl) / (plain - wanda)
    return (f"Protecting the top {protect_text(p)} of input channels takes {magnitude} from perplexity {plain:.4g} "
            f"to {ppl:.4g}: it closes {_verdict(closed)} to {wanda_name}'s {wanda:.4g} ({closed:.0%} of it; "
            f"{dense_txt}{evaluation}).")


def intervention(magnitude: RunRecord, wanda: RunRecord | None, protected: list[RunRecord]) -> Intervention | None:
    """None when plain magnitude has no perplexity."""
    if magnitude.ppl is None:
        return None
    points = [(0.0, magnitude.ppl)] + [(r.request.prune.protect_channels, r.ppl) for r in protected]
    names = [magnitude.name] + [r.name for r in protected]
    wanda_ppl = wanda.ppl if wanda is not None else None
    evaluation = evaluation_text(magnitude)
    groups = (magnitude.request.prune.resolved_group, wanda.request.prune.resolved_group if wanda else None)
    return Intervention([p for p, _ in points], [v for _, v in points], names, wanda_ppl, magnitude.ppl_dense,
                        evaluation, _intervention_sentence(points, wanda_ppl, magnitude.ppl_dense, evaluation, groups))


# --- which runs the page explains -------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """A Wanda run and a magnitude run at the same settings (what the Compare preset makes)."""

    wanda: Run
    magnitude: Run

    @property
    def evidence(self) -> Run:
        """The run whose records steps 2–4 read: Wanda's, unless only magnitude's hold the decomposition."""
        if has_error_records(self.wanda.records()) or not has_error_records(self.magnitude.records()):
            return self.wanda
        return self.magnitude


def mask_sources(pair: Comparison) -> tuple[str, bool]:
    """Which masks steps 2–4 read and whether they are the masks of the two runs whose perplexities the page
    quotes: (one sentence, True when they are). Each run's own mask is its own; the other metric's mask in the
    evidence's records is the other run's where it was chosen in that run's group on the same weights (magnitude's
    mask needs the weights alone; Wanda's needs the run's activations, which differ after block 0 in a magnitude
    run, so only a Wanda run's records give both runs' masks)."""
    source, other = (pair.wanda, pair.magnitude) if pair.evidence is pair.wanda else (pair.magnitude, pair.wanda)
    records, run = source.records(), source.record
    metric, other_metric = run.request.prune.method, other.record.request.prune.method
    recorded, other_group = _groups(records).get(other_metric), other.record.request.prune.resolved_group
    own = f"its own mask ({mask_label(metric, run.request.prune.resolved_group)})"
    if other_metric == "magnitude" and recorded == other_group:
        return (f"Steps 2–4 read the records of run {source.name}: {own} and, chosen on the same weights, the "
                f"{mask_label(other_metric, recorded)} mask, the very mask of run {other.name}, whose perplexity "
                f"step 5 starts from.", True)
    chosen = mask_label(other_metric, recorded) if recorded else f"{NAMES[other_metric]}, in mixed groups"
    why = (f"but run {other.name} pruned {GROUP_WORDS.get(other_group, other_group)}" if recorded != other_group else
           f"chosen on run {source.name}'s activations, which differ from run {other.name}'s after the first block")
    return (f"Steps 2–4 read the records of run {source.name}: {own} and a {chosen} mask, {why}; so steps 3–4 do "
            f"not describe the mask of run {other.name}, whose perplexity step 5 quotes. Press Compare magnitude vs "
            "Wanda again to record the two runs' own masks side by side.", False)


def comparison(runs: Iterable[Run | None]) -> tuple[Comparison | None, str]:
    """The comparison among the runs shown, or None and one sentence saying what is missing."""
    by_method = {}
    for run in runs:
        prune = run.record.request.prune if run is not None and run.record is not None else None
        if prune is not None and not prune.protect_channels and not prune.variant and prune.weight_update == "none":
            by_method.setdefault(prune.method, run)
    wanda, magnitude = by_method.get("wanda"), by_method.get("magnitude")
    if wanda is None or magnitude is None:
        missing = " and ".join(m for m, r in (("a Wanda run", wanda), ("a magnitude run", magnitude)) if r is None)
        return None, f"This page explains a comparison; the runs shown lack {missing}."
    if not same_settings(wanda.record, magnitude.record):
        return None, (f"The runs shown ({wanda.name}, {magnitude.name}) differ in model, calibration, sparsity or "
                      "evaluation, so they do not make one comparison.")
    return Comparison(wanda, magnitude), ""
