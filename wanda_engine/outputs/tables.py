"""Paper tables from run records: the perplexity comparison, a sweep's grid, zero-shot accuracies, the frontier.

Torch-free. Each table is a `Table`: its DataFrame, which way is better in each column, the header words (the
row labels' title, a title over the value columns) and a suggested caption that states the protocol as the
records give it (never a hard-coded one): the model as a paper names it, the texts by title (core.names), and
which runs calibrated. Writers: LaTeX as a booktabs table that needs `\\usepackage{booktabs}` only (the best
value of each column in bold, as papers do), Markdown (pipe table), CSV (the numbers at full precision).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .figures.frontier import FrontierPoint, frontier_points
from .figures.zeroshot import ZEROSHOT_METRICS, zeroshot_mean, zeroshot_results, zeroshot_tasks
from ..config import ZeroShotConfig
from ..core.names import emphasize
from ..store.run_record import RunRecord
from ..store.zeroshot_record import ZeroShotScores

LOWER, HIGHER = "lower", "higher"
DENSE = "dense"
MISSING = "--"  # a cell no run measured (an en dash in LaTeX)
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "×": r"$\times$", "±": r"$\pm$", "→": r"$\to$", "\u00a0": "~"}


@dataclass(frozen=True)
class Table:
    """A paper table: `frame` (rows × columns of numbers, NaN where no run measured it), `better` per column
    (LOWER or HIGHER), the suggested `caption` and the LaTeX `label`; `row_titles` head the row labels' columns
    (one per index level) and `column_title` spans the value columns ('Sparsity'); `decimals` for the writers."""

    frame: pd.DataFrame
    better: dict[str, str]
    caption: str
    label: str
    row_titles: tuple[str, ...] = ("Method",)
    column_title: str = ""
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

    def cells(self) -> list[tuple[tuple[str, ...], list[tuple[str, bool]]]]:
        """Each row as (its labels, one per index level; its cells as (text, is the column's best))."""
        best, ranked = self.best(), set(self.ranked_rows())
        rows = []
        for row in self.frame.index:
            labels = tuple(str(x) for x in (row if isinstance(row, tuple) else (row,)))
            cells = []
            for col in self.frame.columns:
                v = self.frame.at[row, col]
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    cells.append((MISSING, False))
                else:
                    cells.append((f"{v:.{self.decimals}f}", row in ranked and col in best and v == best[col]))
            rows.append((labels, cells))
        return rows


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
    return run.model.describe(run.request.model)


def _method(run: RunRecord) -> str:
    return run.request.prune.method_name


def calibration_protocol(runs: Sequence[RunRecord]) -> str:
    """'SmolLM2-135M-Instruct, dequantized from a Q4_1 GGUF to fp32; calibration 16 × 256 tokens of Emma (Austen),
    seed 0' from the records; when some runs' masks need no activations: '...; wanda calibrated on 16 × 256
    tokens of ...; magnitude scored from the weights alone (no calibration data)'."""
    calibrated = [r for r in runs if r.request.prune.needs_calibration]
    alone = [r for r in runs if not r.request.prune.needs_calibration]
    parts = [_joined(runs, _model_text)]
    if calibrated:
        windows = (f"{_joined(calibrated, lambda r: r.request.prune.nsamples)} × "
                   f"{_joined(calibrated, lambda r: r.request.prune.seqlen)} tokens of "
                   f"{_joined(calibrated, _calib_source)}, seed {_joined(calibrated, lambda r: r.request.prune.seed)}")
        parts.append(f"{_joined(calibrated, _method)} calibrated on {windows}" if alone else f"calibration {windows}")
    if alone:
        parts.append(f"{_joined(alone, _method)} scored from the weights alone (no calibration data)")
    return "; ".join(parts)


def group_protocol(runs: Sequence[RunRecord]) -> str:
    """'weights compared within each output row (wanda) or whole matrix (magnitude)': each method's comparison
    group, from the records (the reference's default differs between methods)."""
    words = {"row": "output row", "matrix": "whole matrix", "nm": "N:M group of consecutive weights"}
    groups: dict[str, list[str]] = {}
    for run in runs:
        group = words.get(run.request.prune.resolved_group, run.request.prune.resolved_group)
        methods = groups.setdefault(group, [])
        if _method(run) not in methods:
            methods.append(_method(run))
    if len(groups) == 1:
        return f"weights compared within each {next(iter(groups))}"
    named = [f"{group} ({', '.join(methods)})" for group, methods in groups.items()]
    return f"weights compared within each {', '.join(named[:-1])} or {named[-1]}"


def eval_protocol(runs: Sequence[RunRecord]) -> str:
    """'evaluated on Pride and Prejudice (Austen), 10 windows × 512 tokens = 5,120 tokens' from the records."""
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


def _perplexity_caption(runs: Sequence[RunRecord], whose: str = "") -> str:
    done = [r for r in runs if _finite(r.ppl) is not None] or list(runs)
    return (f"Perplexity (lower is better){whose} of {calibration_protocol(done)}; {group_protocol(done)}; "
            f"{eval_protocol(done)}. The dense row is the unpruned model.")


def perplexity_table(runs: Sequence[RunRecord]) -> Table:
    """Rows: the dense model and each method; columns: the sparsities or N:M patterns; values: perplexity."""
    frame = _grid(runs, lambda r: r.request.prune.method_name)
    frame.index.name = "method"
    return Table(frame, {c: LOWER for c in frame.columns}, _perplexity_caption(runs), "tab:perplexity",
                 column_title="Sparsity")


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
    titles = ("Method", "Calibration windows") if nsamples_vary else ("Method",)
    caption = _perplexity_caption(runs, f" of sweep {sweep_name}" if sweep_name else "")
    return Table(frame, {c: LOWER for c in frame.columns}, caption, "tab:sweep", titles, "Sparsity")


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
               f"{_zeroshot_protocol(scored or runs)}. The dense row is the unpruned model.")
    words = ZEROSHOT_METRICS.get(metric, metric)
    return Table(frame, {c: HIGHER for c in frame.columns}, caption, "tab:zeroshot",
                 column_title=f"{words[0].upper()}{words[1:]} (%)")


# the decoder blocks' non-zero parameters kept, the measured and the ideal speed-ups, perplexity (the caption says so)
FRONTIER_COLUMNS = {"Kept (%)": LOWER, "Prefill ×": HIGHER, "Decode ×": HIGHER, "Ideal ×": HIGHER, "PPL": LOWER}


def _frontier_row(p: FrontierPoint) -> list[float | None]:
    speed = p.speed
    return [p.kept * 100, *((speed.prefill_speedup, speed.decode_speedup, speed.ideal_speedup) if speed else
                            (None, None, None)), p.ppl]


def _structure_protocol(runs: Sequence[RunRecord]) -> str:
    """'flap removed whole KV groups and MLP channels (allocation uniform, ratio counted as params); block-influence
    removed whole blocks': how each structure remover counted and chose, from the records."""
    said: dict[str, list[str]] = {}
    for run in runs:
        s = run.structure
        if s is not None:
            what = "whole blocks" if s.structure == "depth" else (
                f"whole KV groups and MLP channels (allocation {s.allocation}, ratio counted as {s.target})")
            methods = said.setdefault(what, [])
            methods += [_method(run)] if _method(run) not in methods else []
    return "; ".join(f"{', '.join(methods)} removed {what}" for what, methods in said.items())


def frontier_table(runs: Sequence[RunRecord]) -> Table:
    """The frontier as a table: one row per run (its label: method and target), the dense model first; the decoder
    blocks' non-zero parameters kept, the measured prefill and decode speed-ups with the ideal one (matmul FLOPs
    per token), and perplexity. The caption states the protocol from the records."""
    found = frontier_points(runs)
    order = sorted(found.points, key=lambda p: (list(type(p.family)).index(p.family), p.series, -p.kept, p.run))
    rows: dict[str, list[float | None]] = {}
    if found.dense_ppl is not None:
        rows[DENSE] = [100.0, 1.0, 1.0, 1.0, found.dense_ppl]
    for p in order:
        rows[p.label if p.label not in rows else f"{p.label} ({p.run})"] = _frontier_row(p)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(FRONTIER_COLUMNS), dtype=float)
    frame.index.name = "method"
    same = [r for r in runs if r.name in {p.run for p in found.points}] or list(runs)
    structures = _structure_protocol(same)
    speed = (f"speed-ups measured beside the dense model: {found.speed_protocol}; ideal: the dense model's matmul "
             "FLOPs per token over the pruned one's, the LM head included" if found.speed_protocol
             else "no run measured its speed")
    left = "".join(f"; {s}" for s in found.left_out)
    caption = (f"Perplexity (PPL, lower is better) against the decoder blocks' non-zero parameters kept (Kept) and "
               f"the measured prefill and decode speed-ups beside the ideal one, of {calibration_protocol(same)}; {structures + '; ' if structures else ''}a mask's zeros "
               f"count as removed, though stored densely; {speed}; {eval_protocol(same)}{left}. The dense row is "
               "the unpruned model.")
    return Table(frame, dict(FRONTIER_COLUMNS), caption, "tab:frontier")


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (×, ±, → as math; a no-break space as ~)."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def _latex_row(cells: Sequence[str]) -> str:
    return " & ".join(cells) + r" \\"


def to_latex(table: Table) -> str:
    """A booktabs table: the caption (the novels' titles in italics) and label, a header whose first row spans
    the value columns with `column_title` (under a \\cmidrule) and whose second names the row labels' columns
    and each value column, the best value of each column in bold. Needs `\\usepackage{booktabs}` only."""
    n_index, n_cols = table.frame.index.nlevels, len(table.frame.columns)
    lines = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{emphasize(latex_escape(table.caption), 'latex')}}}",
             rf"\label{{{table.label}}}", rf"\begin{{tabular}}{{{'l' * n_index}{'r' * n_cols}}}", r"\toprule"]
    if table.column_title:
        lines.append(_latex_row([""] * n_index + [rf"\multicolumn{{{n_cols}}}{{c}}{{{latex_escape(table.column_title)}}}"]))
        lines.append(rf"\cmidrule(lr){{{n_index + 1}-{n_index + n_cols}}}")
    lines.append(_latex_row([latex_escape(t) for t in table.row_titles]
                            + [latex_escape(c) for c in table.frame.columns]))
    lines.append(r"\midrule")
    for labels, cells in table.cells():
        lines.append(_latex_row([latex_escape(x) for x in labels]
                                + [rf"\textbf{{{text}}}" if best else text for text, best in cells]))
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _markdown_header(table: Table, column: Any) -> str:
    """A value column's header: '50% sparsity' (Markdown has no header cell spanning the columns)."""
    return f"{column} {table.column_title[0].lower()}{table.column_title[1:]}" if table.column_title else str(column)


def to_markdown(table: Table) -> str:
    """A Markdown (pipe) table, best values in bold, the caption (the novels' titles in italics) below it."""
    header = [*table.row_titles, *(_markdown_header(table, c) for c in table.frame.columns)]
    align = ["---"] * len(table.row_titles) + ["---:"] * len(table.frame.columns)
    rows = [[*labels, *((f"**{text}**" if best else text.replace(MISSING, "–")) for text, best in cells)]
            for labels, cells in table.cells()]
    lines = ["| " + " | ".join(cells) + " |" for cells in (header, align, *rows)]
    return "\n".join(lines) + f"\n\n{emphasize(table.caption, 'markdown')}\n"


def to_csv(table: Table) -> str:
    """The numbers as CSV, full precision."""
    return table.frame.to_csv()
