"""What a structure remover took out of the decoder blocks, from its run's StructureRecord: the attention heads each
block kept, the share of heads and MLP channels each kept, the blocks removed by their influence (depth), and the
score distributions of each kind of structure with the cut-off.

Blocks are numbered as in the dense model (a removed block keeps its number). Kept is blue, removed vermillion,
as in the mask figures."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...store.shrink_record import BlockShrink, ScoreHistogram, StructureRecord
from .style import BLUE, GREY, LIGHT_GREY, VERMILLION, layout, note
from .ticks import index_ticks, significant

KEPT, REMOVED, BLOCK_GONE = 1.0, 0.0, 0.5  # heads_kept's cells (a discrete colour scale)


def _run_text(s: StructureRecord) -> str:
    """'flap, global allocation, bias compensation: 20.0% of the decoder blocks' parameters removed (asked 0.2,
    counted as params)'."""
    how = ([f"{s.allocation} allocation"] if s.structure == "width" else []) + \
        (["bias compensation"] if s.bias_compensation else [])
    return (f"{', '.join([s.method, *how])}: {s.removed_fraction:.1%} of the decoder blocks' parameters removed "
            f"(asked {s.ratio:g}, counted as {s.target})")


def heads_kept(s: StructureRecord) -> go.Figure:
    """Blocks × query heads: which heads each block kept (KV groups go whole), removed blocks greyed."""
    width = [b for b in s.blocks if b.heads]
    fig = go.Figure()
    title = "Attention heads kept in each block"
    if not width:
        layout(fig, title, _run_text(s))
        return note(fig, "no heads were scored: this run removed whole blocks")
    heads = max(b.heads for b in width)
    rows = [b.block for b in s.blocks]
    z = np.full((len(rows), heads), np.nan)
    for i, b in enumerate(s.blocks):
        if b.removed:
            z[i, :] = BLOCK_GONE
        elif b.heads:
            z[i, : b.heads] = REMOVED
            z[i, list(b.heads_kept)] = KEPT
    per = width[0].heads // max(width[0].kv_heads, 1)
    words = np.vectorize(lambda v: {KEPT: "kept", REMOVED: "removed", BLOCK_GONE: "block removed"}.get(v, ""))(z)
    fig.add_trace(go.Heatmap(
        z=z, x=list(range(heads)), y=rows, zmin=0, zmax=1, xgap=1, ygap=1, showscale=False, name="heads",
        colorscale=[[0, VERMILLION], [0.33, VERMILLION], [0.34, LIGHT_GREY], [0.66, LIGHT_GREY], [0.67, BLUE], [1, BLUE]],
        customdata=words, hovertemplate="block %{y}, query head %{x}: %{customdata}<extra></extra>"))
    for name, colour in (("kept", BLUE), ("removed", VERMILLION)):  # legend keys for the discrete colours
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker={"symbol": "square", "size": 12, "color": colour}))
    kept = sum(len(b.heads_kept) for b in width)
    layout(fig, title, f"{_run_text(s)}; {kept} of {sum(b.heads for b in width)} query heads kept; removed in whole "
                       f"KV groups of {per} query head{'s' * (per != 1)}")
    fig.update_xaxes(title_text="query head (dense numbering)", showgrid=False, **index_ticks(range(heads)))
    fig.update_yaxes(title_text="block", autorange="reversed", showgrid=False, **index_ticks(rows))
    return fig


def _share(b: BlockShrink, part: str) -> float:
    if b.removed:
        return 0.0
    return len(b.heads_kept) / b.heads if part == "heads" else b.channels_kept / b.channels


def kept_per_block(s: StructureRecord) -> go.Figure:
    """Each block's share of attention heads and of MLP channels kept (a global allocation's differ per block)."""
    width = [b for b in s.blocks if b.heads and b.channels]
    fig = go.Figure()
    title = "Share of attention heads and MLP channels each block kept"
    if not width:
        layout(fig, title, _run_text(s))
        return note(fig, "no heads or channels were scored: this run removed whole blocks")
    idx = [b.block for b in width]
    for part, name, colour, pattern in (("heads", "attention heads", BLUE, ""), ("channels", "MLP channels", GREY, "/")):
        shares = [_share(b, part) for b in width]
        fig.add_trace(go.Bar(x=idx, y=shares, name=name, marker={"color": colour, "pattern": {"shape": pattern}},
                             hovertemplate=f"block %{{x}}<br>{name} kept %{{y:.1%}}<extra></extra>"))
    channels = sum(b.channels_kept for b in width)
    sub = (f"{_run_text(s)}; {channels:,} of {sum(b.channels for b in width):,} MLP channels kept"
           + ("; every block alike (uniform allocation)" if s.allocation == "uniform" else ""))
    layout(fig, title, sub, barmode="group")
    fig.update_yaxes(title_text="share kept", tickformat=".0%", range=[0, 1.05])
    fig.update_xaxes(title_text="block", **index_ticks(idx))
    return fig


def removed_blocks(s: StructureRecord) -> go.Figure:
    """Depth: each block's influence (ShortGPT's 1 − cos(x_in, x_out)), the removed ones in vermillion, the cut-off."""
    depth = [b for b in s.blocks if b.influence is not None]
    fig = go.Figure()
    title = "Block influence: the blocks that change their input least are removed"
    if not depth:
        layout(fig, title, _run_text(s))
        return note(fig, "no block influence measured: this run removed heads and channels, no whole block")
    idx = [b.block for b in depth]
    fig.add_trace(go.Bar(x=idx, y=[b.influence for b in depth], name="block influence",
                         marker={"color": [VERMILLION if b.removed else BLUE for b in depth]},
                         customdata=["removed" if b.removed else "kept" for b in depth],
                         hovertemplate="block %{x}: %{customdata}<br>influence %{y:.4g}<extra></extra>"))
    gone = [b for b in depth if b.removed]
    if gone:
        cut = max(b.influence for b in gone)
        fig.add_trace(go.Scatter(x=[min(idx) - 0.5, max(idx) + 0.5], y=[cut, cut], mode="lines",
                                 name=f"cut-off {significant(cut)}", line={"color": "black", "dash": "dash", "width": 1.5},
                                 hovertemplate=f"highest influence removed {cut:.4g}<extra></extra>"))
    layout(fig, title, f"{_run_text(s)}; blocks {', '.join(str(b.block) for b in gone) or 'none'} removed "
                       f"(vermillion); influence averaged over every calibration token")
    fig.update_yaxes(title_text="1 − cos(x_in, x_out)", rangemode="tozero")
    fig.update_xaxes(title_text="block", **index_ticks(idx))
    return fig


def _block_cutoffs(s: StructureRecord, structure: str) -> list[float]:
    """A uniform run's own cut-off in each block, on its distribution's scale: the highest score it removed."""
    out = []
    for b in (b for b in s.blocks if not b.removed):
        if structure == "MLP channel" and b.channel_scores is not None and b.channel_scores.cutoff is not None:
            out.append(b.channel_scores.cutoff)
        elif structure == "KV group" and b.group_scores and b.kv_heads:
            per = b.heads // b.kv_heads
            kept = {h // per for h in b.heads_kept}
            removed = [score for g, score in enumerate(b.group_scores) if g not in kept]
            if removed:
                out.append(math.log10(max(max(removed), 1e-30)))
    return out


def _histogram(fig: go.Figure, h: ScoreHistogram, col: int, s: StructureRecord) -> str:
    """One kind of structure's kept and removed counts, stacked, with its cut-off; returns what the cut-off is."""
    edges = np.asarray(h.edges, dtype=float)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    for counts, name, colour in ((h.kept, "kept", BLUE), (h.removed, "removed", VERMILLION)):
        fig.add_trace(go.Bar(x=centres, y=list(counts), width=widths, name=name, legendgroup=name, showlegend=col == 1,
                             marker={"color": colour, "line": {"width": 0}},
                             hovertemplate=f"{h.structure}s {name}: %{{y:,}}<br>{h.scale} ≈ %{{x:.3g}}<extra></extra>"),
                      row=1, col=col)
    top = max((k + r for k, r in zip(h.kept, h.removed)), default=1) * 1.05
    if h.cutoff is not None:
        fig.add_trace(go.Scatter(x=[h.cutoff] * 2, y=[0, top], mode="lines", name="cut-off", legendgroup="cut-off",
                                 showlegend=col == 1, line={"color": "black", "dash": "dash", "width": 1.5},
                                 hovertemplate=f"cut-off: {h.scale} {h.cutoff:.3g}<extra></extra>"), row=1, col=col)
        return f"{h.structure}s cut at {significant(h.cutoff)}"
    own = _block_cutoffs(s, h.structure)
    if own:  # uniform: each block cut at its own score; the span of those cut-offs, shaded
        fig.add_vrect(x0=min(own), x1=max(own), fillcolor=GREY, opacity=0.25, line_width=0, layer="below",
                      row=1, col=col)
        return "each block cut at its own score (grey: the span of the blocks' cut-offs)"
    return ""


def structure_scores(s: StructureRecord) -> go.Figure:
    """The score distribution of each kind of structure (KV groups, MLP channels, or blocks) over every block, split
    into kept and removed, with the cut-off (global allocation, depth) or the band of each block's own (uniform)."""
    hists = list(s.distributions)
    title = "Score distributions: removed below the cut-off"
    if not hists:
        fig = go.Figure()
        layout(fig, title, _run_text(s))
        return note(fig, "no score distributions recorded")
    fig = make_subplots(rows=1, cols=len(hists), subplot_titles=[f"{h.structure}s" for h in hists],
                        horizontal_spacing=0.1)
    cuts = [_histogram(fig, h, col, s) for col, h in enumerate(hists, start=1)]
    for col, h in enumerate(hists, start=1):
        fig.update_xaxes(title_text=h.scale, row=1, col=col)
    fig.update_yaxes(title_text="count", row=1, col=1)
    layout(fig, title, "; ".join([_run_text(s), *dict.fromkeys(filter(None, cuts))]), barmode="stack", bargap=0)
    return fig
