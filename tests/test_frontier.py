"""The frontier and what a structure remover took out, from constructed records: every point where its record puts it
(the blocks' parameters kept from `removed_fraction` or a mask's zeros, the speed-ups from the speed record), each
family in the table of methods' look, what is left out said; the frontier table's values, best cells and caption;
the structure figures' cells against the records they draw; the catalog and a bundle carrying them."""
from __future__ import annotations

import dataclasses
import math
import re
import shutil
import subprocess

import numpy as np
import pytest
from test_tables import latex_problems

from wanda_engine.config import EvalConfig, PruneConfig, RunRequest, SpeedConfig
from wanda_engine.methods import table as methods
from wanda_engine.outputs import tables
from wanda_engine.outputs.figures import catalog, structure
from wanda_engine.outputs.figures.frontier import frontier, frontier_points
from wanda_engine.store.run_record import RunRecord
from wanda_engine.store.shrink_record import BlockShrink, ScoreHistogram, SpeedRecord, SpeedSample, StructureRecord

DENSE_PPL = 22.73


def speed(prefill: float, decode: float, flops_ratio: float, device: str = "cpu (x86_64)") -> SpeedRecord:
    """The dense model at 100 tokens/s prefill and 10 decode; the pruned one at `prefill`× and `decode`× that."""
    def sample(pf: float, dc: float, flops: int) -> SpeedSample:
        return SpeedSample(pf, dc, (1.0,), (1.0,), 1000, 4000, flops, 10, None, 1)

    return SpeedRecord(device, 2, "float32", 1, 512, 16, 32, 5, "interleaved",
                       sample(100.0, 10.0, 1_000_000), sample(100.0 * prefill, 10.0 * decode,
                                                              round(1_000_000 / flops_ratio)))


def shrink(method: str, removed: float, structure_: str = "width", blocks: tuple = (), **kw) -> StructureRecord:
    dense = 1_000_000
    return StructureRecord(method, structure_, kw.pop("allocation", "uniform"), "params", removed,
                           kw.pop("bias_compensation", False), "whole KV groups", removed, dense,
                           round(dense * (1 - removed)), 2 * dense, 2 * dense - round(dense * removed), blocks,
                           kw.pop("distributions", ()), False)


def record(name: str, ppl: float, *, sparsity: float, structure_: StructureRecord | None = None,
           speed_: SpeedRecord | None = None, windows: int = 10, **prune) -> RunRecord:
    request = RunRequest(prune=PruneConfig(nsamples=16, seqlen=256, sparsity=prune.pop("ratio", 0.5), **prune),
                         eval=EvalConfig(seqlen=512, windows=windows), speed=SpeedConfig() if speed_ else None)
    meta = {"name": name, "status": "complete", "config": request.to_dict(), "ppl": ppl, "ppl_dense": DENSE_PPL,
            "sparsity": sparsity, "model": {"source": "default", "label": "SmolLM2-135M-Instruct (embedded, fp32)"},
            "calibration": {"source": "default", "label": "austen:emma", "nsamples": 16, "seqlen": 256, "seed": 0},
            "eval": {"dataset": "austen:prideprejudice", "seqlen": 512, "windows": windows, "tokens": 512 * windows}}
    if structure_ is not None:
        meta["structure"] = structure_.to_json()
    if speed_ is not None:
        meta["speed"] = speed_.to_json()
    return RunRecord.from_json(meta)


def frontier_records() -> list[RunRecord]:
    """Two FLAP ratios, Wanda 50%, a depth run, a run measured on another device and one evaluated otherwise."""
    return [record("flap-10", 30.0, sparsity=0.0003, ratio=0.1, method="flap", bias_compensation=True,
                   structure_=shrink("flap", 0.1002, bias_compensation=True), speed_=speed(1.07, 1.04, 1.09)),
            record("flap-20", 41.5, sparsity=0.0003, ratio=0.2, method="flap", bias_compensation=True,
                   structure_=shrink("flap", 0.1998, bias_compensation=True), speed_=speed(1.15, 1.10, 1.19)),
            record("wanda-50", 41.7, sparsity=0.5, speed_=speed(0.99, 1.01, 1.0)),
            record("depth-20", 54.1, sparsity=0.0, ratio=0.2, method="block-influence",
                   structure_=shrink("block-influence", 0.2, "depth")),
            record("elsewhere", 35.0, sparsity=0.5, method="magnitude", speed_=speed(1.0, 1.0, 1.0, "cuda:0 (H100)")),
            record("other-eval", 40.0, sparsity=0.5, windows=4)]


@pytest.fixture
def runs() -> list[RunRecord]:
    return frontier_records()


def traces(fig) -> dict[str, tuple[list, list]]:
    return {t.name: (list(t.x), list(t.y)) for t in fig.data}


def test_the_points_are_where_the_records_put_them(runs):
    found = frontier_points(runs)
    by_run = {p.run: p for p in found.points}
    assert set(by_run) == {"flap-10", "flap-20", "wanda-50", "depth-20", "elsewhere"}  # other-eval: windows differ
    assert by_run["flap-20"].kept == pytest.approx(1 - 0.1998) and by_run["wanda-50"].kept == pytest.approx(0.5)
    assert by_run["depth-20"].kept == pytest.approx(0.8) and by_run["depth-20"].speed is None
    assert by_run["elsewhere"].speed is None  # measured on another device than the first speed: not comparable
    assert by_run["flap-20"].family is methods.Family.WIDTH and by_run["wanda-50"].family is methods.Family.ZEROS
    assert by_run["depth-20"].family is methods.Family.DEPTH and found.dense_ppl == DENSE_PPL
    left = "; ".join(found.left_out)
    assert "1 run(s) evaluated differently" in left and "no speed measured for depth-20" in left
    assert "left out for elsewhere" in left
    assert "cpu (x86_64), 2 threads, float32, median of 5 rounds" in found.speed_protocol


def test_the_speed_frontier_draws_each_method_at_its_measured_speed_up(runs):
    fig = frontier(runs, "prefill")
    drawn = traces(fig)
    assert drawn["flap+bias"] == ([pytest.approx(1.07), pytest.approx(1.15)], [30.0, 41.5])  # most kept first
    assert drawn["wanda"] == ([pytest.approx(0.99)], [41.7])
    assert "block-influence" not in drawn and "magnitude" not in drawn  # no speed, or measured elsewhere
    assert drawn[f"dense ({DENSE_PPL:.2f})"] == ([1.0], [DENSE_PPL])
    symbols = {t.name: t.marker.symbol for t in fig.data}
    assert symbols["flap+bias"] == methods.get("flap").look.symbol and symbols["flap+bias"].endswith("-open")
    assert symbols["wanda"] == methods.get("wanda").look.symbol and "open" not in symbols["wanda"]
    sub = fig.layout.title.subtitle.text.replace("<br>", " ")
    assert "cpu (x86_64)" in sub and "median of 5 rounds" in sub and "no speed measured for depth-20" in sub
    assert fig.layout.yaxis.type == "log"


def test_the_parameters_frontier_draws_every_evaluated_run(runs):
    drawn = traces(frontier(runs, "params"))
    assert drawn["block-influence"] == ([pytest.approx(0.8)], [54.1])
    assert drawn["magnitude"] == ([pytest.approx(0.5)], [35.0])  # its speed was elsewhere: kept here all the same
    assert drawn["flap+bias"][0] == [pytest.approx(1 - 0.1002), pytest.approx(1 - 0.1998)]
    assert "other-eval" not in str(drawn)


def test_a_frontier_without_data_says_why():
    masks = [record("w", 41.7, sparsity=0.5)]
    assert "no run shown measured its speed" in frontier(masks, "prefill").layout.annotations[0].text
    assert "perplexity versus sparsity draws masks alone" in frontier(masks, "params").layout.annotations[0].text
    assert catalog.missing("frontier", masks[0]) == "no run shown measured its speed"
    assert catalog.missing("frontier_params", masks[0]).startswith("no run shown removed structures")
    with pytest.raises(ValueError):
        frontier(masks, "latency")


def test_the_frontier_table_holds_the_records_values_and_its_protocol(runs):
    table = tables.frontier_table(runs)
    frame = table.frame
    assert list(frame.index)[0] == "dense" and list(frame.loc["dense"]) == [100.0, 1.0, 1.0, 1.0, DENSE_PPL]
    flap = frame.loc["flap+bias 20%"]
    assert flap["Kept (%)"] == pytest.approx(80.02) and flap["Prefill ×"] == pytest.approx(1.15)
    assert flap["Decode ×"] == pytest.approx(1.10) and flap["Ideal ×"] == pytest.approx(1.19, abs=1e-6)
    assert flap["PPL"] == 41.5
    assert math.isnan(frame.loc["block-influence 20%", "Prefill ×"])  # not measured: an empty cell
    assert table.better["PPL"] == tables.LOWER and table.better["Prefill ×"] == tables.HIGHER
    tex = tables.to_latex(table)
    assert latex_problems(tex) == []
    assert "\\textbf{1.15}" in tex and "\\textbf{30.00}" in tex  # the fastest prefill, the lowest perplexity
    caption = table.caption
    for said in ("median of 5 rounds interleaved", "cpu (x86_64), 2 threads, float32",
                 "block-influence removed whole blocks", "allocation uniform, ratio counted as params",
                 "ideal: the dense model's matmul FLOPs per token", "Pride and Prejudice (Austen), 10 windows",
                 "a mask's zeros count as removed"):
        assert said in caption, said


def test_the_frontier_table_compiles(runs, tmp_path):
    assert shutil.which("pdflatex"), "no pdflatex: run scripts/setup.sh (it installs texlive-latex-recommended)"
    tex = tables.to_latex(tables.frontier_table(runs))
    (tmp_path / "t.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + tex
                                    + "\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Overfull" not in done.stdout, done.stdout[-2000:]


# ---------------------------------------------------------------- what was removed

def width_record(allocation: str = "global") -> StructureRecord:
    """Three blocks of 6 query heads in 3 KV groups and 8 channels: block 1 lost group 1 and 3 channels, block 2
    was removed whole (as a depth run would; here to show its row), block 0 lost nothing."""
    hist = ScoreHistogram("MLP channel", "asinh(standardized score)", (0.0, 1.0, 2.0), (5, 10), (3, 0), 0.5)
    groups = ScoreHistogram("KV group", "asinh(standardized score)", (0.0, 1.0, 2.0), (4, 1), (1, 0), 0.5)
    blocks = (BlockShrink(0, False, 100, 100, 6, 3, 4, (0, 1, 2, 3, 4, 5), 8, 8, (1.0, 2.0, 3.0)),
              BlockShrink(1, False, 100, 70, 6, 3, 4, (0, 1, 4, 5), 8, 5, (1.0, 0.1, 3.0)),
              BlockShrink(2, True, 100, 0, 6, 3, 4, (), 8, 0, (0.2, 0.2, 0.2)))
    return shrink("flap", 0.4333, blocks=blocks, allocation=allocation, distributions=(groups, hist))


def test_heads_kept_marks_every_head_as_its_record_says():
    fig = structure.heads_kept(width_record())
    z = np.array(fig.data[0].z, dtype=float)
    assert list(fig.data[0].y) == [0, 1, 2] and z.shape == (3, 6)
    assert (z[0] == structure.KEPT).all() and (z[2] == structure.BLOCK_GONE).all()
    assert list(z[1]) == [structure.KEPT] * 2 + [structure.REMOVED] * 2 + [structure.KEPT] * 2
    sub = fig.layout.title.subtitle.text.replace("<br>", " ")
    assert "10 of 18 query heads kept" in sub  # blocks 0 and 1 keep 6 + 4; the removed block none
    assert "KV groups of 2 query heads" in sub


def test_kept_per_block_is_each_blocks_share_of_heads_and_channels():
    fig = structure.kept_per_block(width_record())
    heads, channels = (list(t.y) for t in fig.data)
    assert heads == [1.0, pytest.approx(4 / 6), 0.0] and channels == [1.0, pytest.approx(5 / 8), 0.0]


def test_removed_blocks_colours_the_removed_and_draws_the_cut_off():
    blocks = tuple(BlockShrink(i, i in (1, 3), 10, 0 if i in (1, 3) else 10, influence=v)
                   for i, v in enumerate((0.9, 0.02, 0.3, 0.05, 0.4)))
    fig = structure.removed_blocks(shrink("block-influence", 0.4, "depth", blocks=blocks))
    bars, cut = fig.data
    assert list(bars.y) == [0.9, 0.02, 0.3, 0.05, 0.4]
    assert [c == structure.VERMILLION for c in bars.marker.color] == [False, True, False, True, False]
    assert set(cut.y) == {0.05}  # the highest influence removed
    assert "no block influence" in structure.removed_blocks(width_record()).layout.annotations[0].text


def test_score_distributions_stack_kept_and_removed_at_the_records_cut_off():
    fig = structure.structure_scores(width_record())
    bars = {(t.name, t.xaxis): list(t.y) for t in fig.data if t.type == "bar"}
    assert bars[("kept", "x")] == [4, 1] and bars[("removed", "x2")] == [3, 0]
    cuts = [t for t in fig.data if t.name == "cut-off"]
    assert len(cuts) == 2 and all(set(t.x) == {0.5} for t in cuts)
    record = width_record("uniform")
    uniform = structure.structure_scores(dataclasses.replace(record, distributions=tuple(
        dataclasses.replace(h, scale="log10 score", cutoff=None) for h in record.distributions)))
    band = [s for s in uniform.layout.shapes if s.type == "rect"]
    assert band and band[0].x0 == band[0].x1 == pytest.approx(math.log10(0.1))  # block 1 removed the group at 0.1
    assert "each block cut at its own score" in uniform.layout.title.subtitle.text.replace("<br>", " ")


# ---------------------------------------------------------------- the catalog and a bundle

def test_the_catalog_draws_a_structure_run_and_names_what_a_mask_run_lacks(runs):
    flap, wanda, depth = runs[1], runs[2], runs[3]
    plan = catalog.plan([flap], {}, model_runs=runs)
    stems = [s.stem for s in plan.figures]
    assert {"frontier", "frontier_params", "heads_kept", "kept_per_block", "structure_scores"} <= set(stems)
    assert any(n.startswith("Frontier") and "runs of the run store that are not in this bundle" in n
               for n in plan.notes)
    # a ratio of structures removed is not a sparsity: left out of that figure, and said
    assert "ppl_vs_sparsity" not in stems and any(o.title.startswith("Perplexity versus sparsity")
                                                  and "drawn on the frontier" in o.why for o in plan.omitted)
    assert catalog.missing("heads_kept", wanda) == "a mask's run zeroes weights: it removed no heads, channels or blocks"
    assert catalog.missing("removed_blocks", depth) == "" and catalog.missing("heads_kept", depth).startswith("a depth")
    assert catalog.missing("removed_blocks", flap).startswith("a width run")
    sweep = catalog.plan(runs[:3], {}, sweep=True)
    assert {"sweep_frontier", "sweep_frontier_params", "sweep_sparsity"} <= {s.stem for s in sweep.figures}
    for spec in sweep.figures:
        assert spec.build().data, spec.stem


def test_a_bundle_of_structure_runs_holds_the_frontier_table(runs, tmp_path):
    from wanda_engine.outputs import bundle
    from wanda_engine.store.run_store import atomic_write_json, load_run

    stored = []
    for r in runs[:4]:
        atomic_write_json(tmp_path / r.name / "run.json", r.to_json())
        (tmp_path / r.name / "records.json").write_text("[]")  # a structure remover keeps no per-matrix records
        stored.append(load_run(tmp_path / r.name))
    built = bundle.build_bundle(stored, render=lambda fig, fmt: b"x", formats=("svg",))
    names = set(built.files)
    assert {"tables/frontier.tex", "tables/frontier.md", "tables/frontier.csv"} <= names
    assert "figures/frontier.svg" in names and "figures/flap-20-heads_kept.svg" in names
    assert re.search(r"depth-20.*a depth run removes whole blocks", built.files["REPRODUCE.md"].decode())
    assert "figures/depth-20-removed_blocks.svg" in names and "figures/depth-20-structure_scores.svg" in names


def depth_record() -> StructureRecord:
    blocks = tuple(BlockShrink(i, i in (1, 3), 10, 0 if i in (1, 3) else 10, influence=v)
                   for i, v in enumerate((0.9, 0.02, 0.3, 0.05, 0.4)))
    hist = ScoreHistogram("block", "block influence", (0.0, 0.5, 1.0), (2, 1), (2, 0), 0.05)
    return shrink("block-influence", 0.4, "depth", blocks=blocks, distributions=(hist,))


def test_missing_says_empty_exactly_when_a_structure_figure_draws_nothing(runs):
    """As for every figure of the catalog (test_bundle_contents): a figure is drawn with data in every panel exactly
    when `missing` has no reason."""
    from test_bundle_contents import drawn_values, empty_panels

    width = record("w", 40.0, sparsity=0.0, ratio=0.4, method="flap", structure_=width_record())
    depth = record("d", 50.0, sparsity=0.0, ratio=0.4, method="block-influence", structure_=depth_record())
    for run in (width, depth, runs[2]):
        for which in (*catalog.STRUCTURE_FIGURES, *catalog.FRONTIER_AXES, "blocks"):
            why = catalog.missing(which, run)
            fig = catalog.build_figure(which, run)
            has_data = drawn_values(fig) > 0 and not empty_panels(fig)
            assert has_data == (why == ""), (run.name, which, why, empty_panels(fig))
