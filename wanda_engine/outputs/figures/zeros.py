"""Where the zeros fall: for one matrix type, the pruned share of every output row and of every input channel,
block by block, for runs side by side on one colour scale.

A uniform run's blocks × matrices heatmap is one flat colour (every cell at the target); here the difference
between methods shows: a per-matrix comparison group (magnitude's reference default) prunes some rows far more
than others, and Wanda prunes the weights of its loudest input channels far less than the rest.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...store.matrix_records import MatrixRecord, top1pct_count
from .style import layout, note
from .ticks import index_ticks

SIDES = (("row_pruned", "output row", 1), ("channel_pruned", "input channel", 0))  # (array, axis name, dim counted over)
MIN_SPREAD = 0.05  # the colour scale spans at least ±5 points around the overall sparsity


def _pruned_share(records: Sequence[MatrixRecord], kind: str, over: int) -> np.ndarray | None:
    """[block, index] share pruned: the counts over the matrix side they were counted along; None if not recorded."""
    if not records or any(kind not in r.arrays for r in records):
        return None
    return np.stack([np.asarray(r.arrays[kind], dtype=float) / r.shape[over] for r in records])


def _loudest(records: Sequence[MatrixRecord], norms_from: Sequence[MatrixRecord]) -> list[np.ndarray] | None:
    """Each block's top-1% input channels by activation norm: the run's own norms, else another run's (a run
    pruned from the weights alone records none; the dense model's first block reads the same input)."""
    by_key = {r.key: r for r in norms_from}
    out = []
    for r in records:
        norms = r.arrays.get("channel_norms")
        if norms is None and r.key in by_key:
            norms = by_key[r.key].arrays.get("channel_norms")
        if norms is None:
            return None
        out.append(np.argsort(-np.asarray(norms, dtype=float), kind="stable")[:top1pct_count(len(norms))])
    return out


def _summary(label: str, rows: np.ndarray, channels: np.ndarray, loudest: list[np.ndarray] | None) -> str:
    text = f"{label}: rows {rows.min():.0%}–{rows.max():.0%} pruned (std {rows.std():.1%})"
    if loudest is not None:
        top = np.concatenate([channels[b, idx] for b, idx in enumerate(loudest)])
        text += f", its loudest 1% of input channels {top.mean():.0%}"
    return text


def zeros_where(runs: Sequence[tuple[str, Sequence[MatrixRecord]]], name: str) -> go.Figure:
    """For matrix type `name` (e.g. 'mlp.down_proj'), each run's pruned share per output row (top) and per input
    channel (bottom) in every block; `runs`: (label, the run's records), drawn left to right on one colour scale."""
    chosen = [(label, sorted((r for r in records if r.name == name), key=lambda r: r.block)) for label, records in runs]
    title = f"Where the zeros fall in {name}: per output row and per input channel"
    shares = {label: [_pruned_share(recs, kind, over) for kind, _, over in SIDES] for label, recs in chosen}
    missing = [label for label, (rows, _) in shares.items() if rows is None]
    if not chosen or missing:
        fig = layout(go.Figure(), title)
        return note(fig, f"{', '.join(missing) or 'no run'}: no per-row and per-channel counts recorded "
                         "(runs from before they were); prune it again to see them")
    everything = np.concatenate([s.ravel() for pair in shares.values() for s in pair])
    centre = float(np.mean([r.sparsity for _, recs in chosen for r in recs]))
    spread = max(MIN_SPREAD, float(np.abs(everything - centre).max()))
    fig = make_subplots(rows=2, cols=len(chosen), subplot_titles=[label for label, _ in chosen], vertical_spacing=0.1,
                        horizontal_spacing=0.08)
    other_records = [r for _, recs in chosen for r in recs]
    summaries = []
    for col, (label, recs) in enumerate(chosen, start=1):
        blocks = [r.block for r in recs]
        for row, ((_, side, _), z) in enumerate(zip(SIDES, shares[label]), start=1):
            fig.add_trace(go.Heatmap(
                z=z, x=np.arange(z.shape[1]), y=blocks, zmin=max(0.0, centre - spread), zmax=min(1.0, centre + spread),
                zmid=centre, colorscale="RdBu_r", showscale=col == 1 and row == 1, name=f"{label}: {side}s",
                colorbar={"title": {"text": "pruned", "side": "right"}, "tickformat": ".0%"},
                hovertemplate=f"{label}<br>block %{{y}}, {side} %{{x}}<br>%{{z:.1%}} pruned<extra></extra>"),
                row=row, col=col)
            # the top row's index runs along the same width as the channels below: only the bottom one numbered
            fig.update_xaxes(showgrid=False, showticklabels=row == len(SIDES), row=row, col=col)
            fig.update_yaxes(autorange="reversed", showgrid=False, title_text=f"{side}s<br>by block" if col == 1 else None,
                             row=row, col=col, **index_ticks(blocks))
        summaries.append(_summary(label, *shares[label], _loudest(recs, other_records)))
    layout(fig, title, "; ".join(summaries) + f". Colour centred on the overall {centre:.1%}")
    return fig
