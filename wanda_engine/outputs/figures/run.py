"""Figures of one whole run: sparsity and mask overlap of every matrix, and the per-block views
(sparsity with output error, and OWL's outlier ratios with the block targets)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...config import PruneConfig
from ...core.events import BlockFinished
from ...store.matrix_records import BlockRecord, MatrixRecord
from .style import BLUE, GREY, VERMILLION, layout, note
from .ticks import index_ticks, log_ticks


def _block_matrix(records: Sequence[MatrixRecord], value) -> tuple[list[int], list[str], np.ndarray]:
    """Blocks (sorted), matrix names (order of first appearance) and z[block_i, name_j] = value(record),
    NaN where a block lacks that matrix or value is None."""
    blocks = sorted({r.block for r in records})
    names = list(dict.fromkeys(r.name for r in records))
    z = np.full((len(blocks), len(names)), np.nan)
    bi = {b: i for i, b in enumerate(blocks)}
    ni = {n: j for j, n in enumerate(names)}
    for r in records:
        v = value(r)
        if v is not None:
            z[bi[r.block], ni[r.name]] = v
    return blocks, names, z


def _methods_text(records: Sequence[MatrixRecord]) -> str:
    methods = sorted({r.method for r in records})
    groups = sorted({r.group for r in records})
    return f"method {', '.join(methods)}, comparison group {', '.join(groups)}"


def sparsity_heatmap(records: list[MatrixRecord]) -> go.Figure:
    """Achieved sparsity per block × matrix, coloured around the median (the target, for most runs)."""
    fig = go.Figure()
    if not records:
        layout(fig, "Achieved sparsity per matrix")
        return note(fig, "no pruned matrices yet")
    blocks, names, z = _block_matrix(records, lambda r: r.sparsity)
    finite = z[np.isfinite(z)]
    centre = float(np.median(finite)) if finite.size else 0.5
    spread = max(0.02, float(np.abs(finite - centre).max()) if finite.size else 0.0)
    numel = np.array([r.shape[0] * r.shape[1] for r in records], dtype=float)
    overall = float(np.dot(numel, [r.sparsity for r in records]) / numel.sum())
    cells = z.size
    fig.add_trace(go.Heatmap(
        z=z, x=names, y=blocks, colorscale="RdBu_r", zmid=centre, zmin=centre - spread, zmax=centre + spread,
        name="sparsity", xgap=1, ygap=1,
        texttemplate="%{z:.1%}" if cells <= 300 else None, textfont={"size": 10},
        colorbar={"title": {"text": "sparsity", "side": "right"}, "tickformat": ".1%"},
        hovertemplate="block %{y}, %{x}<br>sparsity %{z:.4f}<extra></extra>"))
    layout(fig, f"Achieved sparsity per matrix — {_methods_text(records)}",
            f"{len(records)} matrices in {len(blocks)} blocks; overall {overall:.2%}; colour centred on the median "
            f"{centre:.2%} (±{spread:.1%})")
    fig.update_xaxes(title_text="matrix", showgrid=False, tickangle=-30)
    fig.update_yaxes(title_text="block", autorange="reversed", showgrid=False, **index_ticks(blocks))
    return fig


def overlap_heatmap(records: list[MatrixRecord]) -> go.Figure:
    """Jaccard similarity of the pruned sets of the run's mask and the reference method's mask."""
    fig = go.Figure()
    with_overlap = [r for r in records if r.overlap]
    if not with_overlap:
        layout(fig, "Mask overlap with the reference method")
        return note(fig, "no overlap recorded")
    refs = sorted({r.overlap.reference for r in with_overlap})
    blocks, names, z = _block_matrix(with_overlap, lambda r: r.overlap.jaccard)
    custom = np.full(z.shape + (3,), np.nan)
    for k, share in enumerate((lambda r: r.overlap.both, lambda r: r.overlap.only_method,
                               lambda r: r.overlap.only_reference)):
        custom[..., k] = _block_matrix(with_overlap, share)[2]
    methods = ", ".join(sorted({r.method for r in with_overlap}))
    ref = ", ".join(refs)
    fig.add_trace(go.Heatmap(
        z=z, x=names, y=blocks, zmin=0, zmax=1, colorscale="Viridis", name="Jaccard", customdata=custom,
        xgap=1, ygap=1, texttemplate="%{z:.2f}" if z.size <= 300 else None, textfont={"size": 10},
        colorbar={"title": {"text": "Jaccard", "side": "right"}},
        hovertemplate=(f"block %{{y}}, %{{x}}<br>Jaccard %{{z:.3f}}<br>pruned by both %{{customdata[0]:.1%}}"
                       f"<br>only {methods} %{{customdata[1]:.1%}}<br>only {ref} %{{customdata[2]:.1%}}<extra></extra>")))
    mean = float(np.nanmean(z)) if np.isfinite(z).any() else float("nan")
    masks = "; ".join(sorted({label for r in with_overlap for label in (r.mask_label(r.method),
                                                                        r.mask_label(r.overlap.reference))}))
    layout(fig, f"Mask overlap: {methods} versus reference {ref} (Jaccard of the pruned sets)",
            f"{masks}; mean Jaccard {mean:.3f}; "
            "1 = the same weights pruned")
    fig.update_xaxes(title_text="matrix", showgrid=False, tickangle=-30)
    fig.update_yaxes(title_text="block", autorange="reversed", showgrid=False, **index_ticks(blocks))
    return fig


NO_ERROR_STRUCTURED = "no output error: every block was scored on the dense model and pruned at the end"


def block_progress(blocks: Sequence[BlockRecord | BlockFinished], structured: bool = False) -> go.Figure:
    """Achieved sparsity and relative output error per block: a run's BlockRecords, or the BlockFinished
    events of a running job. `structured`: a structure remover's run, whose blocks report the share of their
    parameters removed (not zeroed)."""
    idx = np.array([int(b.block) for b in blocks], dtype=int)
    sp = np.array([float(b.sparsity) for b in blocks], dtype=float)
    # None: pruned from the weights alone (calibrate=False), or a structure remover that scored every block on the
    # dense model and removed at the end (global allocation, depth): no error was measured; drawn as a gap
    err = np.array([np.nan if b.block_error is None else float(b.block_error) for b in blocks], dtype=float)
    measured = err[np.isfinite(err)]
    what = "parameters removed" if structured else "sparsity"
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.16,
                        subplot_titles=("share of the block's parameters removed" if structured else "achieved sparsity",
                                        "block output error ‖ŷ − y‖² / ‖y‖²"))
    fig.add_trace(go.Bar(x=idx, y=sp, name=what, marker={"color": BLUE},
                         hovertemplate=f"block %{{x}}<br>{what} %{{y:.2%}}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=idx, y=err, name="block error", mode="lines+markers",
                             line={"color": VERMILLION}, marker={"size": 7},
                             hovertemplate="block %{x}<br>relative error %{y:.4g}<extra></extra>"), row=2, col=1)
    log_err = bool(len(measured)) and bool((measured > 0).all()) and measured.max() / measured.min() > 100
    error_text = (f"mean error {measured.mean():.3g}" if len(measured) else NO_ERROR_STRUCTURED if structured
                  else "no output error: pruned from the weights alone, without calibration")
    sub = (f"{len(blocks)} blocks pruned; mean {what} {sp.mean():.2%}, {error_text}"
           + ("; error on a log scale" if log_err else "") if len(blocks) else "no block finished yet")
    layout(fig, f"Per-block {what} and output error, measured on the calibration data", sub, showlegend=False)
    fig.update_yaxes(title_text="removed" if structured else "sparsity", tickformat=".0%", rangemode="tozero",
                     row=1, col=1)
    fig.update_yaxes(title_text="relative error", row=2, col=1,
                     **({"type": "log", **log_ticks(measured)} if log_err else {"rangemode": "tozero"}))
    fig.update_xaxes(title_text="block", row=2, col=1)
    if not len(blocks):
        fig.update_xaxes(range=[-0.5, 9.5])
        fig.update_yaxes(range=[0, 1], row=1, col=1)
        fig.update_yaxes(range=[0, 1], row=2, col=1)
    else:
        fig.update_xaxes(range=[idx.min() - 0.6, idx.max() + 0.6], **index_ticks(idx))
    return fig



def owl_block_ratios(blocks: Sequence[BlockRecord], prune: PruneConfig | None = None) -> go.Figure:
    """Each block's sparsity target and achieved sparsity, next to its outlier ratio (OWL's LOD).

    `blocks`: a run's blocks (`outlier_ratio` is None in uniform runs); `prune`: its settings, for the
    caption (owl_m, owl_lambda).
    """
    idx = [b.block for b in blocks]
    ratios = [b.outlier_ratio for b in blocks]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.16,
                        subplot_titles=("outlier ratio: share of Wanda scores above M × the block's mean",
                                        "sparsity per block"))
    title = "OWL: blocks with more outliers are pruned less"
    if not blocks or any(r is None for r in ratios):
        layout(fig, title, showlegend=False)
        return note(fig, "uniform run: every block has the same target (run with layerwise 'owl' to see OWL's ratios)"
                     if blocks else "no block finished yet")
    targets = [float(b.target) for b in blocks]
    achieved = [float(b.sparsity) for b in blocks]
    fig.add_trace(go.Bar(x=idx, y=ratios, name="outlier ratio", marker={"color": VERMILLION},
                         hovertemplate="block %{x}<br>outlier ratio %{y:.3%}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=idx, y=targets, name="target", marker={"color": GREY},
                         hovertemplate="block %{x}<br>target sparsity %{y:.2%}<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Scatter(x=idx, y=achieved, name="achieved", mode="markers", marker={"color": BLUE, "size": 8},
                             hovertemplate="block %{x}<br>achieved sparsity %{y:.2%}<extra></extra>"), row=2, col=1)
    mean = sum(targets) / len(targets)
    fig.add_trace(go.Scatter(x=[min(idx) - 0.5, max(idx) + 0.5], y=[mean, mean], mode="lines", name="mean target",
                             line={"color": "black", "dash": "dash", "width": 1},
                             hovertemplate=f"mean target {mean:.2%}<extra></extra>"), row=2, col=1)
    settings = f"M = {prune.owl_m}, λ = {prune.owl_lambda}" if prune else "M = ?, λ = ?"
    sub = (f"{settings}; block targets {min(targets):.1%} … "
           f"{max(targets):.1%}, mean {mean:.2%}; outlier ratios measured on the dense model's calibration activations")
    layout(fig, title, sub, barmode="overlay")
    fig.update_yaxes(title_text="outlier ratio", tickformat=".2%", rangemode="tozero", row=1, col=1)
    lo = max(0.0, min(targets + achieved) - 0.05)
    fig.update_yaxes(title_text="sparsity", tickformat=".0%", range=[lo, min(1.0, max(targets + achieved) + 0.05)],
                     row=2, col=1)
    fig.update_xaxes(**index_ticks(idx))
    fig.update_xaxes(title_text="block", row=2, col=1)
    return fig
