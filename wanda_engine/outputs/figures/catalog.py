"""The one catalog of figures for a run, a comparison of runs, and a sweep: the Runs page's figure picker,
the bundles (wanda_engine.outputs.bundle) and `python -m wanda_engine export` all draw from it.

Pure: records in, figures out. The caller reads the run directories; `FigureSpec.build` draws lazily, so a
bundle can render each figure on its own and name the one that fails.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from ...store.run_record import RunRecord
from ...store.matrix_records import MatrixRecord
from .matrix import channel_norms, density_map, mask_crop, metric_histograms, row_sparsity
from .perplexity import perplexity_bars, perplexity_vs_nsamples, perplexity_vs_sparsity
from .run import block_progress, overlap_heatmap, owl_block_ratios, sparsity_heatmap
from .zeroshot import zeroshot_bars

FIGURES = {
    "perplexity": "Perplexity: current vs compare run",
    "ppl_vs_sparsity": "Perplexity versus sparsity (all runs of the model)",
    "zeroshot": "Zero-shot accuracy: current vs compare run",
    "blocks": "Sparsity and output error per block",
    "sparsity_heatmap": "Sparsity of every matrix",
    "overlap": "Mask overlap with the reference method, every matrix",
    "owl_ratios": "OWL: outlier ratio and sparsity target per block",
    "histograms": "Score histograms of one matrix",
    "channels": "Input-channel norms of one matrix",
    "row_sparsity": "Row sparsity of one matrix",
    "density": "Density map of one matrix",
    "mask_crop": "Mask crop of one matrix",
}
MATRIX_FIGURES = ("histograms", "channels", "row_sparsity", "density", "mask_crop")
RUN_FIGURES = ("blocks", "sparsity_heatmap", "overlap", "owl_ratios")  # one run's own, whatever it is compared with
SWEEP_FIGURES = {"sweep_sparsity": "Perplexity versus sparsity (the sweep's runs)",
                 "sweep_nsamples": "Perplexity versus calibration samples (the sweep's runs)"}
_MATRIX_DRAW: dict[str, Callable[[MatrixRecord], go.Figure]] = {
    "histograms": metric_histograms, "channels": channel_norms, "row_sparsity": row_sparsity,
    "density": density_map, "mask_crop": mask_crop}


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
    if which == "blocks":
        return block_progress(run.blocks)
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


def sweep_figures(runs: Sequence[RunRecord]) -> dict[str, go.Figure]:
    """A sweep's figures from its complete runs: 'sparsity' always, 'nsamples' when the runs span more than
    one calibration size (the Wanda paper's figures 3 and 4)."""
    out = {"sparsity": perplexity_vs_sparsity(runs)}
    if len({run.request.prune.nsamples for run in runs}) > 1:
        out["nsamples"] = perplexity_vs_nsamples(runs)
    return out


def outlier_matrix(matrices: Sequence[MatrixRecord]) -> MatrixRecord | None:
    """The matrix whose strongest input channel stands out most (max/median activation norm): where Wanda and
    magnitude differ most, so the one a bundle draws the per-matrix figures of. None without records."""
    def ratio(m: MatrixRecord) -> float:
        value = (m.channels or {}).get("max_over_median")
        return float(value) if isinstance(value, (int, float)) else float("-inf")

    return max(matrices, key=lambda m: (ratio(m), -m.block), default=None)


@dataclass(frozen=True)
class FigureSpec:
    """One figure of a bundle: `stem` names its files, `title` says what it shows, `build` draws it."""

    stem: str
    title: str
    build: Callable[[], go.Figure]


def _applies(which: str, run: RunRecord, matrices: Sequence[MatrixRecord]) -> bool:
    if which == "owl_ratios":
        return run.request.prune.layerwise == "owl" and bool(run.blocks)
    if which == "blocks":
        return bool(run.blocks)
    return bool(matrices)


def run_figures(run: RunRecord, matrices: Sequence[MatrixRecord], prefix: str) -> list[FigureSpec]:
    """One run's own figures: per block and per matrix of the whole run, then the per-matrix figures of its
    `outlier_matrix`. `prefix` starts every stem (the run's name in a comparison)."""
    specs = [FigureSpec(f"{prefix}{which}", f"{FIGURES[which]} ({run.label()})",
                        lambda w=which: build_figure(w, run, matrices=matrices))
             for which in RUN_FIGURES if _applies(which, run, matrices)]
    matrix = outlier_matrix(matrices)
    if matrix is not None:
        where = f"block {matrix.block} {matrix.name}"
        specs += [FigureSpec(f"{prefix}{which}-b{matrix.block}-{matrix.name}", f"{FIGURES[which]}: {where} "
                             f"({run.label()})", lambda w=which: build_figure(w, run, matrix=matrix))
                  for which in MATRIX_FIGURES]
    return specs


def comparison_figures(runs: Sequence[RunRecord], model_runs: Sequence[RunRecord] = ()) -> list[FigureSpec]:
    """The runs side by side: perplexity bars, perplexity versus sparsity, zero-shot bars where any run has them."""
    shown = list(runs)
    specs = [FigureSpec("perplexity", "Perplexity of the dense and pruned models", lambda: perplexity_bars(shown)),
             FigureSpec("ppl_vs_sparsity", "Perplexity versus sparsity",
                        lambda: perplexity_vs_sparsity(list(model_runs) or shown))]
    if any(r.zeroshot for r in shown):
        specs.append(FigureSpec("zeroshot", "Zero-shot accuracy", lambda: zeroshot_bars(shown)))
    return specs


def catalog(runs: Sequence[RunRecord], matrices: Mapping[str, Sequence[MatrixRecord]], *, sweep: bool = False,
            model_runs: Sequence[RunRecord] = ()) -> list[FigureSpec]:
    """Every figure for `runs`: one run, a comparison (the runs side by side, then each run's own figures,
    stems prefixed by the run's name), or a sweep (`sweep=True`: the sweep's figures and the side-by-side
    ones; a grid of up to 64 runs is not drawn run by run). `matrices`: each run's records, by run name."""
    if sweep:
        shown = list(runs)
        specs = [FigureSpec("sweep_sparsity", SWEEP_FIGURES["sweep_sparsity"], lambda: perplexity_vs_sparsity(shown))]
        if len({r.request.prune.nsamples for r in shown}) > 1:
            specs.append(FigureSpec("sweep_nsamples", SWEEP_FIGURES["sweep_nsamples"],
                                    lambda: perplexity_vs_nsamples(shown)))
        return specs + [s for s in comparison_figures(shown) if s.stem != "ppl_vs_sparsity"]
    specs = comparison_figures(runs, model_runs)
    for run in runs:
        specs += run_figures(run, matrices.get(run.name, ()), f"{run.name}-" if len(runs) > 1 else "")
    return specs
