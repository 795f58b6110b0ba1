"""Figures of one pruned matrix: score histograms with the cut-off, input-channel norms, per-row sparsity,
the density map and a crop of the mask against the reference method's."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...store.matrix_records import MASK_CODE_NAMES, PRUNED_ONLY_METHOD, PRUNED_ONLY_REFERENCE, MatrixRecord
from ...core.palette import SKY
from .style import BLUE, GREY, MASK_COLOURS, VERMILLION, layout, method_colour, note

LABELLED_CHANNELS = 5
LABEL_ROOM = 0.1  # of the axis: a 3-digit label at a one-column figure's 8 pt is ~7% of its 240-px plot
METRIC_LABELS = {"wanda": "Wanda |W|·‖Xⱼ‖₂", "magnitude": "magnitude |W|", "ria": "RIA (relative importance)·‖Xⱼ‖₂ᵃ"}


def _shape_text(record: MatrixRecord) -> str:
    out_f, in_f = record.shape
    return f"{out_f}×{in_f} = {out_f * in_f:,} weights"

def metric_histograms(record: MatrixRecord) -> go.Figure:
    """Each metric's log10 score histogram on this matrix, split into kept and pruned by that metric's mask."""
    metrics = [m for m in ("wanda", "magnitude") if m in record.hist] + \
        [m for m in record.hist if m not in ("wanda", "magnitude")]
    title = f"Which weights each metric would prune in {record.full_name} ({_shape_text(record)})"
    if not metrics:
        fig = go.Figure()
        return note(layout(fig, title), "no score histograms recorded")
    titles = [f"{METRIC_LABELS.get(m, m)}" + (" — the run's method" if m == record.method else "") for m in metrics]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=titles, horizontal_spacing=0.08)
    zeros, cut_labels = 0, set()
    for col, metric in enumerate(metrics, start=1):
        cut_label = "cut-off (matrix)" if record.group_of(metric) == "matrix" else "cut-off (median over rows)"
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
                x=[cutoff, cutoff], y=[0, top], mode="lines", name=cut_label, legendgroup=cut_label,
                showlegend=cut_label not in cut_labels,
                line={"color": "black", "dash": "dash", "width": 1.5},
                hovertemplate=f"{metric} {cut_label}: log10 score {cutoff:.3f}<extra></extra>"), row=1, col=col)
            cut_labels.add(cut_label)
        zeros = max(zeros, int(h.get("zero_weights", 0) or 0))
        fig.update_xaxes(title_text="log10 score", row=1, col=col)
    fig.update_yaxes(title_text="weights", row=1, col=1)
    sub = (f"run: {record.method}; each metric split by its own mask at the run's sparsity: "
           + "; ".join(record.mask_label(m) for m in metrics))
    if zeros:
        sub += f"; {zeros:,} exact zeros not shown"
    layout(fig, title, sub, barmode="stack", bargap=0)
    return fig


def channel_norms(record: MatrixRecord, top: int = 16) -> go.Figure:
    """Activation norm ‖Xⱼ‖₂ of each input channel, the largest `top` highlighted: Wanda's outlier features."""
    norms = record.arrays.get("channel_norms")
    title = f"Input-channel activation norms ‖Xⱼ‖₂ feeding {record.full_name}"
    fig = go.Figure()
    if norms is None or np.size(norms) == 0:
        layout(fig, title, f"{record.method} run, {_shape_text(record)}")
        fig.update_xaxes(title_text="input channel j")
        fig.update_yaxes(title_text="‖Xⱼ‖₂")
        return note(fig, "no activation statistics")
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
                         hovertemplate="channel %{x}<br>‖Xⱼ‖₂ = %{y:.4g}<extra></extra>"))
    labelled = _apart(top_idx, norms, LABELLED_CHANNELS)
    fig.add_trace(go.Scatter(
        x=top_idx_arr, y=norms[top_idx_arr], mode="markers+text", name=f"top {k} channels",
        marker={"color": VERMILLION, "size": 7, "symbol": "diamond"},
        text=[str(i) if i in labelled else "" for i in top_idx], textposition="top center",
        textfont={"size": 11, "color": VERMILLION},
        hovertemplate="top channel %{x}<br>‖Xⱼ‖₂ = %{y:.4g}<extra></extra>"))
    ratio_txt = f"{ratio:.1f}×" if math.isfinite(ratio) else "∞"
    sub = (f"outlier features: the top 1% of {norms.size} channels carry {share:.1%} of the activation energy; "
           f"max/median = {ratio_txt} ({record.method} run)")
    layout(fig, title, sub, bargap=0)
    fig.update_xaxes(title_text="input channel j")
    fig.update_yaxes(title_text="‖Xⱼ‖₂ over the calibration tokens", range=[0, float(norms.max()) * 1.12 or 1])
    return fig


def _apart(channels: list[int], norms: np.ndarray, most: int) -> set[int]:
    """Up to `most` of `channels` (loudest first) whose labels stay apart: a label is left out when a louder
    one is within LABEL_ROOM of the axis in both directions (874 and 926 of 1536 would print over each other)."""
    top = float(norms.max()) or 1.0
    kept: list[int] = []
    for j in sorted(channels, key=lambda c: -norms[c]):
        if all(abs(j - k) > LABEL_ROOM * norms.size or abs(norms[j] - norms[k]) > LABEL_ROOM * top for k in kept):
            kept.append(j)
        if len(kept) == most:
            break
    return set(kept)


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
    layout(fig, title, f"{record.method}, comparison group {record.group}; {record.shape[0]:,} output rows, "
                        f"std {rs.get('std', float('nan')):.2%}", bargap=0)
    fig.update_xaxes(title_text="fraction of the row pruned", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(title_text="output rows")
    if not len(counts):
        note(fig, "no row histogram recorded")
    return fig


def density_map(record: MatrixRecord) -> go.Figure:
    """Fraction of weights pruned per tile of the [out, in] matrix."""
    dens = record.arrays.get("density")
    title = f"Pruned fraction per tile of {record.full_name} ({record.method}, {record.sparsity:.1%} overall)"
    fig = go.Figure()
    if dens is None or np.size(dens) == 0:
        layout(fig, title)
        return note(fig, "no density map recorded")
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
    layout(fig, title, f"{_shape_text(record)} in {rows}×{cols} tiles; comparison group {record.group}")
    fig.update_xaxes(title_text=f"input tile ({size(in_f, cols)} input channels each)", showgrid=False)
    fig.update_yaxes(title_text=f"output tile ({size(out_f, rows)} rows each)", autorange="reversed", showgrid=False)
    return fig


def mask_crop(record: MatrixRecord) -> go.Figure:
    """A crop of the mask coded by agreement with the reference method, over the channel norms of its columns."""
    crop = record.arrays.get("mask_crop")
    reference = record.overlap.reference if record.overlap else "reference"
    names = {code: text.replace("method", record.method).replace("reference", reference)
             for code, text in MASK_CODE_NAMES.items()}
    title = f"Mask crop of {record.full_name}: {record.method} versus {reference}"
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.74, 0.26], vertical_spacing=0.04)
    if crop is None or np.size(crop) == 0:
        layout(fig, title)
        return note(fig, "no mask crop recorded")
    crop = np.asarray(crop)
    rows = np.asarray(record.arrays.get("crop_rows", np.arange(crop.shape[0])))
    cols = np.asarray(record.arrays.get("crop_cols", np.arange(crop.shape[1])))
    codes = sorted(names)
    n = len(codes)
    # "pruned only by X" takes X's colour (as in the perplexity figures), whichever run is shown.
    colour = dict(MASK_COLOURS)
    colour[PRUNED_ONLY_METHOD] = method_colour(record.method)
    colour[PRUNED_ONLY_REFERENCE] = method_colour(reference)
    if colour[PRUNED_ONLY_METHOD] == colour[PRUNED_ONLY_REFERENCE]:
        colour[PRUNED_ONLY_METHOD], colour[PRUNED_ONLY_REFERENCE] = VERMILLION, BLUE
    scale = []
    for i, code in enumerate(codes):
        scale += [[i / n, colour[code]], [(i + 1) / n, colour[code]]]
    label = np.array([names[c] for c in codes], dtype=object)[np.clip(crop, 0, n - 1)]
    fig.add_trace(go.Heatmap(
        z=crop, x=cols, y=rows, zmin=-0.5, zmax=n - 0.5, colorscale=scale, text=label, name="mask", showscale=False, showlegend=False,
        hovertemplate="output row %{y}, input channel %{x}<br>%{text}<extra></extra>"), row=1, col=1)
    channel_title = "input channel j"
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
        channel_title = f"input channel j (boxed: {int(cols[peak])}, the largest ‖Xⱼ‖₂)"
        fig.add_trace(go.Bar(x=cols, y=sel, name="‖Xⱼ‖₂", marker={"color": colours, "line": {"width": 0}},
                             showlegend=False, hovertemplate="input channel %{x}<br>‖Xⱼ‖₂ = %{y:.4g}<extra></extra>"),
                      row=2, col=1)
        fig.update_yaxes(title_text="‖Xⱼ‖₂", row=2, col=1)
    else:
        fig.add_annotation(text="no activation statistics", xref="x2 domain", yref="y2 domain", x=0.5, y=0.5,
                           showarrow=False, font={"color": GREY})
    fig.update_xaxes(title_text=channel_title, showgrid=False, row=2, col=1)
    fig.update_xaxes(range=[float(cols[0]) - 0.5, float(cols[-1]) + 0.5])  # the crop's own columns, no more
    # the four codes as legend entries (a colour bar's labels would take half a column's width)
    for code in reversed(codes):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=names[code], hoverinfo="skip",
                                 marker={"symbol": "square", "size": 12, "color": colour[code]}), row=1, col=1)
    ov = record.overlap
    sub = f"rows {int(rows[0])}–{int(rows[-1])}, input channels {int(cols[0])}–{int(cols[-1])}"
    if ov:
        sub += (f"; whole matrix: pruned by both {ov.both:.1%}, only {record.method} {ov.only_method:.1%}, "
                f"only {reference} {ov.only_reference:.1%}, Jaccard {ov.jaccard:.2f}")
    layout(fig, title, sub, bargap=0)
    return fig
