"""Paper tables from run records: the perplexity comparison, a sweep's grid, zero-shot accuracies.

Torch-free. Each table is a `Table`: its DataFrame, which way is better in each column, and a suggested
caption that states the protocol as the records give it (never a hard-coded one). Writers: LaTeX through
pandas' Styler.to_latex (booktabs rules, the best value of each column in bold, as papers do), Markdown
through DataFrame.to_markdown, CSV.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .figures.zeroshot import zeroshot_mean, zeroshot_results, zeroshot_tasks
from ..config import ZeroShotConfig
from ..store.run_record import RunRecord
from ..store.zeroshot_record import ZeroShotScores

LOWER, HIGHER = "lower", "higher"
DENSE = "dense"
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "×": r"$\times$", "±": r"$\pm$", "\u00a0": "~"}


@dataclass(frozen=True)
class Table:
    """A paper table: `frame` (rows × columns of numbers, NaN where no run measured it), `better` per column
    (LOWER or HIGHER), the suggested `caption` and the LaTeX `label`; `decimals` for the writers."""

    frame: pd.DataFrame
    better: dict[str, str]
    caption: str
    label: str
    decimals: int = 2

    def ranked_rows(self) -> list[Any]:
        """The rows that compete for the best value: every row but the dense model's (the reference)."""
        return [i for i in self.frame.index if (i[0] if isinstance(i, tuple) else i) != DENSE]

    def best(self) -> dict[str, Any]:
        """Each column's best value among `ranked_rows` (NaN ignored); columns without a value are left out."""
        out = {}
        for col, way in self.better.items():
            values = pd.to_numeric(self.frame.loc[self.ranked_rows(), col], errors="coerce").dropna()
            if len(values):
                out[col] = values.min() if way == LOWER else values.max()
        return out


def _joined(runs: Sequence[RunRecord], value: Callable[[RunRecord], Any]) -> str:
    """The runs' values of one setting, each once, in order: '16', or '16/64' when they differ."""
    seen: list[str] = []
    for run in runs:
        text = str(value(run))
        if text not in seen:
            seen.append(text)
    return "/".join(seen)


def _calib_source(run: RunRecord) -> str:
    return run.calibration.text_name(run.request.prune.calib)


def _model_text(run: RunRecord) -> str:
    return (run.model.label or run.request.model).split(" (")[0]


def calibration_protocol(runs: Sequence[RunRecord]) -> str:
    """'SmolLM2-135M-Instruct; calibration 16 × 256 tokens of austen:emma, seed 0' from the records."""
    return (f"{_joined(runs, _model_text)}; calibration {_joined(runs, lambda r: r.request.prune.nsamples)} × "
            f"{_joined(runs, lambda r: r.request.prune.seqlen)} tokens of {_joined(runs, _calib_source)}, "
            f"seed {_joined(runs, lambda r: r.request.prune.seed)}")


def eval_protocol(runs: Sequence[RunRecord]) -> str:
    """'evaluated on austen:prideprejudice, 10 windows × 512 tokens = 5,120 tokens' from the records."""
    evaluated = [r for r in runs if r.eval is not None]
    if not evaluated:
        return "not evaluated"
    return "evaluated on " + _joined(evaluated, lambda r: r.eval.describe())


def _column(run: RunRecord) -> str:
    """The column a run's number goes in: its sparsity ('50%') or N:M pattern ('2:4')."""
    prune = run.request.prune
    return prune.pattern if prune.nm is not None else f"{prune.target_sparsity:.0%}"


def _column_order(run: RunRecord) -> tuple:
    prune = run.request.prune
    return (prune.nm is not None, prune.target_sparsity, prune.pattern)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _grid(runs: Sequence[RunRecord], row: Callable[[RunRecord], Any]) -> pd.DataFrame:
    """Perplexity of each run at (row(run), its sparsity column), the dense model's as the first row. The first
    run of a cell wins (a repeated run measures the same number)."""
    done = [r for r in runs if _finite(r.ppl) is not None]
    columns = [_column(r) for r in sorted(done, key=_column_order)]
    columns = list(dict.fromkeys(columns))
    cells: dict[Any, dict[str, float]] = {}
    dense = next((_finite(r.ppl_dense) for r in done if _finite(r.ppl_dense) is not None), None)
    if dense is not None:
        cells[DENSE] = {c: dense for c in columns}
    for run in done:
        cells.setdefault(row(run), {}).setdefault(_column(run), run.ppl)
    frame = pd.DataFrame.from_dict(cells, orient="index").reindex(columns=columns)
    return frame.astype(float)


def perplexity_table(runs: Sequence[RunRecord]) -> Table:
    """Rows: the dense model and each method; columns: the sparsities or N:M patterns; values: perplexity."""
    frame = _grid(runs, lambda r: r.request.prune.method_name)
    frame.index.name = "method"
    done = [r for r in runs if _finite(r.ppl) is not None] or list(runs)
    caption = (f"Perplexity (lower is better) of {calibration_protocol(done)}; {eval_protocol(done)}.")
    return Table(frame, {c: LOWER for c in frame.columns}, caption, "tab:perplexity")


def sweep_table(runs: Sequence[RunRecord], sweep_name: str = "") -> Table:
    """A sweep's grid: rows the methods (OWL and protected channels are methods of their own, as runs are
    labelled) and, when the sweep varies it, the number of calibration samples; columns the sparsities and
    N:M patterns; values perplexity."""
    nsamples_vary = len({r.request.prune.nsamples for r in runs}) > 1
    if nsamples_vary:
        frame = _grid(runs, lambda r: (r.request.prune.method_name, r.request.prune.nsamples))
        frame.index = pd.MultiIndex.from_tuples([i if isinstance(i, tuple) else (i, "") for i in frame.index],
                                                names=["method", "nsamples"])
    else:
        frame = _grid(runs, lambda r: r.request.prune.method_name)
        frame.index.name = "method"
    done = [r for r in runs if _finite(r.ppl) is not None] or list(runs)
    named = f" of sweep {sweep_name}" if sweep_name else ""
    caption = f"Perplexity (lower is better){named}: {calibration_protocol(done)}; {eval_protocol(done)}."
    return Table(frame, {c: LOWER for c in frame.columns}, caption, "tab:sweep")


def _zeroshot_protocol(runs: Sequence[RunRecord]) -> str:
    def config(r: RunRecord) -> ZeroShotConfig:
        return r.zeroshot.config if r.zeroshot is not None else ZeroShotConfig()

    limit = _joined(runs, lambda r: config(r).limit or "all")
    return (f"lm-eval {_joined(runs, lambda r: r.zeroshot.harness if r.zeroshot is not None else None)}, "
            f"{_joined(runs, lambda r: config(r).num_fewshot)}-shot, {limit} questions per task")


def zeroshot_table(runs: Sequence[RunRecord], metric: str = "acc") -> Table:
    """The Wanda paper's table 2 layout: rows the dense model and each run, columns the tasks and their mean;
    values accuracy in percent (higher is better)."""
    scored = [r for r in runs if r.zeroshot]
    tasks = zeroshot_tasks(scored, metric)
    rows: dict[str, dict[str, float | None]] = {}

    def scores(results: ZeroShotScores) -> dict[str, float | None]:
        row = {t: _finite(results.value(t, metric)) for t in tasks}
        if len(tasks) > 1:
            row["mean"] = zeroshot_mean(results, tasks, metric)
        return {k: (v * 100 if v is not None else None) for k, v in row.items()}

    if scored:
        rows[DENSE] = scores(zeroshot_results(scored[0], "dense"))
    for run in scored:
        label = run.label() if run.label() not in rows else f"{run.label()} ({run.name})"
        rows[label] = scores(zeroshot_results(run, "pruned"))
    frame = pd.DataFrame.from_dict(rows, orient="index", dtype=float)
    frame.index.name = "method"
    caption = (f"Zero-shot {metric} in % (higher is better) of {calibration_protocol(scored or runs)}; "
               f"{_zeroshot_protocol(scored or runs)}.")
    return Table(frame, {c: HIGHER for c in frame.columns}, caption, "tab:zeroshot")


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped, for a caption (table cells go through Styler's escape)."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def to_latex(table: Table) -> str:
    """A booktabs table (`\\toprule`, `\\midrule`, `\\bottomrule`) with the best value of each column in bold,
    the caption and the label. Needs `\\usepackage{booktabs}` only."""
    styler = table.frame.style.format(precision=table.decimals, na_rep="--", escape="latex")
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1).hide(names=True)
    rows = table.ranked_rows()
    for col, way in table.better.items():
        highlight = styler.highlight_min if way == LOWER else styler.highlight_max
        styler = highlight(subset=(rows, [col]), props="textbf:--rwrap;")
    n_index = table.frame.index.nlevels
    return styler.to_latex(hrules=True, caption=latex_escape(table.caption), label=table.label,
                           position="htbp", position_float="centering",
                           column_format="l" * n_index + "r" * len(table.frame.columns),
                           sparse_index=False)  # every row names its method: no multirow package needed


def _marked(table: Table) -> pd.DataFrame:
    """The frame as text, each column's best value (among the ranked rows) in Markdown bold."""
    best, ranked = table.best(), set(table.ranked_rows())
    frame = table.frame

    def text(row: Any, col: str) -> str:
        v = frame.at[row, col]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        shown = f"{v:.{table.decimals}f}"
        return f"**{shown}**" if row in ranked and col in best and v == best[col] else shown

    return pd.DataFrame([[text(row, col) for col in frame.columns] for row in frame.index],
                        index=frame.index, columns=frame.columns)


def to_markdown(table: Table) -> str:
    """A Markdown (pipe) table, best values in bold, the caption below it."""
    return f"{_marked(table).to_markdown(colalign=('left',) + ('right',) * len(table.frame.columns))}\n\n{table.caption}\n"


def to_csv(table: Table) -> str:
    """The numbers as CSV, full precision."""
    return table.frame.to_csv()
