"""The Explain page's figures, one per step of the argument, at projector size (larger type than the other pages).

Each takes the evidence `explain` computed from the records and draws it; magnitude and Wanda keep their
colours from `style` throughout.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..explain import (NAMES, PROTECT_STEPS, ErrorShare, Intervention, OutlierCuts, Outliers, Toy, fraction_text,
                       number, protect_text)
from ...core.palette import GREEN, PURPLE, SKY
from .style import DARK_GREY, DENSE_STYLE, GREY, LIGHT_GREY, VERMILLION, YELLOW
from .style import layout, method_colour, method_style
from .ticks import index_ticks, log_ticks

FONT, TITLE_FONT, SUBTITLE_FONT = 18, 24, 16
# Lines of matrix types: told apart by dash and marker as well as colour, so that they survive greyscale print
MATRIX_LOOKS = ((DARK_GREY, "solid", "circle"), (VERMILLION, "dash", "square"), (GREEN, "dot", "diamond"),
                (PURPLE, "dashdot", "triangle-up"), (SKY, "longdash", "x"), (YELLOW, "longdashdot", "cross"),
                (GREY, "solid", "star"))
NORM = "‖Xⱼ‖₂"  # one notation for an input channel's activation norm, in every figure and page text


def _big(fig: go.Figure, title: str, subtitle: str, **kwargs: Any) -> go.Figure:
    """The shared layout, with type a class can read from the back of the room."""
    layout(fig, title, subtitle, title_px=TITLE_FONT, sub_px=SUBTITLE_FONT, **kwargs)
    fig.update_layout(font_size=FONT, margin_l=90, legend_font_size=FONT)
    fig.update_annotations(font_size=FONT)
    # set on every axis, not only as the layout's font: a theme's template (Streamlit's) sets the axes' own fonts
    fig.update_xaxes(tickfont_size=FONT - 2, title_font_size=FONT)
    fig.update_yaxes(tickfont_size=FONT - 2, title_font_size=FONT)
    return fig


def _mask_heatmap(toy: Toy, metric: str) -> go.Heatmap:
    colour = method_colour(metric)
    return go.Heatmap(
        z=toy.masks[metric].astype(int), zmin=0, zmax=1, showscale=False, xgap=3, ygap=3, name=NAMES[metric],
        colorscale=[[0, LIGHT_GREY], [0.5, LIGHT_GREY], [0.5, colour], [1, colour]],
        text=[[f"{w:.2f}" for w in row] for row in toy.weight], texttemplate="%{text}", textfont={"size": FONT},
        customdata=np.where(toy.masks[metric], "pruned", "kept"),
        hovertemplate=f"{NAMES[metric]}: row %{{y}}, channel %{{x}}<br>W = %{{text}}, %{{customdata}}<extra></extra>")


def explain_toy(toy: Toy) -> go.Figure:
    """The toy matrix twice, coloured where magnitude and Wanda prune, under its channel norms; each mask's
    output error in its title (in large type: the number the class compares)."""
    titles = tuple(f"{NAMES[m]} prunes the smallest {score}:<br>error {number(toy.errors[m])}"
                   for m, score in (("magnitude", "|W|"), ("wanda", f"|W|·{NORM}")))
    fig = make_subplots(rows=2, cols=2, row_heights=[0.3, 0.7], horizontal_spacing=0.06, vertical_spacing=0.04,
                        subplot_titles=titles)
    channels = np.arange(toy.norms.size)
    norm_colours = [VERMILLION if j == toy.outlier else SKY for j in channels]
    for col, metric in ((1, "magnitude"), (2, "wanda")):
        fig.add_trace(go.Bar(x=channels, y=toy.norms, marker_color=norm_colours, showlegend=False, name=NORM,
                             text=[f"{n:g}" for n in toy.norms], textposition="outside", cliponaxis=False,
                             textfont={"size": FONT}, hovertemplate=f"channel %{{x}}: {NORM} = %{{y:g}}<extra></extra>"),
                      row=1, col=col)
        fig.add_trace(_mask_heatmap(toy, metric), row=2, col=col)
        # room above the tallest bar for its label, under the subplot's title
        fig.update_yaxes(title_text=NORM if col == 1 else None, showticklabels=False, ticks="",
                         range=[0, float(toy.norms.max()) * 2.2], row=1, col=col)
        fig.update_xaxes(showticklabels=False, ticks="", row=1, col=col)
        fig.update_xaxes(title_text="input channel j", row=2, col=col, **index_ticks(channels))
        fig.update_yaxes(autorange="reversed", title_text="output row" if col == 1 else None, row=2, col=col,
                         showticklabels=col == 1, **index_ticks(range(toy.weight.shape[0])))
    title = f"A toy layer: input channel {toy.outlier} is {toy.scale:g}× louder than the others"
    sub = (f"{toy.weight.shape[0]}×{toy.weight.shape[1]} weights, {toy.sparsity:.0%} of each row pruned (coloured). "
           f"Error Σᵢⱼ ΔWᵢⱼ²·{NORM}²: the output error with input channels treated as uncorrelated")
    return _big(fig, title, sub, height=660, bargap=0.25)


def _merged_lines(evidence: Outliers) -> list[tuple[str, list[float], list[float]]]:
    """One line per distinct input: matrix types that read the same input (q, k and v; gate and up) have the
    same channel norms, so drawn apart their lines would hide each other; named together instead."""
    lines: list[tuple[list[str], list[float], list[float]]] = []
    for name in evidence.matrix_types:
        ratio, share = list(evidence.ratio[name]), list(evidence.share[name])
        same = next((line for line in lines if np.allclose(line[1], ratio, equal_nan=True)
                     and np.allclose(line[2], share, equal_nan=True)), None)
        if same is None:
            lines.append(([name], ratio, share))
        else:
            same[0].append(name)
    return [(_joined(names), ratio, share) for names, ratio, share in lines]


def _joined(names: list[str]) -> str:
    """'self_attn.q_proj', or 'self_attn.q/k/v_proj' for matrices that share a prefix and suffix."""
    if len(names) == 1:
        return names[0]
    prefix, _, _ = names[0].rpartition(".")
    cores = [n.rpartition(".")[2] for n in names]
    suffix = "_proj" if all(c.endswith("_proj") for c in cores) else ""
    shared = [c.removesuffix(suffix) for c in cores] if suffix else cores
    if all(n.rpartition(".")[0] == prefix for n in names):
        return f"{prefix + '.' if prefix else ''}{'/'.join(shared)}{suffix}"
    return " = ".join(names)


def explain_outliers(evidence: Outliers) -> go.Figure:
    """Per block, each input's max/median channel norm and the top-1% channels' share of Σⱼ‖Xⱼ‖₂² (matrix types
    that read the same input share a line)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.6, 0.4])
    lines = _merged_lines(evidence)
    for i, (name, ratio, share) in enumerate(lines):
        colour, dash, symbol = MATRIX_LOOKS[i % len(MATRIX_LOOKS)]
        for row, values, hover in ((1, ratio, "max/median %{y:.3g}×"), (2, share, "top-1%% energy %{y:.1%}")):
            fig.add_trace(go.Scatter(x=evidence.blocks, y=values, mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=row == 1, line={"color": colour, "width": 3, "dash": dash},
                                     marker={"size": 9, "symbol": symbol},
                                     hovertemplate=f"block %{{x}} · {name}<br>{hover}<extra></extra>"), row=row, col=1)
    ex = evidence.extreme
    peak = float(ex.channels["max_over_median"])
    # beside the point, inside a fixed range: an arrow's offset would make plotly widen the range to fit it,
    # without end on a short panel
    right = ex.block <= (min(evidence.blocks) + max(evidence.blocks)) / 2
    fig.add_annotation(x=ex.block + (0.6 if right else -0.6), y=np.log10(peak), xref="x", yref="y", showarrow=False,
                       xanchor="left" if right else "right", yanchor="middle",
                       text=f"channel {ex.channels['top_index'][0]}: {number(peak)}×")
    ratios = [v for _, ratio, _ in lines for v in ratio if v is not None and np.isfinite(v) and v > 0]
    fig.update_yaxes(type="log", title_text=f"max / median {NORM}", row=1, col=1, **log_ticks(ratios),
                     range=[np.log10(min(ratios)) - 0.15, np.log10(max(ratios)) + 0.25] if ratios else None)
    fig.update_yaxes(title_text="top-1% share", tickformat=".0%", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(**index_ticks(evidence.blocks))
    fig.update_xaxes(title_text="block", row=2, col=1)
    sub = (f"One line per input (q, k and v read the same one; so do gate and up). Top: the loudest input channel "
           f"over the median one. Bottom: the share of Σⱼ{NORM}² carried by the top 1% of channels")
    return _big(fig, "How lopsided each matrix's input channels are", sub, height=680)


def explain_cuts(evidence: OutlierCuts) -> go.Figure:
    """For the matrices with the strongest outliers, the share of the top-1% channels' weights each metric prunes."""
    fig = go.Figure()
    for metric in ("magnitude", "wanda"):
        values = evidence.pruned[metric]
        fig.add_trace(go.Bar(y=evidence.matrices, x=values, orientation="h", name=evidence.labels[metric],
                             marker_color=method_colour(metric), text=[f"{v:.0%}" for v in values],
                             textposition="outside", cliponaxis=False, textfont={"size": FONT},
                             hovertemplate=f"{NAMES[metric]} · %{{y}}<br>%{{x:.1%}} of the weights feeding the top 1% "
                                           "of channels pruned<extra></extra>"))
    fig.add_vline(x=evidence.sparsity, line={"color": "black", "dash": "dash", "width": 2},
                  annotation_text=f"{evidence.sparsity:.0%} pruned overall", annotation_position="top")
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title_text="pruned share of the top-1% channels' weights", tickformat=".0%", range=[0, 1.08])
    sub = "The matrices with the largest max/median channel norm, strongest first; both masks on the same weights"
    return _big(fig, "Which metric cuts the weights of the loudest channels", sub, barmode="group",
                height=max(520, 150 + 70 * len(evidence.matrices)))


def explain_error_share(evidence: ErrorShare) -> go.Figure:
    """Cumulative share of each metric's proxy error against the fraction of channels, loudest first."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=evidence.fraction, y=evidence.fraction, mode="lines", name="error spread evenly",
                             line={"color": GREY, "dash": "dot", "width": 2}, hoverinfo="skip"))
    for metric in ("magnitude", "wanda"):
        look = method_style(metric)
        colour = look.colour
        fig.add_trace(go.Scatter(x=evidence.fraction, y=evidence.cumulative[metric], mode="lines",
                                 name=evidence.labels[metric],
                                 line={"color": colour, "dash": look.dash, "width": 4},
                                 hovertemplate=f"{NAMES[metric]}: the top %{{x:.1%}} of channels carry %{{y:.1%}} "
                                               "of its proxy error<extra></extra>"))
        share = evidence.top1pct[metric]
        fig.add_trace(go.Scatter(x=[0.01], y=[share], mode="markers+text", text=[fraction_text(share)],
                                 textposition="top left" if metric == "magnitude" else "top right",
                                 textfont={"size": FONT + 4, "color": colour}, marker={"size": 14, "color": colour},
                                 showlegend=False, hoverinfo="skip"))
    fig.add_vline(x=0.01, line={"color": "black", "dash": "dash", "width": 2})
    # annotations on a log axis take log10 positions (add_vline's own annotation would not)
    fig.add_annotation(x=-2, y=1.04, xref="x", yref="y", text="top 1% of channels", showarrow=False, xanchor="right")
    fig.update_xaxes(type="log", title_text="fraction of input channels, largest activation norm first",
                     tickvals=[0.001, 0.01, 0.1, 1], ticktext=["0.1%", "1%", "10%", "100%"])
    fig.update_yaxes(title_text="share of the proxy error", tickformat=".0%", range=[0, 1.05])
    sub = (f"Σᵢⱼ ΔWᵢⱼ²·{NORM}² split by input channel j, summed over {evidence.matrices} matrices; each method's own "
           "total is 100%")
    return _big(fig, "Where each method's error comes from", sub, height=600)


def _protect_category(p: float) -> str:
    return "0 (plain)" if p == 0 else protect_text(p)


def explain_protect(evidence: Intervention) -> go.Figure:
    """Perplexity of magnitude against the fraction of protected channels, with Wanda and dense as lines."""
    fig = go.Figure()
    x = [_protect_category(p) for p in evidence.protect]
    # the planned points name the axis before the test runs, so that the reference lines span it already
    axis = [_protect_category(p) for p in sorted({0.0, *PROTECT_STEPS, *evidence.protect})]
    fig.add_trace(go.Scatter(x=x, y=evidence.ppl, mode="lines+markers+text", name="magnitude, top p protected",
                             line={"color": method_colour("magnitude"), "width": 4},
                             marker={"size": 14, "symbol": method_style("magnitude").symbol},
                             text=[number(v) for v in evidence.ppl], textposition="top center",
                             textfont={"size": FONT}, customdata=evidence.runs,
                             hovertemplate="p = %{x}: perplexity %{y:.4g}<br>run %{customdata}<extra></extra>"))
    for value, name, colour, dash in ((evidence.wanda, "Wanda", method_colour("wanda"), "dash"),
                                      (evidence.dense, "dense", DENSE_STYLE.colour, "dot")):
        if value is not None:
            fig.add_trace(go.Scatter(x=[axis[0], axis[-1]], y=[value, value], mode="lines+text", name=name,
                                     line={"color": colour, "dash": dash, "width": 3},
                                     text=["", f"{name} {number(value)}"], textposition="bottom left",
                                     textfont={"size": FONT, "color": colour}, hoverinfo="skip"))
    values = [v for v in (*evidence.ppl, evidence.wanda, evidence.dense) if v is not None]
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=axis,
                     title_text="p: the input channels protected, largest activation norm first")
    fig.update_yaxes(type="log", title_text="perplexity (log scale)", **log_ticks(values))
    sub = f"Magnitude pruning at the comparison's settings, never pruning the top p of channels; {evidence.evaluation}"
    return _big(fig, "Test: protect the loudest channels from magnitude pruning", sub, height=600, showlegend=False)
