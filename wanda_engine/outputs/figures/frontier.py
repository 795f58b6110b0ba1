"""The frontier: perplexity against the measured speed-up and against the parameters kept, every run of a model
on one figure, so that what each kind of pruning buys is seen side by side (issue 20).

Zeros stored in dense weights (unstructured and N:M masks) keep their non-zero parameters low and their perplexity
close to the dense model's, but measure ~1.0× on dense kernels; removing heads, MLP channels or blocks is the road
to a faster model. `frontier_points` reads the records once (the figure and `tables.frontier_table` both draw on
it): the parameters kept are the decoder blocks' (a structure remover's exact `removed_fraction`; a mask's
non-zero share, 1 − its zeros' share), the speed-ups the run's own measurement beside the dense model.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from ...core.names import text_title
from ...methods.table import Family
from ...store.run_record import RunRecord
from ...store.shrink_record import SpeedRecord
from .perplexity import _calib_text, _eval_label, _evaluated, _evaluated_alike, series_label
from .style import DENSE_STYLE, MethodStyle, finite, layout, method_style, note
from .ticks import log_ticks


@dataclass(frozen=True)
class FrontierPoint:
    """One run on the frontier."""

    run: str
    label: str  # the run's label: 'flap+bias 20%'
    series: str  # its line: the method and pattern, over ratios ('flap+bias', 'wanda 2:4')
    target: str  # what it asked: '20%' (a sparsity or a ratio), or its N:M pattern
    choice: str  # the method choice its look comes from
    family: Family
    kept: float  # of the decoder blocks' parameters (non-zero)
    ppl: float
    speed: SpeedRecord | None  # None: not measured, or measured unlike the frontier's first (left out of that panel)


@dataclass(frozen=True)
class Frontier:
    """The points of runs evaluated alike, the dense model's perplexity, and what was left out, said once."""

    points: tuple[FrontierPoint, ...]
    dense_ppl: float | None
    eval_key: tuple | None
    left_out: tuple[str, ...]  # sentences: runs not evaluated alike, speeds measured elsewhere or not at all
    speed_protocol: str  # how the speeds drawn were measured ('' when none was)


def kept_fraction(run: RunRecord) -> float | None:
    """The decoder blocks' parameters the run kept: a structure remover's exact share, a mask's non-zero share."""
    if run.structure is not None:
        return 1 - run.structure.removed_fraction
    return 1 - run.sparsity if finite(run.sparsity) is not None else None


def speed_protocol(speed: SpeedRecord) -> str:
    """'prefill of 1 × 512 tokens and 32 greedy tokens decoded after a 16-token prompt, on cpu (x86_64), 2 threads,
    float32, median of 5 rounds interleaved with the dense model'."""
    return (f"prefill of {speed.prefill_batch} × {speed.prefill_tokens} tokens and {speed.decode_tokens} greedy tokens "
            f"decoded after a {speed.prompt_tokens}-token prompt, on {speed.device}, {speed.threads} "
            f"thread{'s' * (speed.threads != 1)}, {speed.dtype}, median of {speed.repeats} "
            f"round{'s' * (speed.repeats != 1)} interleaved with the dense model")


def _measured_alike(speed: SpeedRecord) -> tuple:
    return speed.device, speed.threads, speed.dtype, speed.prefill_tokens, speed.decode_tokens


def frontier_points(runs: Sequence[RunRecord]) -> Frontier:
    """The frontier of `runs`: those evaluated like the first evaluated run; speeds only where measured like the
    first run that measured one (the same device, threads, dtype and lengths)."""
    if not _evaluated(runs):
        return Frontier((), None, None, ("no run was evaluated (perplexity off)",) if runs else (), "")
    key, same, differently = _evaluated_alike(runs)
    first = next((r.speed for r in same if r.speed is not None), None)
    points, unmeasured, elsewhere = [], [], []
    for run in same:
        prune = run.request.prune
        speed = run.speed if first is not None and run.speed is not None and \
            _measured_alike(run.speed) == _measured_alike(first) else None
        if run.speed is None:
            unmeasured.append(run.name)
        elif speed is None:
            elsewhere.append(run.name)
        target = prune.pattern if prune.nm is not None else f"{prune.target_sparsity:.0%}"
        points.append(FrontierPoint(run.name, run.label(), series_label(run), target, prune.choice,
                                    prune.method_entry.family, kept_fraction(run), finite(run.ppl), speed))
    left = ([f"{differently} run(s) evaluated differently left out"] if differently else []) + \
        ([f"no speed measured for {', '.join(unmeasured)}"] if unmeasured else []) + \
        ([f"speed measured otherwise (device, threads, dtype or lengths) left out for {', '.join(elsewhere)}"]
         if elsewhere else [])
    dense = next((finite(r.ppl_dense) for r in same if finite(r.ppl_dense) is not None), None)
    return Frontier(tuple(points), dense, key, tuple(left), speed_protocol(first) if first else "")


def _series(points: Sequence[FrontierPoint]) -> dict[str, list[FrontierPoint]]:
    """The points of each line, from the most parameters kept to the fewest (a sweep's ratios in order)."""
    out: dict[str, list[FrontierPoint]] = {}
    for p in sorted(points, key=lambda p: (-p.kept, p.run)):
        out.setdefault(p.series, []).append(p)
    return out


AXES = {  # what a frontier's x axis measures: its title, its axis words and each point's value
    "prefill": ("Perplexity against measured prefill speed-up", "prefill speed-up (× the dense model's tokens/s)"),
    "decode": ("Perplexity against measured decode speed-up", "decode speed-up (× the dense model's tokens/s)"),
    "params": ("Perplexity against decoder-block parameters kept", "decoder-block parameters kept (non-zero)"),
}


def _x(p: FrontierPoint, axis: str) -> float | None:
    if axis == "params":
        return p.kept
    if p.speed is None:
        return None
    return p.speed.prefill_speedup if axis == "prefill" else p.speed.decode_speedup


def _hover(p: FrontierPoint) -> str:
    speed = (f"<br>prefill {p.speed.prefill_speedup:.2f}×, decode {p.speed.decode_speedup:.2f}× "
             f"(ideal {p.speed.ideal_speedup:.2f}×)" if p.speed else "<br>speed not measured")
    return f"{p.label} (run {p.run})<br>{p.family.label}<br>block parameters kept {p.kept:.1%}{speed}"


def frontier_gap(runs: Sequence[RunRecord], axis: str) -> str:
    """Why the frontier along `axis` has nothing to draw for `runs`, in one sentence; '' when it has. Along the
    parameters kept, masks alone are perplexity versus sparsity: the frontier needs a run that removed structures or
    measured its speed."""
    evaluated = [r for r in runs if finite(r.ppl) is not None]
    if not evaluated:
        return "no run shown was evaluated (perplexity off)"
    if axis != "params":
        return "" if any(r.speed for r in evaluated) else "no run shown measured its speed"
    return "" if any(r.structure or r.speed for r in evaluated) else (
        "no run shown removed structures or measured its speed (perplexity versus sparsity draws masks alone)")


def frontier(runs: Sequence[RunRecord], axis: str = "prefill") -> go.Figure:
    """Perplexity (log) against `axis`: the measured 'prefill' or 'decode' speed-up, or the decoder blocks'
    parameters kept ('params'). One line per method over its ratios or sparsities, in the table of methods' look
    (open markers: structures removed); the dense model as a grey diamond at 1×, 100%."""
    if axis not in AXES:
        raise ValueError(f"a frontier's axis is one of {', '.join(AXES)}, not {axis!r}")
    fig = go.Figure()
    found = frontier_points(runs)
    title, x_title = AXES[axis]
    title += f" on {text_title(found.eval_key[0])}" if found.eval_key else ""
    drawn = [p for p in found.points if _x(p, axis) is not None]
    gap = frontier_gap(runs, axis)
    if gap or not drawn:
        layout(fig, title, showlegend=False)
        fig.update_xaxes(title_text=x_title)
        return note(fig, gap or "no run evaluated like the first measured its speed")
    looks: dict[str, MethodStyle] = {}
    for name, line in _series(drawn).items():
        look = method_style(name, looks, line[0].choice)
        fig.add_trace(go.Scatter(
            x=[_x(p, axis) for p in line], y=[p.ppl for p in line], name=name, mode="lines+markers",
            line={"color": look.colour, "dash": look.dash, "width": 2}, marker={"size": 9, "symbol": look.symbol},
            customdata=[_hover(p) for p in line], hovertemplate="%{customdata}<br>perplexity %{y:.3f}<extra></extra>"))
    if found.dense_ppl is not None:
        fig.add_trace(go.Scatter(x=[1.0], y=[found.dense_ppl], name=f"dense ({found.dense_ppl:.2f})", mode="markers",
                                 marker={"color": DENSE_STYLE.colour, "size": 11, "symbol": "diamond"},
                                 hovertemplate="dense model<br>perplexity %{y:.3f}<extra></extra>"))
    same = [r for r in runs if r.name in {p.run for p in drawn}]
    how = (f"; speed-up: {found.speed_protocol}" if axis != "params" else
           "; a mask's zeros count as removed, though stored")
    left = [s for s in found.left_out if axis != "params" or not s.startswith(("no speed", "speed measured"))]
    sub = (_eval_label(found.eval_key) + _calib_text(same) + how + "; open markers: structures removed, filled: "
           "zeros in dense weights" + "".join(f"; {s}" for s in left))
    layout(fig, title, sub)
    ys = [p.ppl for p in drawn] + ([found.dense_ppl] if found.dense_ppl else [])
    fig.update_yaxes(title_text="perplexity (log scale)", type="log", **log_ticks(ys))
    fig.update_xaxes(title_text=x_title, **({"tickformat": ".0%"} if axis == "params" else {}))
    return fig
