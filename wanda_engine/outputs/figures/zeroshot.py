"""Zero-shot accuracy figures (lm-eval): the table of dense and pruned scores, and grouped bars per task."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import plotly.graph_objects as go

from ...store.run_record import RunRecord
from ...store.zeroshot_record import ZeroShotScores
from .style import DARK_GREY, DENSE_STYLE, LIGHT_GREY, MethodStyle, finite, layout, method_style, note

if TYPE_CHECKING:
    import pandas as pd

ZEROSHOT_METRICS = {"acc": "accuracy", "acc_norm": "length-normalised accuracy"}


def zeroshot_results(run: RunRecord, which: Literal["dense", "pruned"]) -> ZeroShotScores:
    """The dense or the pruned model's scores (none for a run without zero-shot results)."""
    if run.zeroshot is None:
        return ZeroShotScores()
    return run.zeroshot.dense if which == "dense" else run.zeroshot.pruned


def zeroshot_tasks(runs: Sequence[RunRecord], metric: str) -> list[str]:
    tasks: list[str] = []
    for run in runs:
        for task, r in zeroshot_results(run, "pruned").results.items():
            if finite(r.value(metric)) is not None and task not in tasks:
                tasks.append(task)
    return tasks


def zeroshot_mean(results: ZeroShotScores, tasks: Sequence[str], metric: str) -> float | None:
    """The mean over `tasks` (the paper's summary column), only if every task has the metric."""
    values = [finite(results.value(t, metric)) for t in tasks]
    return sum(values) / len(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def _zs_mean_stderr(results: ZeroShotScores, tasks: Sequence[str], metric: str) -> float | None:
    """Standard error of the mean over tasks, the tasks' samples being independent: sqrt(Σ se²) / k."""
    ses = [finite(results.stderr(t, metric)) for t in tasks]
    return math.sqrt(sum(e * e for e in ses)) / len(ses) if ses and all(e is not None for e in ses) else None  # type: ignore[misc]


def zeroshot_table(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run, task and metric: dense and pruned scores and Δ = pruned − dense (fractions in [0, 1]).

    With several tasks, a 'mean' row per run and metric averages them, as the paper's last column does.
    """
    import pandas as pd  # imported here: pandas costs ~1 s and only tables need it

    cols = ["run", "method", "task", "metric", "dense", "pruned", "delta", "pruned_stderr", "n"]
    rows: list[dict[str, Any]] = []
    for run in runs:
        pruned, dense = zeroshot_results(run, "pruned"), zeroshot_results(run, "dense")
        for metric in ZEROSHOT_METRICS:
            tasks = [t for t, r in pruned.results.items() if finite(r.value(metric)) is not None]
            for task in tasks:
                r = pruned.results[task]
                p, dv = finite(r.value(metric)), finite(dense.value(task, metric))
                rows.append({"run": run.name, "method": run.label(), "task": task, "metric": metric, "dense": dv,
                             "pruned": p, "delta": p - dv if dv is not None else None,
                             "pruned_stderr": finite(r.stderr(metric)), "n": r.n})
            if len(tasks) > 1:
                p, dv = zeroshot_mean(pruned, tasks, metric), zeroshot_mean(dense, tasks, metric)
                rows.append({"run": run.name, "method": run.label(), "task": "mean", "metric": metric, "dense": dv,
                             "pruned": p, "delta": p - dv if p is not None and dv is not None else None,
                             "pruned_stderr": _zs_mean_stderr(pruned, tasks, metric), "n": None})
    return pd.DataFrame(rows, columns=cols)


def _zs_caption(runs: Sequence[RunRecord], tasks: Sequence[str]) -> str:
    """'lm-eval 0.4.13, 0-shot; boolq n=3270, rte n=277; all questions' — what the bars were measured on."""
    scored = [run.zeroshot for run in runs if run.zeroshot is not None]
    harness = sorted({str(zs.harness) for zs in scored})
    shots = sorted({zs.config.num_fewshot for zs in scored})
    limits = sorted({str(zs.config.limit) for zs in scored})
    ns: dict[str, list] = {}
    for run in runs:
        for t, r in zeroshot_results(run, "pruned").results.items():
            if t in tasks and r.n not in ns.setdefault(t, []):
                ns[t].append(r.n)
    same_n = {n for t in tasks for n in ns.get(t, [])}
    if len(same_n) == 1 and all(len(ns.get(t, [])) == 1 for t in tasks):
        n_text = f"{', '.join(tasks)}: n={same_n.pop()} each"
    else:
        n_text = ", ".join(f"{t} n={'/'.join(str(n) for n in ns.get(t, []))}" for t in tasks)
    limit_text = "all questions" if limits == ["None"] else "at most " + "/".join(limits).replace("None", "all") + " per task"
    return (f"lm-eval {'/'.join(harness)}, {'/'.join(str(s) for s in shots)}-shot; {n_text}; {limit_text}; "
            "higher is better; error bars ±1 standard error")


def zeroshot_bars(runs: Sequence[RunRecord], metric: str = "acc") -> go.Figure:
    """Grouped bars per task: the dense model and each run's pruned model (and their mean over tasks)."""
    fig = go.Figure()
    what = ZEROSHOT_METRICS.get(metric, metric)
    usable = [run for run in runs
              if any(finite(r.value(metric)) is not None for r in zeroshot_results(run, "pruned").results.values())]
    if not usable:
        layout(fig, f"Zero-shot {what}")
        fig.update_yaxes(title_text=metric, range=[0, 1], tickformat=".0%")
        return note(fig, "no runs with zero-shot results" + (f" for {metric}" if runs else ""))
    tasks = zeroshot_tasks(usable, metric)
    x = tasks + (["mean"] if len(tasks) > 1 else [])

    def bar(name: str, results: ZeroShotScores, look: MethodStyle, hover: str) -> None:
        ys = [finite(results.value(t, metric)) for t in tasks]
        errs = [finite(results.stderr(t, metric)) for t in tasks]
        if len(tasks) > 1:
            ys.append(zeroshot_mean(results, tasks, metric))
            errs.append(_zs_mean_stderr(results, tasks, metric))
        fig.add_trace(go.Bar(
            x=x, y=ys, name=name, marker={"color": look.colour, "pattern": {"shape": look.pattern, "fgcolor": "white"}},
            error_y={"type": "data", "array": errs, "visible": True,
                     "color": DARK_GREY, "thickness": 1},
            text=[f"{y:.1%}" if y is not None else "" for y in ys], textposition="outside", cliponaxis=False,
            hovertemplate=f"{name}<br>%{{x}}<br>{metric} %{{y:.2%}}<br>{hover}<extra></extra>"))

    # one dense series per model and task settings: runs of different models are not one dense model
    dense_keys: list[tuple] = []
    for run in usable:
        key = (run.model.source or run.request.model, run.zeroshot.config)
        if key not in dense_keys and zeroshot_results(run, "dense").results:
            dense_keys.append(key)
            label = "dense" if not dense_keys[1:] else f"dense ({run.model.label or key[0]})"
            dense = DENSE_STYLE if len(dense_keys) == 1 else replace(DENSE_STYLE, colour=LIGHT_GREY)
            bar(label, zeroshot_results(run, "dense"), dense, "unpruned model")
    looks: dict[str, MethodStyle] = {}
    labels: list[str] = []
    for run in usable:
        lab = run.label()
        if lab in labels:
            lab = f"{lab} ({run.name})"
        labels.append(lab)
        bar(lab, zeroshot_results(run, "pruned"), method_style(lab, looks, run.request.prune.choice), f"run {run.name}")
    layout(fig, f"Zero-shot {what} of the dense and pruned models", _zs_caption(usable, tasks),
            barmode="group", uniformtext={"minsize": 8, "mode": "hide"})
    fig.update_yaxes(title_text=f"{metric} ({what})", range=[0, 1.08], tickformat=".0%")
    fig.update_xaxes(title_text="task")
    return fig

