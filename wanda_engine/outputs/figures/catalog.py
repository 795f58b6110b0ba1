"""The one catalog of figures for a run, a comparison of runs, and a sweep: the Runs page's figure picker,
the bundles (wanda_engine.outputs.bundle) and `python -m wanda_engine export` all draw from it, and all ask it
which figures a run can draw (`missing`): a figure without data is left out and named, never drawn empty.

Pure: records in, figures out. The caller reads the run directories; `FigureSpec.build` draws lazily, so a
bundle can render each figure on its own and name the one that fails. In a comparison, the per-matrix
figures show one matrix for every run (`story_matrix`: the strongest outlier, chosen once from a run with
activation statistics), and the Explain page's figures come along when the runs are its magnitude-versus-Wanda pair.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from .. import explain
from ...store.run_record import RunRecord
from ...store.matrix_records import MatrixRecord
from .explain import explain_cuts, explain_error_share, explain_outliers, explain_protect, explain_toy
from .frontier import frontier, frontier_gap
from .matrix import channel_norms, density_map, mask_crop, metric_histograms, row_sparsity
from .perplexity import perplexity_bars, perplexity_vs_nsamples, perplexity_vs_sparsity, removed_structures
from .run import block_progress, overlap_heatmap, owl_block_ratios, sparsity_heatmap
from .structure import heads_kept, kept_per_block, removed_blocks, structure_scores
from .style import layout, note
from .zeroshot import zeroshot_bars

FIGURES = {
    "perplexity": "Perplexity: current vs compare run",
    "ppl_vs_sparsity": "Perplexity versus sparsity (all runs of the model)",
    "zeroshot": "Zero-shot accuracy: current vs compare run",
    "frontier": "Frontier: perplexity against measured prefill speed-up (all runs of the model)",
    "frontier_params": "Frontier: perplexity against decoder-block parameters kept (all runs of the model)",
    "blocks": "Sparsity and output error per block",
    "sparsity_heatmap": "Sparsity of every matrix",
    "overlap": "Mask overlap with the reference method, every matrix",
    "owl_ratios": "OWL: outlier ratio and sparsity target per block",
    "heads_kept": "Attention heads kept in each block",
    "kept_per_block": "Share of heads and MLP channels each block kept",
    "removed_blocks": "Block influence and the blocks removed",
    "structure_scores": "Score distributions of the structures, with the cut-off",
    "histograms": "Score histograms of one matrix",
    "channels": "Input-channel norms of one matrix",
    "row_sparsity": "Row sparsity of one matrix",
    "density": "Density map of one matrix",
    "mask_crop": "Mask crop of one matrix",
}
MATRIX_FIGURES = ("histograms", "channels", "row_sparsity", "density", "mask_crop")
STRUCTURE_FIGURES = {"heads_kept": heads_kept, "kept_per_block": kept_per_block, "removed_blocks": removed_blocks,
                     "structure_scores": structure_scores}  # a structure remover's run: what it took out
FRONTIER_AXES = {"frontier": "prefill", "frontier_params": "params"}
# one run's own, whatever it is compared with
RUN_FIGURES = ("blocks", *STRUCTURE_FIGURES, "sparsity_heatmap", "overlap", "owl_ratios")
SWEEP_FIGURES = {"sweep_sparsity": "Perplexity versus sparsity (the sweep's runs)",
                 "sweep_nsamples": "Perplexity versus calibration samples (the sweep's runs)",
                 "sweep_frontier": "Frontier: perplexity against measured prefill speed-up (the sweep's runs)",
                 "sweep_frontier_params": "Frontier: perplexity against decoder-block parameters kept (the sweep's runs)"}
_MATRIX_DRAW: dict[str, Callable[[MatrixRecord], go.Figure]] = {
    "histograms": metric_histograms, "channels": channel_norms, "row_sparsity": row_sparsity,
    "density": density_map, "mask_crop": mask_crop}
# What each per-matrix figure reads from a record: a matrix without it has nothing to draw.
_MATRIX_DATA: dict[str, tuple[str, Callable[[MatrixRecord], bool]]] = {
    "histograms": ("score histograms", lambda m: bool(m.hist)),
    "channels": ("activation norms", lambda m: _has_array(m, "channel_norms")),
    "row_sparsity": ("row-sparsity histogram", lambda m: bool((m.row_sparsity or {}).get("hist"))),
    "density": ("density map", lambda m: _has_array(m, "density")),
    "mask_crop": ("mask crop", lambda m: _has_array(m, "mask_crop")),
}
_NEEDS_ACTIVATIONS = ("channels", "mask_crop", "overlap")  # recorded only from the calibration activations


def _has_array(record: MatrixRecord, kind: str) -> bool:
    array = record.arrays.get(kind)
    return array is not None and getattr(array, "size", 0) > 0


def _weights_alone(run: RunRecord, which: str) -> str:
    """The reason a figure that needs activations is missing from a run pruned without calibration ('' else)."""
    if which in _NEEDS_ACTIVATIONS and not run.request.prune.calibrate:
        return "pruned from the weights alone (no calibration pass), so it recorded no activation statistics"
    return ""


def missing(which: str, run: RunRecord, matrices: Sequence[MatrixRecord] = (), *, compare: RunRecord | None = None,
            matrix: MatrixRecord | None = None) -> str:
    """Why figure `which` of FIGURES has no data for `run` (and `compare`): one sentence, '' when it can be drawn.
    `matrices`: the run's per-matrix records; `matrix`: the one matrix a per-matrix figure would show (else any)."""
    shown = [r for r in (compare, run) if r is not None]
    if which in ("perplexity", "ppl_vs_sparsity"):
        if not any(r.ppl is not None for r in shown):
            return "no run shown was evaluated (perplexity off)"
        if which == "ppl_vs_sparsity" and all(removed_structures(r) for r in shown if r.ppl is not None):
            return "a structure remover's ratio is not a sparsity: its runs are drawn on the frontier"
        return ""
    if which in FRONTIER_AXES or which in STRUCTURE_FIGURES:
        return structure_missing(which, shown, run)
    if which == "zeroshot":
        return "" if any(r.zeroshot for r in shown) else "no run shown was scored on zero-shot tasks"
    if which == "blocks":
        if not run.blocks:
            return "no block records"
        if run.structure is not None and all(b.block_error is None for b in run.blocks):
            return ("every block was scored on the dense model and pruned at the end (global allocation or depth), "
                    "so no block output error was measured (what each block kept is in the structure figures)")
        if all(b.block_error is None for b in run.blocks):
            return ("pruned from the weights alone (no calibration pass), so no block output error was measured "
                    "(its sparsity per matrix is in the sparsity figure)")
        return ""
    if which == "owl_ratios":
        if run.request.prune.layerwise != "owl":
            return "a uniform run: every block had the same target, so there are no OWL ratios"
        return "" if run.blocks and all(b.outlier_ratio is not None for b in run.blocks) else "no OWL ratios recorded"
    if which not in FIGURES:
        raise ValueError(f"no figure named {which!r}; the catalog has {', '.join(FIGURES)}")
    if not matrices and matrix is None:
        return ("a structure remover's run keeps no per-matrix records: it removes heads, channels or blocks"
                if run.structure is not None else "no per-matrix records")
    if which == "sparsity_heatmap":
        return ""
    if which == "overlap":
        return "" if any(m.overlap for m in matrices) else (
            _weights_alone(run, which) or "its records hold no overlap with a reference mask")
    what, has = _MATRIX_DATA[which]
    if any(has(m) for m in ([matrix] if matrix is not None else matrices)):
        return ""
    return _weights_alone(run, which) or f"its records hold no {what}"


def build_figure(which: str, run: RunRecord, compare: RunRecord | None = None, *,
                 matrices: Sequence[MatrixRecord] = (), matrix: MatrixRecord | None = None,
                 model_runs: Sequence[RunRecord] = ()) -> go.Figure:
    """Figure `which` of FIGURES for `run` (and `compare`, drawn first); `matrices`: the run's per-matrix
    records (heatmaps); `matrix`: the one matrix of MATRIX_FIGURES; `model_runs`: the runs of the same model
    for the perplexity-versus-sparsity line (default: `run` and `compare`)."""
    shown = [r for r in (compare, run) if r is not None]
    if which == "perplexity":
        return perplexity_bars(shown)
    if which == "zeroshot":
        return zeroshot_bars(shown)
    if which == "ppl_vs_sparsity":
        return perplexity_vs_sparsity(list(model_runs) or shown)
    if which in FRONTIER_AXES:
        return frontier(list(model_runs) or shown, FRONTIER_AXES[which])
    if which in STRUCTURE_FIGURES:
        if run.structure is None:
            return note(layout(go.Figure(), FIGURES[which]), structure_missing(which, [run], run))
        return STRUCTURE_FIGURES[which](run.structure)
    if which == "blocks":
        return block_progress(run.blocks, structured=run.structure is not None)
    if which == "owl_ratios":
        return owl_block_ratios(run.blocks, run.request.prune)
    if which == "sparsity_heatmap":
        return sparsity_heatmap(list(matrices))
    if which == "overlap":
        return overlap_heatmap(list(matrices))
    if which not in _MATRIX_DRAW:
        raise ValueError(f"no figure named {which!r}; the catalog has {', '.join(FIGURES)}")
    if matrix is None:
        raise ValueError(f"figure {which!r} needs a matrix")
    return _MATRIX_DRAW[which](matrix)


def sweep_builders(runs: Sequence[RunRecord]) -> dict[str, Callable[[], go.Figure]]:
    """A sweep's figures from its complete runs, each drawn when called: 'sparsity' always, 'nsamples' when the runs
    span more than one calibration size (the Wanda paper's figures 3 and 4), the frontier ('frontier',
    'frontier_params') when a run removed structures or measured its speed."""
    out: dict[str, Callable[[], go.Figure]] = {"sparsity": lambda: perplexity_vs_sparsity(runs)}
    if len({run.request.prune.nsamples for run in runs}) > 1:
        out["nsamples"] = lambda: perplexity_vs_nsamples(runs)
    for which, axis in FRONTIER_AXES.items():
        if not structure_missing(which, runs):
            out[which] = lambda a=axis: frontier(runs, a)
    return out


def sweep_figures(runs: Sequence[RunRecord]) -> dict[str, go.Figure]:
    """`sweep_builders`' figures, drawn."""
    return {kind: build() for kind, build in sweep_builders(runs).items()}


def structure_missing(which: str, shown: Sequence[RunRecord], run: RunRecord | None = None) -> str:
    """Why a frontier figure has no data for the runs `shown`, or a structure figure none for `run`; '' else."""
    if which in FRONTIER_AXES:
        return frontier_gap(shown, FRONTIER_AXES[which])
    s = run.structure if run is not None else None
    if s is None:
        return "a mask's run zeroes weights: it removed no heads, channels or blocks"
    if which in ("heads_kept", "kept_per_block") and s.structure == "depth":
        return "a depth run removes whole blocks, not heads or channels"
    if which == "removed_blocks" and s.structure == "width":
        return "a width run removes heads and channels, no whole block"
    return ""


def _outlier_ratio(m: MatrixRecord) -> float:
    value = (m.channels or {}).get("max_over_median")
    return float(value) if isinstance(value, (int, float)) else float("-inf")


def outlier_matrix(matrices: Sequence[MatrixRecord]) -> MatrixRecord | None:
    """The matrix whose strongest input channel stands out most (max/median activation norm): where Wanda and
    magnitude differ most. None without records or without activation statistics."""
    measured = [m for m in matrices if _outlier_ratio(m) > float("-inf")]
    return max(measured, key=lambda m: (_outlier_ratio(m), -m.block), default=None)


@dataclass(frozen=True)
class StoryMatrix:
    """The matrix every run's per-matrix figures show, and one sentence saying why that one."""

    block: int
    name: str
    why: str

    def of(self, matrices: Sequence[MatrixRecord]) -> MatrixRecord | None:
        return next((m for m in matrices if (m.block, m.name) == (self.block, self.name)), None)


def story_matrix(runs: Sequence[RunRecord], matrices: Mapping[str, Sequence[MatrixRecord]]) -> StoryMatrix | None:
    """The strongest outlier matrix of the first run (in order) that recorded activation statistics, chosen once
    for every run; without any, the first matrix of the first run with records. None when no run has records."""
    for run in runs:
        strongest = outlier_matrix(matrices.get(run.name, ()))
        if strongest is not None:
            ratio = (strongest.channels or {})["max_over_median"]
            return StoryMatrix(strongest.block, strongest.name,
                               f"the strongest input-channel outlier (max/median ‖Xⱼ‖₂ = {explain.number(ratio)}×) "
                               f"of run {run.name} ({run.label()})")
    first = next((matrices[r.name][0] for r in runs if matrices.get(r.name)), None)
    if first is None:
        return None
    return StoryMatrix(first.block, first.name, "the first matrix: no run recorded activation statistics to find "
                                                "the strongest outlier by")


@dataclass(frozen=True)
class FigureSpec:
    """One figure of a bundle: `stem` names its files, `title` says what it shows, `build` draws it."""

    stem: str
    title: str
    build: Callable[[], go.Figure]


@dataclass(frozen=True)
class Omitted:
    """A figure the catalog left out: the run it belongs to ('' for a figure of all the runs), what it would
    have shown, and why it has no data."""

    run: str
    title: str
    why: str


@dataclass(frozen=True)
class Plan:
    """What a bundle draws: the figures with data, those left out (and why), and notes for its card (which
    matrix the per-matrix figures show, runs drawn from outside the bundle)."""

    figures: tuple[FigureSpec, ...]
    omitted: tuple[Omitted, ...] = ()
    notes: tuple[str, ...] = ()


def run_figures(run: RunRecord, matrices: Sequence[MatrixRecord], prefix: str,
                story: StoryMatrix | None) -> tuple[list[FigureSpec], list[Omitted]]:
    """One run's own figures: per block and per matrix of the whole run, then the per-matrix figures of the
    `story` matrix; `prefix` starts every stem (the run's name in a comparison). Each figure without data is
    left out and named."""
    label = f"{run.name} ({run.label()})"
    specs, omitted = [], []
    for which in RUN_FIGURES:
        why = missing(which, run, matrices)
        if why:
            omitted.append(Omitted(label, FIGURES[which], why))
        else:
            specs.append(FigureSpec(f"{prefix}{which}", f"{FIGURES[which]} ({run.label()})",
                                    lambda w=which: build_figure(w, run, matrices=matrices)))
    matrix = story.of(matrices) if story is not None else None
    if story is not None and matrix is None:
        omitted.append(Omitted(label, f"the per-matrix figures of block {story.block} {story.name}",
                               missing("sparsity_heatmap", run, matrices) or "the run has no record of that matrix"))
    if matrix is None:
        return specs, omitted
    where = f"block {matrix.block} {matrix.name}"
    for which in MATRIX_FIGURES:
        why = missing(which, run, matrix=matrix)
        title = f"{FIGURES[which]}: {where}"
        if why:
            omitted.append(Omitted(label, title, why))
        else:
            specs.append(FigureSpec(f"{prefix}{which}-b{matrix.block}-{matrix.name}", f"{title} ({run.label()})",
                                    lambda w=which: build_figure(w, run, matrix=matrix)))
    return specs, omitted


def _side_by_side(runs: Sequence[RunRecord], model_runs: Sequence[RunRecord]) -> tuple[list[FigureSpec], list[Omitted]]:
    """The runs side by side: perplexity bars, perplexity versus sparsity, zero-shot bars (where any run has data)."""
    shown = list(runs)
    drawn = {"perplexity": ("Perplexity of the dense and pruned models", lambda: perplexity_bars(shown)),
             "ppl_vs_sparsity": ("Perplexity versus sparsity",
                                 lambda: perplexity_vs_sparsity(list(model_runs) or shown)),
             "zeroshot": ("Zero-shot accuracy", lambda: zeroshot_bars(shown)),
             **{which: (FIGURES[which].split(" (")[0], lambda a=axis: frontier(list(model_runs) or shown, a))
                for which, axis in FRONTIER_AXES.items()}}
    specs, omitted = [], []
    for which, (title, build) in drawn.items():
        reasons = [missing(which, r) for r in shown]
        if shown and not all(reasons):
            specs.append(FigureSpec(which, title, build))
        else:
            omitted.append(Omitted("", title, reasons[0] if reasons else "no runs"))
    return specs, omitted


def _sweep_plan(runs: Sequence[RunRecord]) -> Plan:
    shown = list(runs)
    specs = [FigureSpec(f"sweep_{kind}", SWEEP_FIGURES[f"sweep_{kind}"], build)
             for kind, build in sweep_builders(shown).items()]
    side, omitted = _side_by_side(shown, ())
    return Plan(tuple(specs + [s for s in side if s.stem not in ("ppl_vs_sparsity", *FRONTIER_AXES)]), tuple(omitted),
                ("A sweep's grid is not drawn run by run.",))


def plan(runs: Sequence[RunRecord], matrices: Mapping[str, Sequence[MatrixRecord]], *, sweep: bool = False,
         model_runs: Sequence[RunRecord] = ()) -> Plan:
    """Every figure with data for `runs`: one run, a comparison (the runs side by side, the Explain page's
    figures, then each run's own figures with stems prefixed by the run's name, the per-matrix ones of one
    matrix for all), or a sweep (`sweep=True`: the sweep's figures and the side-by-side ones). `matrices`: each
    run's records, by run name; `model_runs`: every finished run of the model (the perplexity-versus-sparsity
    line, the Explain page's protection test)."""
    if sweep:
        return _sweep_plan(runs)
    specs, omitted = _side_by_side(runs, model_runs)
    elsewhere = [r.name for r in model_runs if r.name not in {run.name for run in runs}]
    drawn = [FIGURES[s.stem].split(" (")[0] for s in specs if s.stem in ("ppl_vs_sparsity", *FRONTIER_AXES)]
    notes = [f"{' and '.join(drawn)} also draw{'s' * (len(drawn) == 1)} runs of the run store that are not in this "
             f"bundle: {', '.join(elsewhere)}."] if elsewhere and drawn else []
    if len(runs) > 1:
        explained = explain_plan(runs, matrices, model_runs)
        specs, omitted, notes = specs + list(explained.figures), omitted + list(explained.omitted), list(explained.notes)
    story = story_matrix(runs, matrices)
    if story is not None:
        notes.append(f"The per-matrix figures show block {story.block} {story.name}"
                     f"{' in every run' if len(runs) > 1 else ''}: {story.why}.")
    for run in runs:
        own, left = run_figures(run, matrices.get(run.name, ()), f"{run.name}-" if len(runs) > 1 else "", story)
        specs, omitted = specs + own, omitted + left
    return Plan(tuple(specs), tuple(omitted), tuple(notes))


@dataclass(frozen=True)
class _Recorded:
    """A run as outputs.explain.comparison reads one (a Run's name, record and records), from records alone."""

    name: str
    record: RunRecord
    matrices: Sequence[MatrixRecord]

    def records(self) -> list[MatrixRecord]:
        return list(self.matrices)


def explain_plan(runs: Sequence[RunRecord], matrices: Mapping[str, Sequence[MatrixRecord]],
                 model_runs: Sequence[RunRecord] = ()) -> Plan:
    """The Explain page's figures of a magnitude-versus-Wanda comparison: the toy at the page's default, the
    outliers, cuts and error share from the runs' records, and the protection test when it was run at the
    comparison's settings (among `model_runs`). What the runs cannot show is left out and named."""
    pair, why_not = explain.comparison(_Recorded(r.name, r, matrices.get(r.name, ())) for r in runs)
    if pair is None:
        return Plan((), (Omitted("", "The Explain page's figures", why_not.removeprefix("This page explains a "
                                                                                      "comparison; ")),))
    toy = explain.toy(explain.TOY_SCALE)
    specs = [FigureSpec("explain-toy", f"Explain, step 1: a toy layer whose input channel {toy.outlier} is "
                                       f"{toy.scale:g}× the others (the page's default)", lambda: explain_toy(toy))]
    omitted = []
    source = pair.evidence
    records, record = source.records(), source.record
    steps = (("explain-outliers", "step 2: how lopsided each matrix's input channels are", explain.outliers,
              explain_outliers),
             ("explain-cuts", "step 3: which metric cuts the weights of the loudest channels", explain.outlier_cuts,
              explain_cuts),
             ("explain-error-share", "step 4: where each method's error comes from", explain.error_share,
              explain_error_share))
    for stem, title, evidence, draw in steps:
        found = evidence(records, record)
        if found is None:
            omitted.append(Omitted("", f"Explain, {title}", f"run {source.name}'s records hold no per-metric "
                                                            "decomposition (no activation statistics)"))
        else:
            specs.append(FigureSpec(stem, f"Explain, {title} (run {source.name})", lambda e=found, d=draw: d(e)))
    protected = explain.protected_runs(pair.magnitude.record, model_runs)
    test = explain.intervention(pair.magnitude.record, pair.wanda.record, protected) if protected else None
    notes = []
    if test is None:
        omitted.append(Omitted("", "Explain, step 5: protecting the loudest channels from magnitude pruning",
                               "the protection test was not run at these settings (the Explain page runs it)"))
    else:
        specs.append(FigureSpec("explain-protect", "Explain, step 5: protecting the loudest channels from magnitude "
                                                   "pruning", lambda: explain_protect(test)))
        notes.append("The protection test (explain-protect) draws runs of the run store that are not in this "
                     f"bundle: {', '.join(r.name for r in protected)}.")
    return Plan(tuple(specs), tuple(omitted), tuple(notes))


def catalog(runs: Sequence[RunRecord], matrices: Mapping[str, Sequence[MatrixRecord]], *, sweep: bool = False,
            model_runs: Sequence[RunRecord] = ()) -> list[FigureSpec]:
    """The figures of `plan` (those with data), in order."""
    return list(plan(runs, matrices, sweep=sweep, model_runs=model_runs).figures)
