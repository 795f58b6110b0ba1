"""Paper tables: the LaTeX of a known comparison holds its run.json values and bolds the best per column,
parses as a booktabs table, names its header cells and the sparsity columns, and compiles with pdflatex into
a page that reads right (scripts/setup.sh installs Debian's texlive-latex-recommended, which has booktabs);
Markdown and CSV carry the same numbers; captions state the protocol from the records, naming the texts and
the model as a paper does."""
from __future__ import annotations

import dataclasses
import io
import re
import shutil
import subprocess

import pandas as pd
import pytest

from wanda_engine.outputs import tables
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest, ZeroShotConfig
from wanda_engine.store.run_record import RunRecord


def record(name: str, ppl: float | None, *, zeroshot: dict | None = None, nsamples: int = 16, seed: int = 0,
           **prune) -> RunRecord:
    """A complete run's record as run.json holds it (the runner's layout), at the given settings and result."""
    request = RunRequest(prune=PruneConfig(nsamples=nsamples, seqlen=256, seed=seed, **prune),
                         eval=EvalConfig(seqlen=512, windows=10))
    meta = {"name": name, "status": "complete", "config": request.to_dict(), "ppl": ppl, "ppl_dense": 22.73,
            "model": {"source": "default", "label": "SmolLM2-135M-Instruct (embedded, fp32)"},
            "calibration": {"source": "default", "label": "austen:emma", "nsamples": nsamples, "seqlen": 256,
                            "seed": seed},
            "eval": {"dataset": "austen:prideprejudice", "seqlen": 512, "windows": 10, "tokens": 5120}}
    if zeroshot is not None:
        meta["zeroshot"] = zeroshot
    return RunRecord.from_json(meta)


@pytest.fixture
def comparison() -> list[RunRecord]:
    return [record("mag-50", 304.51, method="magnitude"), record("wanda-50", 41.75),
            record("wanda-60", 90.3, sparsity=0.6), record("mag-60", 1200.5, method="magnitude", sparsity=0.6),
            record("wanda-24", 80.2, pattern="2:4"), record("owl-60", 99.2, sparsity=0.6, layerwise="owl")]


# ---------------------------------------------------------------- a structural parse of LaTeX

def _strip_escapes(tex: str) -> str:
    return re.sub(r"\\[{}&%$#_]", "", tex)


def latex_problems(tex: str) -> list[str]:
    """What is wrong with `tex` as one booktabs table: unbalanced braces or environments, not exactly one
    tabular, rules missing or out of order, a row whose number of cells differs from the column spec."""
    problems = []
    plain = _strip_escapes(tex)
    depth = 0
    for ch in plain:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            problems.append("a '}' closes nothing")
            break
    if depth > 0:
        problems.append(f"{depth} '{{' never closed")
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", plain):
        if kind == "begin":
            stack.append(env)
        elif not stack or stack.pop() != env:
            problems.append(f"\\end{{{env}}} closes another environment")
    problems += [f"\\begin{{{env}}} never ended" for env in stack]
    tabulars = re.findall(r"\\begin\{tabular\}\{([^}]*)\}(.*?)\\end\{tabular\}", plain, re.S)
    if len(tabulars) != 1:
        return problems + [f"{len(tabulars)} tabular environments, not one"]
    spec, body = tabulars[0]
    rules = re.findall(r"\\(toprule|midrule|bottomrule)", body)
    if rules != ["toprule", "midrule", "bottomrule"]:
        problems.append(f"booktabs rules {rules}, not toprule, midrule, bottomrule")
    columns = len(re.findall(r"[lcrp]", spec))
    body = re.sub(r"\\cmidrule(\([lr]*\))?\{(\d+)-(\d+)\}", "", body)
    rows = [r for r in re.sub(r"\\(toprule|midrule|bottomrule)", "", body).split("\\\\") if r.strip()]
    for row in rows:
        # a \multicolumn{n} cell counts n columns
        cells = row.count("&") + 1 + sum(int(n) - 1 for n in re.findall(r"\\multicolumn\{(\d+)\}", row))
        if cells != columns:
            problems.append(f"row {row.strip()!r} has {cells} cells, the spec {spec!r} {columns}")
    return problems


def test_the_parse_finds_what_is_broken():
    good = "\\begin{tabular}{lr}\n\\toprule\na & b \\\\\n\\midrule\nc & 1\\% \\\\\n\\bottomrule\n\\end{tabular}"
    assert latex_problems(good) == []
    assert any("cells" in p for p in latex_problems(good.replace("c & 1", "c & 1 & 2")))
    assert any("never closed" in p for p in latex_problems(good.replace("a & b", "{a & b")))
    assert any("rules" in p for p in latex_problems(good.replace("\\midrule\n", "")))
    assert any("tabular environments" in p for p in latex_problems(good + good))
    spanned = good.replace("\\toprule\n", "\\toprule\n & \\multicolumn{1}{c}{S} \\\\\n\\cmidrule(lr){2-2}\n")
    assert latex_problems(spanned) == []
    assert any("cells" in p for p in latex_problems(spanned.replace("multicolumn{1}", "multicolumn{2}")))


# ---------------------------------------------------------------- the perplexity comparison

def _header_rows(tex: str) -> list[list[str]]:
    """The header's rows (between \\toprule and \\midrule), each a list of cells, \\cmidrule left out."""
    header = re.sub(r"\\cmidrule\S*", "", tex.split("\\toprule", 1)[1].split("\\midrule", 1)[0])
    return [[c.strip() for c in row.split("&")] for row in header.split("\\\\") if row.strip()]


def _cells(tex: str) -> dict[str, list[str]]:
    """Each body row of the one tabular: first cell -> the other cells."""
    body = tex.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    rows = [[c.strip() for c in r.split("&")] for r in body.split("\\\\") if r.strip()]
    return {r[0]: r[1:] for r in rows}


def test_the_latex_of_a_comparison_holds_its_values_and_bolds_the_best(comparison):
    table = tables.perplexity_table(comparison)
    tex = tables.to_latex(table)
    assert latex_problems(tex) == []
    columns = _header_rows(tex)[-1][1:]
    assert columns == ["50\\%", "60\\%", "2:4"]
    cells = _cells(tex)
    by_cell: dict[tuple[str, str], float] = {}
    for run in comparison:
        prune = run.request.prune
        by_cell[(prune.method_name.replace("_", "\\_"), prune.pattern if prune.nm else f"{prune.sparsity:.0%}")] = run.ppl
    for column_index, column in enumerate(["50%", "60%", "2:4"]):
        values = {row: ppl for (row, col), ppl in by_cell.items() if col == column}
        best = min(values.values())
        for row, ppl in values.items():
            shown = cells[row][column_index]
            assert shown == (f"\\textbf{{{ppl:.2f}}}" if ppl == best else f"{ppl:.2f}")
        assert cells["dense"][column_index] == f"{comparison[0].ppl_dense:.2f}"  # the reference, never bold
    assert cells["magnitude"][2] == "--"  # no magnitude 2:4 run: an empty cell, not a number
    assert "\\caption{" in tex and "\\label{tab:perplexity}" in tex


def test_the_caption_states_the_protocol_from_the_records(comparison):
    caption = tables.perplexity_table(comparison).caption
    ev = comparison[0].eval
    assert comparison[0].model.label.split(" (")[0] in caption
    assert f"{comparison[0].request.prune.nsamples} × {comparison[0].request.prune.seqlen} tokens" in caption
    assert comparison[0].calibration.text_name() in caption and "seed 0" in caption
    assert ev.describe() in caption and "lower is better" in caption
    mixed = tables.perplexity_table([record("a", 40.0, seed=0), record("b", 41.0, seed=1, sparsity=0.6)]).caption
    assert "seed 0/1" in mixed  # runs that differ say so instead of claiming one protocol


def test_markdown_and_csv_carry_the_same_numbers(comparison):
    table = tables.perplexity_table(comparison)
    back = pd.read_csv(io.StringIO(tables.to_csv(table)), index_col=0)
    pd.testing.assert_frame_equal(back, table.frame, check_names=False)
    md = tables.to_markdown(table)
    wanda_row = next(line for line in md.splitlines() if line.startswith("| wanda "))
    assert "**41.75**" in wanda_row and "**90.30**" in wanda_row and "**80.20**" in wanda_row
    assert table.caption in md.replace("*", "")  # the novels' titles are in italics


def test_a_sweep_grid_has_a_row_per_method_and_calibration_size():
    runs = [record(f"w{n}-{s}", 40.0 + n / 100 + s, nsamples=n, sparsity=s) for n in (8, 32) for s in (0.5, 0.6)]
    table = tables.sweep_table(runs, "grid")
    assert list(table.frame.index) == [("dense", ""), ("wanda", 8), ("wanda", 32)]
    for run in runs:
        assert table.frame.loc[("wanda", run.request.prune.nsamples), f"{run.request.prune.sparsity:.0%}"] == run.ppl
    assert "8/32 × 256" in table.caption and "sweep grid" in table.caption
    assert latex_problems(tables.to_latex(table)) == []


def test_zero_shot_accuracies_bold_the_highest_per_task():
    def results(boolq: float, rte: float) -> dict:
        return {"results": {"boolq": {"acc": boolq, "n": 100}, "rte": {"acc": rte, "n": 50}}}

    zc = ZeroShotConfig(tasks=("boolq", "rte"), limit=100).to_dict()
    runs = [record("w", 40.0, zeroshot={"dense": results(0.7, 0.6), "pruned": results(0.65, 0.58), "config": zc,
                                        "harness": "0.4.13"}),
            record("m", 300.0, method="magnitude", zeroshot={"dense": results(0.7, 0.6), "pruned": results(0.55, 0.59),
                                                             "config": zc, "harness": "0.4.13"})]
    table = tables.zeroshot_table(runs)
    assert list(table.frame.columns) == ["boolq", "rte", "mean"]
    assert table.frame.loc["wanda 50%", "boolq"] == pytest.approx(65.0)
    assert table.frame.loc["magnitude 50%", "mean"] == pytest.approx((55.0 + 59.0) / 2)
    cells = _cells(tables.to_latex(table))
    assert cells["wanda 50\\%"][0] == "\\textbf{65.00}" and cells["magnitude 50\\%"][1] == "\\textbf{59.00}"
    assert "lm-eval 0.4.13" in table.caption and "100 questions per task" in table.caption
    assert "higher is better" in table.caption


def _paper_runs() -> list[RunRecord]:
    """A Compare as the app makes it: magnitude from the weights alone and Wanda, on the embedded model's label."""
    from wanda_engine.inputs.models import DEFAULT_LABEL

    runs = [record("magnitude-50", 304.51, method="magnitude", calibrate=False), record("wanda-50", 41.75)]
    return [dataclasses.replace(r, model=dataclasses.replace(r.model, label=DEFAULT_LABEL, dtype="float32"))
            for r in runs]


def test_the_header_names_the_row_labels_and_spans_the_sparsity_columns(comparison):
    rows = _header_rows(tables.to_latex(tables.perplexity_table(comparison)))
    assert rows[0] == ["", "\\multicolumn{3}{c}{Sparsity}"] and rows[-1][0] == "Method"
    grid = [record(f"w{n}", 40.0 + n, nsamples=n) for n in (8, 32)]
    assert _header_rows(tables.to_latex(tables.sweep_table(grid, "g")))[-1][:3] == ["Method", "Calibration windows",
                                                                                    "50\\%"]
    md_header = tables.to_markdown(tables.perplexity_table(comparison)).splitlines()[0]
    assert [c.strip() for c in md_header.strip("|").split("|")] == ["Method", "50% sparsity", "60% sparsity",
                                                                    "2:4 sparsity"]


def test_captions_name_the_texts_and_the_model_as_a_paper_does():
    runs = _paper_runs()
    table = tables.perplexity_table(runs)
    for text in (table.caption, tables.to_latex(table), tables.to_markdown(table)):
        assert "austen:" not in text and "SmolLM2-135M-Instruct" in text
    assert "SmolLM2-135M-Instruct, dequantized from a Q4_1 GGUF to fp32" in table.caption
    assert "Emma (Austen)" in table.caption and "Pride and Prejudice (Austen)" in table.caption
    assert "\\emph{Pride and Prejudice} (Austen)" in tables.to_latex(table)
    assert "*Pride and Prejudice* (Austen)" in tables.to_markdown(table)
    # the magnitude run read no calibration data: the caption does not say it did
    assert "wanda calibrated on 16 × 256 tokens" in table.caption
    assert "magnitude scored from the weights alone" in table.caption
    assert "whole matrix (magnitude)" in table.caption and "output row (wanda)" in table.caption


def test_the_latex_compiles_with_pdflatex_and_reads_right(comparison, tmp_path):
    """scripts/setup.sh installs TeX (texlive-latex-recommended): a missing pdflatex is a failed setup."""
    from pypdf import PdfReader

    assert shutil.which("pdflatex"), "no pdflatex: run scripts/setup.sh (it installs texlive-latex-recommended)"
    grid = [record(f"w{n}", 40.0 + n, nsamples=n) for n in (8, 32)]
    tex = "\n".join(tables.to_latex(t) for t in (tables.perplexity_table(comparison + _paper_runs()),
                                                   tables.sweep_table(grid, "g_1")))
    document = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + tex + "\n\\end{document}\n"
    (tmp_path / "t.tex").write_text(document)
    for _ in range(2):  # twice, as a paper is built: the second pass has the labels
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:]
    assert "Overfull" not in done.stdout and "Warning" not in done.stdout, done.stdout[-2000:]
    page = re.sub(r"\s+", " ", "".join(p.extract_text() for p in PdfReader(tmp_path / "t.pdf").pages))
    for words in ("Method", "Sparsity", "50%", "60%", "2:4", "Calibration windows", "304.51",
                  "Pride and Prejudice (Austen)", "dequantized from a Q4 1 GGUF to fp32"):
        assert words in page.replace("_", " "), words


def test_every_text_the_loader_names_reads_as_a_title():
    from wanda_engine.core.names import AUSTEN_BOOKS, emphasize, text_title

    assert text_title("austen:prideprejudice") == "Pride and Prejudice (Austen)"
    assert all(text_title(f"austen:{book}") == f"{title} (Austen)" for book, title in AUSTEN_BOOKS.items())
    assert text_title("wikitext2:test") == "WikiText-2 (test split)" and text_title("c4:train") == "C4 (train split)"
    assert text_title("text:notes.txt") == "notes.txt" and text_title("/data/notes.txt") == "notes.txt"
    assert text_title("tokens:calib.npy") == "the token file calib.npy"
    assert emphasize("of Emma (Austen); Emma", "latex") == "of \\emph{Emma} (Austen); Emma"
    assert emphasize("of Emma (Austen)", "markdown") == "of *Emma* (Austen)"
