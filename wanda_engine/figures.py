"""Records → plotly figures: pure functions, no file reading, no torch, no Streamlit.

Every figure says in its title what was measured (which matrix, method, comparison group; for
perplexity the dataset, window length and token count). `figure_data` turns any of them back into
a long-form table for CSV/JSON export.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .records import (
    KEPT,
    MASK_CODE_NAMES,
    PRUNED_BOTH,
    PRUNED_ONLY_METHOD,
    PRUNED_ONLY_REFERENCE,
    MatrixRecord,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PLOTLY_CONFIG",
    "block_progress",
    "channel_norms",
    "density_map",
    "figure_data",
    "mask_crop",
    "metric_histograms",
    "overlap_heatmap",
    "perplexity_bars",
    "perplexity_vs_nsamples",
    "perplexity_vs_sparsity",
    "row_sparsity",
    "run_label",
    "sparsity_heatmap",
]

PLOTLY_CONFIG: dict[str, Any] = {
    "toImageButtonOptions": {"format": "svg", "filename": "wanda-figure", "width": 900, "height": 600, "scale": 1},
    "displaylogo": False,
}

FONT_FAMILY = "Arial, 'Liberation Sans', Helvetica, sans-serif"
TEMPLATE = "simple_white"
# Okabe–Ito, readable by colour-blind viewers and in greyscale print.
BLUE, ORANGE, VERMILLION, SKY, GREEN, PURPLE, YELLOW = (
    "#0072B2", "#E69F00", "#D55E00", "#56B4E9", "#009E73", "#CC79A7", "#F0E442")
GREY, LIGHT_GREY, DARK_GREY = "#8c8c8c", "#e6e6e6", "#4d4d4d"
METHOD_COLOURS = {"wanda": BLUE, "wanda-variant": SKY, "magnitude": ORANGE, "sparsegpt": GREEN, "ria": PURPLE}
_CYCLE = (VERMILLION, YELLOW, DARK_GREY, PURPLE)
METRIC_LABELS = {"wanda": "Wanda |W|·‖X_j‖₂", "magnitude": "magnitude |W|", "ria": "RIA (relative importance)·‖X_j‖₂^a"}
MASK_COLOURS = {KEPT: LIGHT_GREY, PRUNED_BOTH: DARK_GREY, PRUNED_ONLY_METHOD: VERMILLION, PRUNED_ONLY_REFERENCE: BLUE}


# ---------------------------------------------------------------- helpers

def _wrap(text: str, width: int) -> list[str]:
    """Split at ' — ', '; ' or spaces into lines of at most ~width characters (plotly does not wrap)."""
    import textwrap

    lines: list[str] = []
    for part in text.split("<br>"):
        lines += textwrap.wrap(part, width, break_long_words=False, break_on_hyphens=False) or [""]
    return lines


def _layout(fig: go.Figure, title: str, subtitle: str | None = None, **kwargs: Any) -> go.Figure:
    title_lines = _wrap(title, 78)
    sub_lines = _wrap(subtitle, 112) if subtitle else []
    t: dict[str, Any] = {"text": "<br>".join(title_lines), "x": 0.0, "xanchor": "left", "xref": "paper",
                         "yref": "container", "y": 1.0, "yanchor": "top", "pad": {"t": 14 + 20 * (len(title_lines) - 1)},
                         "font": {"size": 16}}
    if sub_lines:
        t["subtitle"] = {"text": "<br>".join(sub_lines), "font": {"size": 12, "color": "#555555"}}
    # Fixed pixel offsets: title.automargin mis-draws bars in static exports (kaleido 1.5, plotly.js 3).
    top = 14 + 20 * (len(title_lines) - 1) + 20 * len(title_lines) + (6 + 16 * len(sub_lines) if sub_lines else 0) + 28
    fig.update_layout(template=TEMPLATE, title=t, font={"family": FONT_FAMILY, "size": 13},
                      margin={"t": top, "l": 70, "r": 30, "b": 60}, hoverlabel={"font_family": FONT_FAMILY},
                      **kwargs)
    return fig


def _note(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font={"size": 15, "color": GREY})
    return fig


def _method_colour(key: str, seen: dict[str, str]) -> str:
    """A stable colour per series label: the method's own colour first, then the spare cycle."""
    if key not in seen:
        own = METHOD_COLOURS.get(key.split(" ")[0])
        if own is None or own in seen.values():
            spare = [c for c in _CYCLE if c not in seen.values()] or list(_CYCLE)
            own = spare[0]
        seen[key] = own
    return seen[key]


def _shape_text(record: MatrixRecord) -> str:
    out_f, in_f = record.shape
    return f"{out_f}×{in_f} = {out_f * in_f:,} weights"


def _grid(records: Sequence[MatrixRecord]) -> tuple[list[int], list[str], dict[tuple[int, str], int]]:
    """Blocks (sorted) and matrix names (order of first appearance) of `records`, and each record's cell."""
    names: dict[str, None] = {}
    for r in records:
        names.setdefault(r.name, None)
    blocks = sorted({r.block for r in records})
    return blocks, list(names), {(r.block, r.name): i for i, r in enumerate(records)}


def _block_matrix(records: Sequence[MatrixRecord], value) -> tuple[list[int], list[str], np.ndarray]:
    """z[block_i, name_j] = value(record), NaN where a block lacks that matrix or value is None."""
    blocks, names, _ = _grid(records)
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


def _log_ticks(values: Sequence[float]) -> dict[str, Any]:
    """Tick values 1-2-5 × 10^k spanning `values`, for a readable log axis (plotly labels minor ticks '2', '5')."""
    v = np.asarray([x for x in values if x is not None and x > 0], dtype=float)
    if not v.size:
        return {}
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    ticks = [m * 10.0**k for k in range(lo, hi + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if v.min() / 2.5 <= t <= v.max() * 2.5]
    return {"tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


# ---------------------------------------------------------------- one matrix

def metric_histograms(record: MatrixRecord) -> go.Figure:
    """Each metric's log10 score histogram on this matrix, split into kept and pruned by that metric's mask."""
    metrics = [m for m in ("wanda", "magnitude") if m in record.hist] + \
        [m for m in record.hist if m not in ("wanda", "magnitude")]
    title = f"The teacher's view: which weights each metric would prune in {record.full_name} ({_shape_text(record)})"
    if not metrics:
        fig = go.Figure()
        return _note(_layout(fig, title), "no score histograms recorded")
    titles = [f"{METRIC_LABELS.get(m, m)}" + (" — the run's method" if m == record.method else "") for m in metrics]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=titles, horizontal_spacing=0.08)
    cut_label = "cut-off (matrix)" if record.group == "matrix" else "cut-off (median over rows)"
    zeros = 0
    for col, metric in enumerate(metrics, start=1):
        h = record.hist[metric]
        edges = np.asarray(h["edges"], dtype=float)
        kept, pruned = np.asarray(h["kept"]), np.asarray(h["pruned"])
        centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        first = col == 1
        for counts, name, colour in ((kept, "kept", BLUE), (pruned, "pruned", VERMILLION)):
            fig.add_trace(go.Bar(
                x=centres, y=counts, width=widths, name=name, marker={"color": colour, "line": {"width": 0}},
                legendgroup=name, showlegend=first, customdata=np.stack([edges[:-1], edges[1:]], axis=1),
                hovertemplate=f"{metric}: {name}<br>log10 score %{{customdata[0]:.2f}} … %{{customdata[1]:.2f}}"
                              "<br>%{y:,} weights<extra></extra>"), row=1, col=col)
        cutoff = h.get("cutoff")
        if cutoff is not None and math.isfinite(cutoff):
            top = float((kept + pruned).max()) * 1.05 if len(kept) else 1.0
            fig.add_trace(go.Scatter(
                x=[cutoff, cutoff], y=[0, top], mode="lines", name=cut_label, legendgroup="cutoff", showlegend=first,
                line={"color": "black", "dash": "dash", "width": 1.5},
                hovertemplate=f"{metric} {cut_label}: log10 score {cutoff:.3f}<extra></extra>"), row=1, col=col)
        zeros = max(zeros, int(h.get("zero_weights", 0) or 0))
        fig.update_xaxes(title_text="log10 score", row=1, col=col)
    fig.update_yaxes(title_text="weights", row=1, col=1)
    sub = f"run: {record.method}, comparison group {record.group}; each metric split by its own mask at the run's sparsity"
    if zeros:
        sub += f"; {zeros:,} exact zeros not shown"
    _layout(fig, title, sub, barmode="stack", bargap=0,
            legend={"orientation": "h", "y": -0.18, "x": 0.5, "xanchor": "center"})
    fig.update_layout(margin={"b": 90})
    return fig


def channel_norms(record: MatrixRecord, top: int = 16) -> go.Figure:
    """Activation norm ‖X_j‖₂ of each input channel, the largest `top` highlighted: Wanda's outlier features."""
    norms = record.arrays.get("channel_norms")
    title = f"Input-channel activation norms ‖X_j‖₂ feeding {record.full_name}"
    fig = go.Figure()
    if norms is None or np.size(norms) == 0:
        _layout(fig, title, f"{record.method} run, {_shape_text(record)}")
        fig.update_xaxes(title_text="input channel j")
        fig.update_yaxes(title_text="‖X_j‖₂")
        return _note(fig, "no activation statistics")
    norms = np.asarray(norms, dtype=float)
    summary = record.channels or {}
    k = max(0, min(int(top), norms.size))
    top_idx = [int(i) for i in summary.get("top_index", [])][:k]
    if len(top_idx) < k:
        top_idx = [int(i) for i in np.argsort(-norms, kind="stable")[:k]]
    top_idx_arr = np.asarray(top_idx, dtype=int)
    if "top1pct_share" in summary:
        share = float(summary["top1pct_share"])
    else:
        energy = np.sort(norms**2)[::-1]
        share = float(energy[: max(1, math.ceil(0.01 * norms.size))].sum() / (energy.sum() or 1.0))
    med = float(np.median(norms))
    ratio = float(summary.get("max_over_median", norms.max() / med if med > 0 else float("inf")))

    colours = np.full(norms.size, SKY, dtype=object)
    colours[top_idx_arr] = VERMILLION
    idx = np.arange(norms.size)
    fig.add_trace(go.Bar(x=idx, y=norms, name="channel norm", marker={"color": colours, "line": {"width": 0}},
                         hovertemplate="channel %{x}<br>‖X_j‖₂ = %{y:.4g}<extra></extra>"))
    n_labels = min(5, k)
    fig.add_trace(go.Scatter(
        x=top_idx_arr, y=norms[top_idx_arr], mode="markers+text", name=f"top {k} channels",
        marker={"color": VERMILLION, "size": 7, "symbol": "diamond"},
        text=[str(i) if r < n_labels else "" for r, i in enumerate(top_idx)], textposition="top center",
        textfont={"size": 11, "color": VERMILLION},
        hovertemplate="top channel %{x}<br>‖X_j‖₂ = %{y:.4g}<extra></extra>"))
    ratio_txt = f"{ratio:.1f}×" if math.isfinite(ratio) else "∞"
    sub = (f"outlier features: the top 1% of {norms.size} channels carry {share:.1%} of the activation energy; "
           f"max/median = {ratio_txt} ({record.method} run)")
    _layout(fig, title, sub, bargap=0, legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.2})
    fig.update_layout(margin={"b": 90})
    fig.update_xaxes(title_text="input channel j")
    fig.update_yaxes(title_text="‖X_j‖₂ over the calibration tokens", range=[0, float(norms.max()) * 1.12 or 1])
    return fig


def row_sparsity(record: MatrixRecord) -> go.Figure:
    """Histogram of the fraction pruned in each output row."""
    rs = record.row_sparsity or {}
    counts = np.asarray(rs.get("hist", []), dtype=float)
    n = len(counts) or 20
    edges = np.linspace(0.0, 1.0, n + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    if len(counts):
        fig.add_trace(go.Bar(x=centres, y=counts, width=np.diff(edges), name="output rows",
                             marker={"color": BLUE, "line": {"color": "white", "width": 1}},
                             customdata=np.stack([edges[:-1], edges[1:]], axis=1),
                             hovertemplate="%{customdata[0]:.0%} … %{customdata[1]:.0%} pruned"
                                           "<br>%{y:,} rows<extra></extra>"))
    title = (f"Per-row sparsity of {record.full_name}: min {rs.get('min', float('nan')):.1%}, "
             f"mean {rs.get('mean', float('nan')):.1%}, max {rs.get('max', float('nan')):.1%}")
    _layout(fig, title, f"{record.method}, comparison group {record.group}; {record.shape[0]:,} output rows, "
                        f"std {rs.get('std', float('nan')):.2%}", bargap=0)
    fig.update_xaxes(title_text="fraction of the row pruned", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(title_text="output rows")
    if not len(counts):
        _note(fig, "no row histogram recorded")
    return fig


def density_map(record: MatrixRecord) -> go.Figure:
    """Fraction of weights pruned per tile of the [out, in] matrix."""
    dens = record.arrays.get("density")
    title = f"Pruned fraction per tile of {record.full_name} ({record.method}, {record.sparsity:.1%} overall)"
    fig = go.Figure()
    if dens is None or np.size(dens) == 0:
        _layout(fig, title)
        return _note(fig, "no density map recorded")
    dens = np.asarray(dens, dtype=float)
    rows, cols = dens.shape
    out_f, in_f = record.shape

    def size(total: int, parts: int) -> str:
        s = total / parts
        return f"{s:g}" if s == int(s) else f"≈{s:.1f}"

    fig.add_trace(go.Heatmap(z=dens, x=np.arange(cols), y=np.arange(rows), zmin=0, zmax=1, colorscale="Viridis",
                             name="pruned fraction",
                             colorbar={"title": {"text": "pruned", "side": "right"}, "tickformat": ".0%"},
                             hovertemplate="output tile %{y}, input tile %{x}<br>%{z:.1%} pruned<extra></extra>"))
    _layout(fig, title, f"{_shape_text(record)} in {rows}×{cols} tiles; comparison group {record.group}")
    fig.update_xaxes(title_text=f"input tile ({size(in_f, cols)} input channels each)", showgrid=False)
    fig.update_yaxes(title_text=f"output tile ({size(out_f, rows)} rows each)", autorange="reversed", showgrid=False)
    return fig


def mask_crop(record: MatrixRecord) -> go.Figure:
    """A crop of the mask coded by agreement with the reference method, over the channel norms of its columns."""
    crop = record.arrays.get("mask_crop")
    reference = (record.overlap or {}).get("reference", "reference")
    names = {code: text.replace("method", record.method).replace("reference", reference)
             for code, text in MASK_CODE_NAMES.items()}
    title = f"Mask crop of {record.full_name}: {record.method} versus {reference}"
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.74, 0.26], vertical_spacing=0.04)
    if crop is None or np.size(crop) == 0:
        _layout(fig, title)
        return _note(fig, "no mask crop recorded")
    crop = np.asarray(crop)
    rows = np.asarray(record.arrays.get("crop_rows", np.arange(crop.shape[0])))
    cols = np.asarray(record.arrays.get("crop_cols", np.arange(crop.shape[1])))
    codes = sorted(names)
    n = len(codes)
    # "pruned only by X" takes X's colour (as in the perplexity figures), whichever run is shown.
    colour = dict(MASK_COLOURS)
    colour[PRUNED_ONLY_METHOD] = METHOD_COLOURS.get(record.method, VERMILLION)
    colour[PRUNED_ONLY_REFERENCE] = METHOD_COLOURS.get(reference, BLUE)
    if colour[PRUNED_ONLY_METHOD] == colour[PRUNED_ONLY_REFERENCE]:
        colour[PRUNED_ONLY_METHOD], colour[PRUNED_ONLY_REFERENCE] = VERMILLION, BLUE
    scale = []
    for i, code in enumerate(codes):
        scale += [[i / n, colour[code]], [(i + 1) / n, colour[code]]]
    label = np.array([names[c] for c in codes], dtype=object)[np.clip(crop, 0, n - 1)]
    fig.add_trace(go.Heatmap(
        z=crop, x=cols, y=rows, zmin=-0.5, zmax=n - 0.5, colorscale=scale, text=label, name="mask",
        colorbar={"tickvals": codes, "ticktext": [names[c] for c in codes], "len": 0.72, "y": 1, "yanchor": "top",
                  "thickness": 14, "outlinewidth": 0},
        hovertemplate="output row %{y}, input channel %{x}<br>%{text}<extra></extra>"), row=1, col=1)
    fig.update_yaxes(title_text="output row", autorange="reversed", showgrid=False, row=1, col=1)
    norms = record.arrays.get("channel_norms")
    if norms is not None and np.size(norms):
        norms = np.asarray(norms, dtype=float)
        sel = norms[np.clip(cols, 0, norms.size - 1)]
        colours = np.full(sel.size, SKY, dtype=object)
        peak = int(np.argmax(sel))
        colours[peak] = "black"
        fig.add_shape(type="rect", x0=cols[peak] - 0.5, x1=cols[peak] + 0.5, y0=rows[0] - 0.5, y1=rows[-1] + 0.5,
                      xref="x", yref="y", line={"color": "black", "width": 1.5}, fillcolor="rgba(0,0,0,0)",
                      opacity=1, layer="above")
        fig.add_annotation(x=float(cols[peak]), y=1.0, xref="x", yref="y domain", yanchor="bottom",
                           text=f"largest ‖X_j‖₂ (channel {int(cols[peak])})", showarrow=False,
                           font={"size": 11})
        fig.add_trace(go.Bar(x=cols, y=sel, name="‖X_j‖₂", marker={"color": colours, "line": {"width": 0}},
                             showlegend=False, hovertemplate="input channel %{x}<br>‖X_j‖₂ = %{y:.4g}<extra></extra>"),
                      row=2, col=1)
        fig.update_yaxes(title_text="‖X_j‖₂", row=2, col=1)
    else:
        fig.add_annotation(text="no activation statistics", xref="x2 domain", yref="y2 domain", x=0.5, y=0.5,
                           showarrow=False, font={"color": GREY})
    fig.update_xaxes(title_text="input channel j", showgrid=False, row=2, col=1)
    ov = record.overlap or {}
    sub = f"rows {int(rows[0])}–{int(rows[-1])}, input channels {int(cols[0])}–{int(cols[-1])}"
    if ov:
        sub += (f"; whole matrix: pruned by both {ov.get('both', 0):.1%}, only {record.method} "
                f"{ov.get('only_method', 0):.1%}, only {reference} {ov.get('only_reference', 0):.1%}, "
                f"Jaccard {ov.get('jaccard', float('nan')):.2f}")
    _layout(fig, title, sub, bargap=0)
    return fig


# ---------------------------------------------------------------- whole run

def sparsity_heatmap(records: list[MatrixRecord]) -> go.Figure:
    """Achieved sparsity per block × matrix, coloured around the median (the target, for most runs)."""
    fig = go.Figure()
    if not records:
        _layout(fig, "Achieved sparsity per matrix")
        return _note(fig, "no pruned matrices yet")
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
    _layout(fig, f"Achieved sparsity per matrix — {_methods_text(records)}",
            f"{len(records)} matrices in {len(blocks)} blocks; overall {overall:.2%}; colour centred on the median "
            f"{centre:.2%} (±{spread:.1%})")
    fig.update_xaxes(title_text="matrix", showgrid=False, tickangle=-30)
    fig.update_yaxes(title_text="block", autorange="reversed", showgrid=False, dtick=1 if len(blocks) <= 32 else None)
    return fig


def overlap_heatmap(records: list[MatrixRecord]) -> go.Figure:
    """Jaccard similarity of the pruned sets of the run's mask and the reference method's mask."""
    fig = go.Figure()
    with_overlap = [r for r in records if r.overlap]
    if not with_overlap:
        _layout(fig, "Mask overlap with the reference method")
        return _note(fig, "no overlap recorded")
    refs = sorted({r.overlap.get("reference", "?") for r in with_overlap})
    blocks, names, z = _block_matrix(with_overlap, lambda r: r.overlap.get("jaccard"))
    custom = np.full(z.shape + (3,), np.nan)
    for k, key in enumerate(("both", "only_method", "only_reference")):
        custom[..., k] = _block_matrix(with_overlap, lambda r, key=key: r.overlap.get(key))[2]
    methods = ", ".join(sorted({r.method for r in with_overlap}))
    ref = ", ".join(refs)
    fig.add_trace(go.Heatmap(
        z=z, x=names, y=blocks, zmin=0, zmax=1, colorscale="Viridis", name="Jaccard", customdata=custom,
        xgap=1, ygap=1, texttemplate="%{z:.2f}" if z.size <= 300 else None, textfont={"size": 10},
        colorbar={"title": {"text": "Jaccard", "side": "right"}},
        hovertemplate=(f"block %{{y}}, %{{x}}<br>Jaccard %{{z:.3f}}<br>pruned by both %{{customdata[0]:.1%}}"
                       f"<br>only {methods} %{{customdata[1]:.1%}}<br>only {ref} %{{customdata[2]:.1%}}<extra></extra>")))
    mean = float(np.nanmean(z)) if np.isfinite(z).any() else float("nan")
    _layout(fig, f"Mask overlap: {methods} versus reference {ref} (Jaccard of the pruned sets)",
            f"comparison group {', '.join(sorted({r.group for r in with_overlap}))}; mean Jaccard {mean:.3f}; "
            "1 = the same weights pruned")
    fig.update_xaxes(title_text="matrix", showgrid=False, tickangle=-30)
    fig.update_yaxes(title_text="block", autorange="reversed", showgrid=False, dtick=1 if len(blocks) <= 32 else None)
    return fig


def block_progress(blocks: list) -> go.Figure:
    """Achieved sparsity and relative output error per block (BlockRecord objects or dicts)."""
    idx = np.array([int(_get(b, "block")) for b in blocks], dtype=int)
    sp = np.array([float(_get(b, "sparsity")) for b in blocks], dtype=float)
    err = np.array([float(_get(b, "block_error")) for b in blocks], dtype=float)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.16,
                        subplot_titles=("achieved sparsity", "block output error ‖ŷ − y‖² / ‖y‖²"))
    fig.add_trace(go.Bar(x=idx, y=sp, name="sparsity", marker={"color": BLUE},
                         hovertemplate="block %{x}<br>sparsity %{y:.2%}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=idx, y=err, name="block error", mode="lines+markers",
                             line={"color": VERMILLION}, marker={"size": 7},
                             hovertemplate="block %{x}<br>relative error %{y:.4g}<extra></extra>"), row=2, col=1)
    log_err = bool(len(err)) and bool((err > 0).all()) and err.max() / err.min() > 100
    sub = (f"{len(blocks)} blocks pruned; mean sparsity {sp.mean():.2%}, mean error {err.mean():.3g}"
           + ("; error on a log scale" if log_err else "") if len(blocks) else "no block finished yet")
    _layout(fig, "Per-block sparsity and output error, measured on the calibration data", sub, showlegend=False)
    fig.update_yaxes(title_text="sparsity", tickformat=".0%", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="relative error", row=2, col=1,
                     **({"type": "log", "exponentformat": "power"} if log_err else {"rangemode": "tozero"}))
    fig.update_xaxes(title_text="block", row=2, col=1)
    if not len(blocks):
        fig.update_xaxes(range=[-0.5, 9.5])
        fig.update_yaxes(range=[0, 1], row=1, col=1)
        fig.update_yaxes(range=[0, 1], row=2, col=1)
    else:
        fig.update_xaxes(range=[idx.min() - 0.6, idx.max() + 0.6], dtick=1 if idx.max() - idx.min() < 32 else None)
    return fig


# ---------------------------------------------------------------- perplexity

def _eval_key(meta: dict) -> tuple | None:
    ev = meta.get("eval") or None
    if not ev:
        return None
    return (ev.get("dataset"), ev.get("seqlen"), ev.get("windows"), ev.get("tokens"))


def _eval_label(key: tuple | None, short: bool = False) -> str:
    if key is None:
        return "no evaluation"
    dataset, seqlen, windows, tokens = key
    if short:
        return f"{dataset}, {windows}×{seqlen}"
    return f"{dataset}, {windows} windows × {seqlen} tokens = {tokens:,} tokens" if tokens else f"{dataset}, seqlen {seqlen}"


def _method_name(c: dict) -> str:
    """'wanda', 'wanda-variant', 'owl-wanda' — the method as a run's config names it."""
    return ("owl-" if c.get("layerwise") == "owl" else "") + str(c.get("method", "?")) + \
        ("-variant" if c.get("variant") else "")


def run_label(meta: dict) -> str:
    """'wanda 50%', 'wanda-variant 50%', 'owl-wanda 70%', 'sparsegpt 2:4' — from a run.json's config."""
    c = meta.get("config") or {}
    name = _method_name(c)
    pattern = c.get("pattern") or "unstructured"
    if pattern != "unstructured":
        return f"{name} {pattern}"
    ts = c.get("target_sparsity", c.get("sparsity"))
    return f"{name} {ts:.0%}" if isinstance(ts, (int, float)) else name


def _series_label(meta: dict) -> str:
    c = meta.get("config") or {}
    name = _method_name(c)
    pattern = c.get("pattern") or "unstructured"
    return name if pattern == "unstructured" else f"{name} {pattern}"


def _calib_text(metas: Sequence[dict]) -> str:
    """'; calibration 16 × 256 tokens of austen:emma, seed 0' — values that differ between runs joined by '/'."""
    def values(get) -> list:
        out: list = []
        for m in metas:
            v = get(m.get("config") or {}, m.get("calibration") or {})
            if v is not None and v not in out:
                out.append(v)
        return sorted(out, key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v)))

    ns, sl = values(lambda c, k: c.get("nsamples")), values(lambda c, k: c.get("seqlen"))
    if not ns or not sl:
        return ""
    src = values(lambda c, k: k.get("label") or (str(c["calib"]).replace("\\", "/").rsplit("/", 1)[-1] if c.get("calib") else None))
    seeds = values(lambda c, k: c.get("seed"))
    join = lambda xs: "/".join(str(x) for x in xs)  # noqa: E731
    return (f"; calibration {join(ns)} × {join(sl)} tokens" + (f" of {join(src)}" if src else "")
            + (f", seed\u00a0{join(seeds)}" if seeds else ""))


def _ppl(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def perplexity_bars(runs: list[dict], *, log_y: bool = False) -> go.Figure:
    """One bar per run plus the dense model per evaluation setting; bars grouped by evaluation when they differ."""
    fig = go.Figure()
    usable = [m for m in runs if _ppl(m.get("ppl")) is not None]
    left_out = len(runs) - len(usable)
    groups: dict[tuple | None, list[dict]] = {}
    for m in usable:
        groups.setdefault(_eval_key(m), []).append(m)
    multi = len(groups) > 1
    colours: dict[str, str] = {}
    for key, metas in groups.items():
        labels, values, hover, bar_colours = [], [], [], []
        dense = next((_ppl(m.get("ppl_dense")) for m in metas if _ppl(m.get("ppl_dense")) is not None), None)
        if dense is not None:
            labels.append("dense")
            values.append(dense)
            hover.append("unpruned model")
            bar_colours.append(GREY)
        for m in metas:
            lab = run_label(m)
            if lab in labels:  # two runs of the same setting: tell them apart by run name, then by number
                lab = f"{lab} ({m.get('name', '?')})"
            base, n = lab, 1
            while lab in labels:
                n += 1
                lab = f"{base} #{n}"
            labels.append(lab)
            values.append(_ppl(m["ppl"]))
            sp = m.get("sparsity")
            hover.append(f"run {m.get('name', '?')}" + (f"<br>achieved sparsity {sp:.2%}" if isinstance(sp, (int, float)) else ""))
            bar_colours.append(_method_colour(_series_label(m), colours))
        x: Any = labels if not multi else [[_eval_label(key, short=True)] * len(labels), labels]
        fig.add_trace(go.Bar(
            x=x, y=values, name=_eval_label(key), marker={"color": bar_colours}, customdata=hover,
            text=[f"{v:.2f}" for v in values], textposition="outside", cliponaxis=False,
            hovertemplate="%{x}<br>perplexity %{y:.3f}<br>%{customdata}<extra>" + _eval_label(key, True) + "</extra>"))
    if not groups:
        _layout(fig, "Perplexity")
        return _note(fig, "no evaluated runs")
    if multi:
        title = "Perplexity of the dense and pruned models, grouped by evaluation setting"
        sub = "; ".join(_eval_label(k) for k in groups)
    else:
        key = next(iter(groups))
        title = f"Perplexity on {key[0]}" if key else "Perplexity"
        sub = _eval_label(key) + ("; lower is better" if key else "")
    if left_out:
        sub += f"; {left_out} run(s) without perplexity left out"
    _layout(fig, title, sub, showlegend=False, barmode="group", uniformtext={"minsize": 9, "mode": "hide"})
    if log_y:
        fig.update_yaxes(title_text="perplexity (log scale)", type="log",
                         **_log_ticks([y for tr in fig.data for y in (tr.y or ())]))
    else:
        fig.update_yaxes(title_text="perplexity", rangemode="tozero")
    fig.update_xaxes(title_text="model")
    return fig


def perplexity_vs_sparsity(runs: list[dict]) -> go.Figure:
    """Perplexity over target sparsity, one line per method; only runs evaluated like the first run."""
    fig = go.Figure()
    usable = [m for m in runs if _ppl(m.get("ppl")) is not None]
    if not usable:
        _layout(fig, "Perplexity versus sparsity")
        fig.update_xaxes(title_text="target sparsity")
        fig.update_yaxes(title_text="perplexity", type="log")
        return _note(fig, "no evaluated runs")
    key = _eval_key(usable[0])
    same = [m for m in usable if _eval_key(m) == key]
    several_n = len({(m.get("config") or {}).get("nsamples") for m in same}) > 1  # one line per calibration size
    series: dict[str, list[tuple[float, float, str]]] = {}
    for m in same:
        c = m.get("config") or {}
        ts = c.get("target_sparsity", c.get("sparsity"))
        if not isinstance(ts, (int, float)):
            continue
        label = _series_label(m) + (f" (n={c.get('nsamples')})" if several_n else "")
        series.setdefault(label, []).append((float(ts), _ppl(m["ppl"]), str(m.get("name", "?"))))
    colours: dict[str, str] = {}
    xs = [p[0] for pts in series.values() for p in pts]
    for label, pts in series.items():
        pts.sort()
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[p[1] for p in pts], customdata=[p[2] for p in pts], name=label,
            mode="lines+markers", line={"color": _method_colour(label, colours), "width": 2}, marker={"size": 8},
            hovertemplate=f"{label}<br>sparsity %{{x:.0%}}<br>perplexity %{{y:.3f}}<br>run %{{customdata}}<extra></extra>"))
    dense = next((_ppl(m.get("ppl_dense")) for m in same if _ppl(m.get("ppl_dense")) is not None), None)
    if dense is not None:
        lo, hi = (min(xs + [0.0]), max(xs + [0.0])) if xs else (0.0, 1.0)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[dense, dense], mode="lines", name=f"dense ({dense:.2f})",
                                 line={"color": GREY, "dash": "dash", "width": 1.5},
                                 hovertemplate=f"dense model<br>perplexity {dense:.3f}<extra></extra>"))
    sub = _eval_label(key) + _calib_text(same)
    if len(same) < len(usable):
        sub += f"; {len(usable) - len(same)} run(s) evaluated differently left out"
    _layout(fig, f"Perplexity versus sparsity on {key[0]}" if key else "Perplexity versus sparsity", sub,
            legend={"x": 0.02, "y": 0.98, "xanchor": "left", "yanchor": "top"})
    fig.update_xaxes(title_text="target sparsity", tickformat=".0%")
    fig.update_yaxes(title_text="perplexity (log scale)", type="log",
                     **_log_ticks([y for tr in fig.data for y in (tr.y or ())]))
    return fig


# ---------------------------------------------------------------- data behind a figure

def figure_data(fig: go.Figure) -> pd.DataFrame:
    """The data behind a figure in long form: one row per bar / point / heatmap cell.

    Columns: trace, type, x, y, z, text (missing values as NaN/None). Multi-category x values are
    joined with ' / '.
    """
    import pandas as pd  # imported here: pandas costs ~1 s and the figures need it only for export
    frames = []
    for i, tr in enumerate(fig.data):
        name = tr.name if tr.name is not None else f"trace {i}"
        kind = tr.type
        x, y = getattr(tr, "x", None), getattr(tr, "y", None)
        z = getattr(tr, "z", None) if kind in ("heatmap", "contour") else None
        text = getattr(tr, "text", None)
        if z is not None:
            za = np.asarray(z, dtype=float) if not isinstance(z, np.ndarray) else z.astype(float)
            if za.ndim == 1:
                za = za[None, :]
            ny, nx = za.shape
            xs = np.asarray(x, dtype=object) if x is not None else np.arange(nx)
            ys = np.asarray(y, dtype=object) if y is not None else np.arange(ny)
            gx, gy = np.meshgrid(xs[:nx], ys[:ny])
            df = pd.DataFrame({"x": gx.ravel(), "y": gy.ravel(), "z": za.ravel()})
            if text is not None and np.ndim(text) == 2 and np.shape(text) == za.shape:
                df["text"] = np.asarray(text, dtype=object).ravel()
        else:
            if x is None and y is None:
                continue
            if x is not None and isinstance(x, (tuple, list)) and len(x) and isinstance(x[0], (list, tuple, np.ndarray)):
                x = [" / ".join(str(p) for p in parts) for parts in zip(*x)]
            n = len(y) if y is not None else len(x)
            xa = np.asarray(x, dtype=object) if x is not None else np.arange(n)
            ya = np.asarray(y, dtype=object) if y is not None else np.full(n, None)
            df = pd.DataFrame({"x": xa[:n], "y": ya[:n]})
            if text is not None and not isinstance(text, str) and np.ndim(text) == 1 and len(text) == n:
                df["text"] = np.asarray(text, dtype=object)
        df.insert(0, "type", kind)
        df.insert(0, "trace", name)
        frames.append(df)
    cols = ["trace", "type", "x", "y", "z", "text"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    for c in cols:
        if c not in out:
            out[c] = None
    return out[cols]


# ---------------------------------------------------------------- calibration size (sweeps)

def perplexity_vs_nsamples(runs: list[dict]) -> go.Figure:
    """Perplexity over the number of calibration samples (log x), one line per method and sparsity, dense
    as a reference line; only runs evaluated like the first run. The Wanda paper's robustness figure."""
    fig = go.Figure()
    usable = [m for m in runs if _ppl(m.get("ppl")) is not None
              and isinstance((m.get("config") or {}).get("nsamples"), int)]
    if not usable:
        _layout(fig, "Perplexity versus calibration samples")
        fig.update_xaxes(title_text="calibration samples", type="log")
        fig.update_yaxes(title_text="perplexity", type="log")
        return _note(fig, "no evaluated runs")
    key = _eval_key(usable[0])
    same = [m for m in usable if _eval_key(m) == key]
    series: dict[str, list[tuple[int, float, str]]] = {}
    for m in same:
        series.setdefault(run_label(m), []).append((int(m["config"]["nsamples"]), _ppl(m["ppl"]), str(m.get("name", "?"))))
    colours: dict[str, str] = {}
    xs = sorted({p[0] for pts in series.values() for p in pts})
    for label, pts in series.items():
        pts.sort()
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[p[1] for p in pts], customdata=[p[2] for p in pts], name=label,
            mode="lines+markers", line={"color": _method_colour(label, colours), "width": 2}, marker={"size": 8},
            hovertemplate=f"{label}<br>%{{x}} calibration samples<br>perplexity %{{y:.3f}}<br>run %{{customdata}}"
                          "<extra></extra>"))
    dense = next((_ppl(m.get("ppl_dense")) for m in same if _ppl(m.get("ppl_dense")) is not None), None)
    if dense is not None:
        fig.add_trace(go.Scatter(x=[xs[0], xs[-1]], y=[dense, dense], mode="lines", name=f"dense ({dense:.2f})",
                                 line={"color": GREY, "dash": "dash", "width": 1.5},
                                 hovertemplate=f"dense model<br>perplexity {dense:.3f}<extra></extra>"))
    sub = _eval_label(key) + _calib_text(same)
    if any((m.get("config") or {}).get("method") == "magnitude" for m in same):
        sub += "; magnitude uses no calibration data"
    if len(same) < len(usable):
        sub += f"; {len(usable) - len(same)} run(s) evaluated differently left out"
    _layout(fig, f"Perplexity versus number of calibration samples on {key[0]}" if key
            else "Perplexity versus number of calibration samples", sub,
            legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.2, "yanchor": "top"})
    fig.update_layout(margin={"b": 110})
    fig.update_xaxes(title_text="calibration samples (log scale)", type="log", tickvals=xs, ticktext=[str(x) for x in xs])
    fig.update_yaxes(title_text="perplexity (log scale)", type="log",
                     **_log_ticks([y for tr in fig.data for y in (tr.y or ())]))
    return fig


# ---------------------------------------------------------------- zero-shot accuracy (lm-eval)

ZEROSHOT_METRICS = {"acc": "accuracy", "acc_norm": "length-normalised accuracy"}


def _zs_results(meta: dict, which: str) -> dict:
    return (((meta.get("zeroshot") or {}).get(which) or {}).get("results")) or {}


def _zs_tasks(runs: Sequence[dict], metric: str) -> list[str]:
    tasks: list[str] = []
    for m in runs:
        for task, r in _zs_results(m, "pruned").items():
            if _ppl(r.get(metric)) is not None and task not in tasks:
                tasks.append(task)
    return tasks


def _zs_mean(results: dict, tasks: Sequence[str], metric: str) -> float | None:
    """The mean over `tasks` (the paper's summary column), only if every task has the metric."""
    values = [_ppl((results.get(t) or {}).get(metric)) for t in tasks]
    return sum(values) / len(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def _zs_mean_stderr(results: dict, tasks: Sequence[str], metric: str) -> float | None:
    """Standard error of the mean over tasks, the tasks' samples being independent: sqrt(Σ se²) / k."""
    ses = [_ppl((results.get(t) or {}).get(f"{metric}_stderr")) for t in tasks]
    return math.sqrt(sum(e * e for e in ses)) / len(ses) if ses and all(e is not None for e in ses) else None  # type: ignore[misc]


def zeroshot_table(runs: list[dict]) -> pd.DataFrame:
    """One row per run, task and metric: dense and pruned scores and Δ = pruned − dense (fractions in [0, 1]).

    With several tasks, a 'mean' row per run and metric averages them, as the paper's last column does.
    """
    import pandas as pd

    cols = ["run", "method", "task", "metric", "dense", "pruned", "delta", "pruned_stderr", "n"]
    rows: list[dict[str, Any]] = []
    for m in runs:
        pruned, dense = _zs_results(m, "pruned"), _zs_results(m, "dense")
        for metric in ZEROSHOT_METRICS:
            tasks = [t for t, r in pruned.items() if _ppl(r.get(metric)) is not None]
            for task in tasks:
                r, d = pruned[task], dense.get(task) or {}
                p, dv = _ppl(r.get(metric)), _ppl(d.get(metric))
                rows.append({"run": m.get("name"), "method": run_label(m), "task": task, "metric": metric, "dense": dv,
                             "pruned": p, "delta": p - dv if dv is not None else None,
                             "pruned_stderr": _ppl(r.get(f"{metric}_stderr")), "n": r.get("n")})
            if len(tasks) > 1:
                p, dv = _zs_mean(pruned, tasks, metric), _zs_mean(dense, tasks, metric)
                rows.append({"run": m.get("name"), "method": run_label(m), "task": "mean", "metric": metric, "dense": dv,
                             "pruned": p, "delta": p - dv if p is not None and dv is not None else None,
                             "pruned_stderr": _zs_mean_stderr(pruned, tasks, metric), "n": None})
    return pd.DataFrame(rows, columns=cols)


def _zs_caption(runs: Sequence[dict], tasks: Sequence[str]) -> str:
    """'lm-eval 0.4.13, 0-shot; boolq n=3270, rte n=277; all questions' — what the bars were measured on."""
    harness = sorted({str((m.get("zeroshot") or {}).get("harness")) for m in runs})
    shots = sorted({((m.get("zeroshot") or {}).get("config") or {}).get("num_fewshot", 0) for m in runs})
    limits = sorted({str(((m.get("zeroshot") or {}).get("config") or {}).get("limit")) for m in runs})
    ns: dict[str, list] = {}
    for m in runs:
        for t, r in _zs_results(m, "pruned").items():
            if t in tasks and r.get("n") not in ns.setdefault(t, []):
                ns[t].append(r.get("n"))
    same_n = {n for t in tasks for n in ns.get(t, [])}
    if len(same_n) == 1 and all(len(ns.get(t, [])) == 1 for t in tasks):
        n_text = f"{', '.join(tasks)}: n={same_n.pop()} each"
    else:
        n_text = ", ".join(f"{t} n={'/'.join(str(n) for n in ns.get(t, []))}" for t in tasks)
    limit_text = "all questions" if limits == ["None"] else "at most " + "/".join(limits).replace("None", "all") + " per task"
    return (f"lm-eval {'/'.join(harness)}, {'/'.join(str(s) for s in shots)}-shot; {n_text}; {limit_text}; "
            "higher is better; error bars ±1 standard error")


def zeroshot_bars(runs: list[dict], metric: str = "acc") -> go.Figure:
    """Grouped bars per task: the dense model and each run's pruned model (and their mean over tasks)."""
    fig = go.Figure()
    what = ZEROSHOT_METRICS.get(metric, metric)
    usable = [m for m in runs if any(_ppl(r.get(metric)) is not None for r in _zs_results(m, "pruned").values())]
    if not usable:
        _layout(fig, f"Zero-shot {what}")
        fig.update_yaxes(title_text=metric, range=[0, 1], tickformat=".0%")
        return _note(fig, "no runs with zero-shot results" + (f" for {metric}" if runs else ""))
    tasks = _zs_tasks(usable, metric)
    x = tasks + (["mean"] if len(tasks) > 1 else [])

    def bar(name: str, results: dict, colour: str, hover: str) -> None:
        ys = [_ppl((results.get(t) or {}).get(metric)) for t in tasks]
        errs = [_ppl((results.get(t) or {}).get(f"{metric}_stderr")) for t in tasks]
        if len(tasks) > 1:
            ys.append(_zs_mean(results, tasks, metric))
            errs.append(_zs_mean_stderr(results, tasks, metric))
        fig.add_trace(go.Bar(
            x=x, y=ys, name=name, marker={"color": colour},
            error_y={"type": "data", "array": errs, "visible": True,
                     "color": DARK_GREY, "thickness": 1},
            text=[f"{y:.1%}" if y is not None else "" for y in ys], textposition="outside", cliponaxis=False,
            hovertemplate=f"{name}<br>%{{x}}<br>{metric} %{{y:.2%}}<br>{hover}<extra></extra>"))

    # one dense series per model and task settings: runs of different models are not one dense model
    dense_keys: list[tuple] = []
    for m in usable:
        key = ((m.get("model") or {}).get("source") or (m.get("config") or {}).get("model"),
               repr(sorted(((m.get("zeroshot") or {}).get("config") or {}).items())))
        if key not in dense_keys and _zs_results(m, "dense"):
            dense_keys.append(key)
            label = "dense" if not dense_keys[1:] else f"dense ({(m.get('model') or {}).get('label', key[0])})"
            bar(label, _zs_results(m, "dense"), GREY if len(dense_keys) == 1 else LIGHT_GREY, "unpruned model")
    colours: dict[str, str] = {}
    labels: list[str] = []
    for m in usable:
        lab = run_label(m)
        if lab in labels:
            lab = f"{lab} ({m.get('name', '?')})"
        labels.append(lab)
        bar(lab, _zs_results(m, "pruned"), _method_colour(_series_label(m), colours), f"run {m.get('name', '?')}")
    _layout(fig, f"Zero-shot {what} of the dense and pruned models", _zs_caption(usable, tasks),
            barmode="group", uniformtext={"minsize": 8, "mode": "hide"})
    fig.update_yaxes(title_text=f"{metric} ({what})", range=[0, 1.08], tickformat=".0%")
    fig.update_xaxes(title_text="task")
    return fig


# ---------------------------------------------------------------- OWL: layer-wise sparsity

def owl_block_ratios(blocks: list, config: dict | None = None) -> go.Figure:
    """Each block's sparsity target and achieved sparsity, next to its outlier ratio (OWL's LOD).

    `blocks`: BlockRecord objects or dicts with `target` and `outlier_ratio` (None for uniform runs);
    `config`: the run's config dict, for the caption (owl_m, owl_lambda, target).
    """
    idx = [int(_get(b, "block")) for b in blocks]
    ratios = [_get(b, "outlier_ratio") for b in blocks]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.16,
                        subplot_titles=("outlier ratio: share of Wanda scores above M × the block's mean",
                                        "sparsity per block"))
    title = "OWL: blocks with more outliers are pruned less"
    if not blocks or any(r is None for r in ratios):
        _layout(fig, title, showlegend=False)
        return _note(fig, "uniform run: every block has the same target (run with layerwise 'owl' to see OWL's ratios)"
                     if blocks else "no block finished yet")
    targets = [float(_get(b, "target")) for b in blocks]
    achieved = [float(_get(b, "sparsity")) for b in blocks]
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
    c = config or {}
    sub = (f"M = {c.get('owl_m', '?')}, λ = {c.get('owl_lambda', '?')}; block targets {min(targets):.1%} … "
           f"{max(targets):.1%}, mean {mean:.2%}; outlier ratios measured on the dense model's calibration activations")
    _layout(fig, title, sub, barmode="overlay", legend={"orientation": "h", "y": -0.18, "x": 0.5, "xanchor": "center"})
    fig.update_yaxes(title_text="outlier ratio", tickformat=".2%", rangemode="tozero", row=1, col=1)
    lo = max(0.0, min(targets + achieved) - 0.05)
    fig.update_yaxes(title_text="sparsity", tickformat=".0%", range=[lo, min(1.0, max(targets + achieved) + 0.05)],
                     row=2, col=1)
    fig.update_xaxes(title_text="block", row=2, col=1)
    return fig
