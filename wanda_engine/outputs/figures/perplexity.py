"""Perplexity figures: bars of the dense and pruned models per evaluation setting, and the sweep lines
(perplexity versus sparsity, versus the number of calibration samples)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import plotly.graph_objects as go

from ...core.names import text_title
from ...methods import table
from ...store.run_record import RunRecord
from .style import DENSE_STYLE, MethodStyle, finite, layout, method_colour, method_style, note
from .ticks import log_ticks


def _eval_key(run: RunRecord) -> tuple | None:
    ev = run.eval
    return (ev.dataset, ev.seqlen, ev.windows, ev.tokens) if ev else None


def _eval_label(key: tuple | None, short: bool = False) -> str:
    if key is None:
        return "no evaluation"
    dataset, seqlen, windows, tokens = key
    dataset = text_title(dataset)
    if short:
        return f"{dataset}, {windows}×{seqlen}"
    return f"{dataset}, {windows} windows × {seqlen} tokens = {tokens:,} tokens" if tokens else f"{dataset}, seqlen {seqlen}"


def series_label(run: RunRecord) -> str:
    """One line (and one colour) per method and pattern: 'wanda', 'owl-wanda', 'sparsegpt 2:4'."""
    prune = run.request.prune
    return prune.method_name if prune.nm is None else f"{prune.method_name} {prune.pattern}"


def _calib_text(runs: Sequence[RunRecord]) -> str:
    """'; calibration 16 × 256 tokens of Emma (Austen), seed 0' — values that differ between runs joined by '/'."""
    def joined(value: Callable[[RunRecord], Any]) -> str:
        return "/".join(str(v) for v in sorted({value(run) for run in runs}))

    def source(run: RunRecord) -> str:
        return run.calibration.text_name(run.request.prune.calib)

    return (f"; calibration {joined(lambda r: r.request.prune.nsamples)} × {joined(lambda r: r.request.prune.seqlen)} "
            f"tokens of {joined(source)}, seed\u00a0{joined(lambda r: r.request.prune.seed)}")


def _evaluated(runs: Sequence[RunRecord]) -> list[RunRecord]:
    return [run for run in runs if finite(run.ppl) is not None]


def _dense(runs: Sequence[RunRecord]) -> float | None:
    """The dense model's perplexity, from the first of `runs` that measured it."""
    return next((finite(run.ppl_dense) for run in runs if finite(run.ppl_dense) is not None), None)


def _bar_label(run: RunRecord, taken: list[str]) -> str:
    """The run's label, told apart from those already `taken` by run name, then by number."""
    label = run.label()
    if label in taken:
        label = f"{label} ({run.name})"
    base, n = label, 1
    while label in taken:
        n += 1
        label = f"{base} #{n}"
    return label


def perplexity_bars(runs: Sequence[RunRecord], *, log_y: bool = False) -> go.Figure:
    """One bar per run plus the dense model per evaluation setting; bars grouped by evaluation when they differ."""
    fig = go.Figure()
    usable = _evaluated(runs)
    groups: dict[tuple | None, list[RunRecord]] = {}
    for run in usable:
        groups.setdefault(_eval_key(run), []).append(run)
    multi = len(groups) > 1
    colours: dict[str, MethodStyle] = {}
    for key, members in groups.items():
        labels, values, hover, bar_colours = [], [], [], []
        dense = _dense(members)
        if dense is not None:
            labels.append("dense")
            values.append(dense)
            hover.append("unpruned model")
            bar_colours.append(DENSE_STYLE.colour)
        for run in members:
            labels.append(_bar_label(run, labels))
            values.append(finite(run.ppl))
            sp = run.sparsity
            hover.append(f"run {run.name}" + (f"<br>achieved sparsity {sp:.2%}" if sp is not None else ""))
            bar_colours.append(method_colour(series_label(run), colours, run.request.prune.choice))
        x: Any = labels if not multi else [[_eval_label(key, short=True)] * len(labels), labels]
        fig.add_trace(go.Bar(
            x=x, y=values, name=_eval_label(key), marker={"color": bar_colours}, customdata=hover,
            text=[f"{v:.2f}" for v in values], textposition="outside", cliponaxis=False,
            hovertemplate="%{x}<br>perplexity %{y:.3f}<br>%{customdata}<extra>" + _eval_label(key, True) + "</extra>"))
    if not groups:
        layout(fig, "Perplexity")
        return note(fig, "no evaluated runs")
    if multi:
        title = "Perplexity of the dense and pruned models, grouped by evaluation setting"
        sub = "; ".join(_eval_label(k) for k in groups)
    else:
        key = next(iter(groups))
        title = f"Perplexity on {text_title(key[0])}" if key else "Perplexity"
        sub = _eval_label(key) + ("; lower is better" if key else "")
    if len(usable) < len(runs):
        sub += f"; {len(runs) - len(usable)} run(s) without perplexity left out"
    layout(fig, title, sub, showlegend=False, barmode="group", uniformtext={"minsize": 9, "mode": "hide"})
    if log_y:
        fig.update_yaxes(title_text="perplexity (log scale)", type="log",
                         **log_ticks([y for tr in fig.data for y in (tr.y or ())]))
    else:
        fig.update_yaxes(title_text="perplexity", rangemode="tozero")
    fig.update_xaxes(title_text="model")
    return fig


Point = tuple[float, float, str]  # (x, perplexity, run name)


def _lines(fig: go.Figure, series: dict[str, list[Point]], choices: dict[str, str], x_hover: str,
           dense: float | None, dense_span: tuple[float, float]) -> None:
    """One line per series (drawn in the look of its method choice), sorted along x, and the dense model as a
    dashed line across `dense_span`."""
    looks: dict[str, MethodStyle] = {}
    for label, pts in series.items():
        pts.sort()
        look = method_style(label, looks, choices[label])
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[p[1] for p in pts], customdata=[p[2] for p in pts], name=label,
            mode="lines+markers", line={"color": look.colour, "dash": look.dash, "width": 2},
            marker={"size": 8, "symbol": look.symbol},
            hovertemplate=f"{label}<br>{x_hover}<br>perplexity %{{y:.3f}}<br>run %{{customdata}}<extra></extra>"))
    if dense is not None:
        fig.add_trace(go.Scatter(x=list(dense_span), y=[dense, dense], mode="lines", name=f"dense ({dense:.2f})",
                                 line={"color": DENSE_STYLE.colour, "dash": DENSE_STYLE.dash, "width": 1.5},
                                 hovertemplate=f"dense model<br>perplexity {dense:.3f}<extra></extra>"))


def _evaluated_alike(runs: Sequence[RunRecord]) -> tuple[tuple | None, list[RunRecord], int]:
    """The first evaluated run's evaluation setting, the evaluated runs that share it, and how many
    evaluated runs were left out for being evaluated differently."""
    usable = _evaluated(runs)
    key = _eval_key(usable[0])
    same = [run for run in usable if _eval_key(run) == key]
    return key, same, len(usable) - len(same)


def _left_out(n: int) -> str:
    return f"; {n} run(s) evaluated differently left out" if n else ""


def removed_structures(run: RunRecord) -> bool:
    """Whether `run` removed heads, channels or blocks: its ratio is not a sparsity (the frontier draws it)."""
    return run.request.prune.structure is not None


def perplexity_vs_sparsity(runs: Sequence[RunRecord]) -> go.Figure:
    """Perplexity over target sparsity, one line per method; only runs evaluated like the first run, and only masks:
    a structure remover's ratio is a share of parameters removed, drawn on the frontier."""
    fig = go.Figure()
    removers = sum(removed_structures(r) for r in runs)
    runs = [r for r in runs if not removed_structures(r)]
    if not _evaluated(runs):
        layout(fig, "Perplexity versus sparsity")
        fig.update_xaxes(title_text="target sparsity")
        fig.update_yaxes(title_text="perplexity", type="log")
        return note(fig, "no evaluated run zeroed weights (structure removers are drawn on the frontier)" if removers
                    else "no evaluated runs")
    key, same, left_out = _evaluated_alike(runs)
    several_n = len({run.request.prune.nsamples for run in same}) > 1  # one line per calibration size
    series: dict[str, list[Point]] = {}
    choices: dict[str, str] = {}
    for run in same:
        prune = run.request.prune
        label = series_label(run) + (f" (n={prune.nsamples})" if several_n else "")
        series.setdefault(label, []).append((prune.target_sparsity, finite(run.ppl), run.name))
        choices[label] = prune.choice
    xs = [p[0] for pts in series.values() for p in pts]
    _lines(fig, series, choices, "sparsity %{x:.0%}", _dense(same), (min(xs + [0.0]), max(xs + [0.0])))
    sub = _eval_label(key) + _calib_text(same) + _left_out(left_out) + (
        f"; {removers} structure-removal run{'s' * (removers != 1)} on the frontier instead" if removers else "")
    layout(fig, f"Perplexity versus sparsity on {text_title(key[0])}" if key else "Perplexity versus sparsity", sub)
    fig.update_xaxes(title_text="target sparsity", tickformat=".0%")
    fig.update_yaxes(title_text="perplexity (log scale)", type="log",
                     **log_ticks([y for tr in fig.data for y in (tr.y or ())]))
    return fig


def perplexity_vs_nsamples(runs: Sequence[RunRecord]) -> go.Figure:
    """Perplexity over the number of calibration samples (log x), one line per method and sparsity, dense
    as a reference line; only runs evaluated like the first run. The Wanda paper's robustness figure."""
    fig = go.Figure()
    if not _evaluated(runs):
        layout(fig, "Perplexity versus calibration samples")
        fig.update_xaxes(title_text="calibration samples", type="log")
        fig.update_yaxes(title_text="perplexity", type="log")
        return note(fig, "no evaluated runs")
    key, same, left_out = _evaluated_alike(runs)
    series: dict[str, list[Point]] = {}
    choices: dict[str, str] = {}
    for run in same:
        series.setdefault(run.label(), []).append((run.request.prune.nsamples, finite(run.ppl), run.name))
        choices[run.label()] = run.request.prune.choice
    xs = sorted({p[0] for pts in series.values() for p in pts})
    _lines(fig, series, choices, "%{x} calibration samples", _dense(same), (xs[0], xs[-1]))
    sub = _eval_label(key) + _calib_text(same)
    for method in dict.fromkeys(run.request.prune.method for run in same):
        if not table.get(method).needs_activations:
            sub += f"; {method} uses no calibration data"
    sub += _left_out(left_out)
    layout(fig, f"Perplexity versus number of calibration samples on {text_title(key[0])}" if key
           else "Perplexity versus number of calibration samples", sub)
    fig.update_xaxes(title_text="calibration samples (log scale)", type="log", tickvals=xs, ticktext=[str(x) for x in xs])
    fig.update_yaxes(title_text="perplexity (log scale)", type="log",
                     **log_ticks([y for tr in fig.data for y in (tr.y or ())]))
    return fig
