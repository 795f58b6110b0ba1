"""Figures are built from real records (a tiny random LLaMA pruned with Wanda) and carry exactly their data."""
from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from wanda_engine.outputs import figures as F
from wanda_engine.outputs.figures.paper import suggested_caption
from wanda_engine.config import PruneConfig
from wanda_engine.core.events import BlockFinished
from wanda_engine.store.run_record import RunRecord
from wanda_engine.store.matrix_records import BlockRecord, MatrixRecord

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pruned():
    from conftest import tiny_model

    from wanda_engine.pruning.pipeline import prune_model

    model = tiny_model("llama")
    torch.manual_seed(1)
    windows = torch.randint(0, 512, (4, 32))
    result = prune_model(model, windows, PruneConfig(method="wanda", nsamples=4, seqlen=32, batch_size=4, device="cpu"))
    assert result.records and result.blocks
    return result


@pytest.fixture(scope="session")
def records(pruned) -> list[MatrixRecord]:
    return pruned.records


@pytest.fixture(scope="session")
def rec(records) -> MatrixRecord:
    return records[0]


def _run(name, method, sparsity, ppl, dense=10.0, dataset="austen:emma", seqlen=128, windows=4, variant=False,
         pattern="unstructured") -> RunRecord:
    return RunRecord.from_json({
        "name": name, "status": "complete", "ppl": ppl, "ppl_dense": dense, "sparsity": sparsity,
        "config": {"method": method, "variant": variant, "pattern": pattern, "target_sparsity": sparsity,
                   "sparsity": sparsity},
        "eval": {"dataset": dataset, "seqlen": seqlen, "windows": windows, "tokens": seqlen * windows}})


def _title(fig: go.Figure) -> str:
    t = fig.layout.title
    return (t.text or "") + " " + ((t.subtitle.text or "") if t.subtitle else "")


# ---------------------------------------------------------------- one matrix

def test_metric_histograms_counts_match_the_weights(rec):
    fig = F.metric_histograms(rec)
    numel = rec.shape[0] * rec.shape[1]
    assert set(rec.hist) == {"wanda", "magnitude"}
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 2 * len(rec.hist)  # kept + pruned per metric
    for metric, h in rec.hist.items():
        axis = "x" if metric == "wanda" else "x2"  # wanda first, then magnitude
        mine = [t for t in bars if (t.xaxis or "x") == axis]
        total = sum(int(np.sum(t.y)) for t in mine)
        assert total == numel - h["zero_weights"]
        kept = next(t for t in mine if t.name == "kept")
        pruned = next(t for t in mine if t.name == "pruned")
        assert list(kept.y) == h["kept"] and list(pruned.y) == h["pruned"]
        edges = np.asarray(h["edges"])
        np.testing.assert_allclose(kept.x, (edges[:-1] + edges[1:]) / 2)
        # The run's own mask prunes exactly the recorded sparsity (among nonzero scores).
        if metric == rec.method:
            assert int(np.sum(pruned.y)) == pytest.approx(rec.sparsity * numel, abs=h["zero_weights"])
        cut = [t for t in fig.data if t.type == "scatter" and (t.xaxis or "x") == axis]
        if math.isfinite(h["cutoff"]):
            assert cut and cut[0].x[0] == pytest.approx(h["cutoff"])
            # each metric's own group: Wanda per row, magnitude per matrix (issue 19 item 7)
            assert ("median over rows" if rec.group_of(metric) == "row" else "(matrix)") in cut[0].name
    title = _title(fig)
    # issue 19: the page's name for the figure ("The teacher's view") is not the paper's caption
    assert rec.full_name in title and f"{numel:,}" in title and "Which weights each metric would prune" in title
    assert "teacher" not in suggested_caption(fig)


def test_channel_norms_highlights_the_top_channels(rec):
    fig = F.channel_norms(rec, top=8)
    bar = next(t for t in fig.data if t.type == "bar")
    np.testing.assert_allclose(bar.y, rec.arrays["channel_norms"])
    top = next(t for t in fig.data if t.type == "scatter")
    assert list(top.x) == rec.channels["top_index"][:8]
    assert int(np.argmax(rec.arrays["channel_norms"])) == top.x[0]
    assert f"{rec.channels['top1pct_share']:.1%}" in _title(fig)
    assert "outlier features" in _title(fig)

    bare = dataclasses.replace(rec, arrays={k: v for k, v in rec.arrays.items() if k != "channel_norms"}, channels=None)
    empty = F.channel_norms(bare)
    assert len(empty.data) == 0
    assert any("no activation statistics" in a.text for a in empty.layout.annotations)


def test_row_sparsity_histogram(rec):
    fig = F.row_sparsity(rec)
    assert list(fig.data[0].y) == rec.row_sparsity["hist"]
    assert sum(fig.data[0].y) == rec.shape[0]
    assert len(fig.data[0].x) == 20 and 0 < min(fig.data[0].x) and max(fig.data[0].x) < 1
    rs = rec.row_sparsity
    title = fig.layout.title.text
    for key in ("min", "mean", "max"):
        assert f"{key} {rs[key]:.1%}" in title


def test_density_map_is_the_recorded_tiles(rec):
    fig = F.density_map(rec)
    dens = rec.arrays["density"]
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), dens)
    rows, cols = dens.shape
    assert f"{rec.shape[1] / cols:g} input channels each" in fig.layout.xaxis.title.text
    assert f"{rec.shape[0] / rows:g} rows each" in fig.layout.yaxis.title.text
    # Mean pruned fraction over equal tiles is the matrix sparsity.
    if rec.shape[0] % rows == 0 and rec.shape[1] % cols == 0:
        assert float(np.mean(dens)) == pytest.approx(rec.sparsity, abs=1e-6)


def test_mask_crop_shows_the_codes_and_the_channel_norms(rec):
    fig = F.mask_crop(rec)
    heat = fig.data[0]
    np.testing.assert_array_equal(np.asarray(heat.z), rec.arrays["mask_crop"])
    np.testing.assert_array_equal(np.asarray(heat.x), rec.arrays["crop_cols"])
    np.testing.assert_array_equal(np.asarray(heat.y), rec.arrays["crop_rows"])
    labels = [t.name for t in fig.data if t.showlegend is not False and t.type == "scatter"]  # the codes' legend
    assert "pruned only by wanda" in labels and "pruned only by magnitude" in labels
    assert not any("method" in s or "reference" in s for s in labels)
    bars = fig.data[1]
    np.testing.assert_allclose(bars.y, rec.arrays["channel_norms"][rec.arrays["crop_cols"]])
    assert bars.yaxis == "y2"
    # The crop is centred on the channel with the largest activation norm.
    assert int(np.argmax(rec.arrays["channel_norms"])) in set(rec.arrays["crop_cols"].tolist())
    # its label never widens the axis beyond the crop's own columns (print sizes make text relatively wide)
    cols = rec.arrays["crop_cols"]
    assert list(fig.layout.xaxis.range) == [cols[0] - 0.5, cols[-1] + 0.5]


# ---------------------------------------------------------------- whole run

def test_sparsity_heatmap_is_block_by_matrix(records):
    # Row-wise Wanda prunes exactly 50% everywhere; give each record its own value so a misplaced cell shows.
    assert all(r.sparsity == pytest.approx(0.5) for r in records)
    records = [dataclasses.replace(r, sparsity=0.4 + i / 100) for i, r in enumerate(records)]
    fig = F.sparsity_heatmap(records)
    heat = fig.data[0]
    names = list(dict.fromkeys(r.name for r in records))
    blocks = sorted({r.block for r in records})
    assert list(heat.x) == names and list(heat.y) == blocks
    z = np.asarray(heat.z, dtype=float)
    assert z.shape == (len(blocks), len(names))
    for r in records:
        assert z[blocks.index(r.block), names.index(r.name)] == pytest.approx(r.sparsity)
    assert "wanda" in fig.layout.title.text and "row" in fig.layout.title.text


def test_overlap_heatmap_is_the_jaccard(records):
    fig = F.overlap_heatmap(records)
    heat = fig.data[0]
    names, blocks = list(heat.x), list(heat.y)
    z = np.asarray(heat.z, dtype=float)
    for r in records:
        assert z[blocks.index(r.block), names.index(r.name)] == pytest.approx(r.overlap.jaccard)
    assert "magnitude" in fig.layout.title.text  # the reference of a wanda run
    assert heat.zmin == 0 and heat.zmax == 1


def test_block_progress_from_records_live_events_and_nothing(pruned):
    blocks = pruned.blocks
    fig = F.block_progress(blocks)
    assert list(fig.data[0].x) == [b.block for b in blocks]
    np.testing.assert_allclose(fig.data[0].y, [b.sparsity for b in blocks])
    np.testing.assert_allclose(fig.data[1].y, [b.block_error for b in blocks])
    # a running job's blocks: the BlockFinished events it has seen so far
    live = F.block_progress([BlockFinished(b.seconds, b.block, len(blocks), b.sparsity, b.block_error, b.sparsity)
                             for b in blocks])
    np.testing.assert_allclose(live.data[1].y, fig.data[1].y)
    empty = F.block_progress([])
    assert all(len(t.x) == 0 for t in empty.data)
    assert empty.layout.xaxis2.title.text == "block"
    assert isinstance(blocks[0], BlockRecord)


def test_perplexity_bars_one_per_run_plus_dense():
    runs = [_run("r1", "wanda", 0.5, 14.2), _run("r2", "magnitude", 0.5, 51.0),
            _run("r3", "wanda", 0.5, 15.0, variant=True), _run("r4", "sparsegpt", 0.5, 13.1, pattern="2:4"),
            _run("r5", "wanda", 0.6, None)]
    fig = F.perplexity_bars(runs)
    assert len(fig.data) == 1
    bar = fig.data[0]
    assert list(bar.x) == ["dense", "wanda 50%", "magnitude 50%", "wanda-variant 50%", "sparsegpt 2:4"]
    assert list(bar.y) == [10.0, 14.2, 51.0, 15.0, 13.1]
    assert list(bar.text) == ["10.00", "14.20", "51.00", "15.00", "13.10"]
    assert "r2" in bar.customdata[2]
    title = _title(fig)
    assert "Emma (Austen)" in title and "128" in title and "512" in title and "left out" in title
    assert F.perplexity_bars(runs, log_y=True).layout.yaxis.type == "log"

    mixed = F.perplexity_bars([runs[0], runs[1], _run("r6", "wanda", 0.5, 30.0, dense=20.0, seqlen=256)])
    assert len(mixed.data) == 2  # one group per evaluation setting, each with its dense bar
    first, second = mixed.data
    assert list(first.y) == [10.0, 14.2, 51.0] and list(second.y) == [20.0, 30.0]
    assert list(second.x[1]) == ["dense", "wanda 50%"] and len(set(second.x[0])) == 1


def test_perplexity_vs_sparsity_lines_per_method():
    runs = [_run("a", "wanda", 0.6, 30.0), _run("b", "wanda", 0.5, 14.0), _run("c", "magnitude", 0.5, 50.0),
            _run("d", "wanda", 0.7, 99.0, seqlen=256)]
    fig = F.perplexity_vs_sparsity(runs)
    wanda = next(t for t in fig.data if t.name == "wanda")
    assert list(wanda.x) == [0.5, 0.6] and list(wanda.y) == [14.0, 30.0]  # sorted, run d left out
    dense = next(t for t in fig.data if t.name.startswith("dense"))
    assert set(dense.y) == {10.0} and dense.line.dash == "dash"
    assert fig.layout.yaxis.type == "log"
    assert "Emma (Austen)" in _title(fig) and "left out" in _title(fig)
    assert len(F.perplexity_vs_sparsity([]).data) == 0


def test_lines_take_their_methods_look_from_the_one_table():
    """Colour, dash and marker per method from the table of methods, whatever figure draws the line; a second
    line of the same method keeps its colour and changes dash and marker (greyscale print tells them apart)."""
    from wanda_engine.methods import table

    METHOD_STYLES = {choice: table.look(choice) for choice in table.choices()}

    runs = [_run("a", "wanda", 0.5, 14.0), _run("b", "magnitude", 0.5, 50.0), _run("c", "wanda", 0.5, 16.0,
                                                                                   pattern="2:4")]
    lines = {t.name: t for t in F.perplexity_vs_sparsity(runs).data}
    for name, method in (("wanda", "wanda"), ("magnitude", "magnitude")):
        look = METHOD_STYLES[method]
        assert (lines[name].line.color, lines[name].line.dash, lines[name].marker.symbol) == (
            look.colour, look.dash, look.symbol)
    nm = lines["wanda 2:4"]
    assert nm.line.color == METHOD_STYLES["wanda"].colour
    assert (nm.line.dash, nm.marker.symbol) != (METHOD_STYLES["wanda"].dash, METHOD_STYLES["wanda"].symbol)
    bars = F.perplexity_bars(runs).data[0]
    assert list(bars.marker.color)[1:] == [METHOD_STYLES[m].colour for m in ("wanda", "magnitude", "wanda")]


# ---------------------------------------------------------------- data, config, import cost

def test_figure_data_long_form_for_every_figure(records, rec, pruned):
    runs = [_run("r1", "wanda", 0.5, 14.2), _run("r2", "magnitude", 0.5, 51.0)]
    figs = [F.metric_histograms(rec), F.channel_norms(rec), F.sparsity_heatmap(records), F.row_sparsity(rec),
            F.density_map(rec), F.overlap_heatmap(records), F.mask_crop(rec), F.block_progress(pruned.blocks),
            F.perplexity_bars(runs), F.perplexity_vs_sparsity(runs)]
    for fig in figs:
        assert isinstance(fig, go.Figure) and fig.layout.title.text
        df = F.figure_data(fig)
        assert len(df) > 0 and list(df.columns) == ["trace", "type", "x", "y", "z", "text"]
    heat = F.figure_data(F.sparsity_heatmap(records))
    assert len(heat) == len(records)
    assert sorted(heat["z"].astype(float)) == pytest.approx(sorted(r.sparsity for r in records))
    crop = F.figure_data(F.mask_crop(rec))
    cells = crop[crop["type"] == "heatmap"]
    assert len(cells) == rec.arrays["mask_crop"].size and cells["text"].notna().all()
    bars = F.figure_data(F.perplexity_bars(runs))
    assert list(bars["y"]) == [10.0, 14.2, 51.0]


def test_figures_import_without_torch_or_streamlit():
    code = ("import sys, wanda_engine.outputs.figures, wanda_engine.outputs.explain; bad = {'torch', 'streamlit'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ---------------------------------------------------------------- the Explain page's steps

def _explain_run() -> RunRecord:
    run = _run("explained", "wanda", 0.5, 14.2)
    return dataclasses.replace(run, calibration=dataclasses.replace(run.calibration, label="austen:emma", nsamples=4,
                                                                    seqlen=32))


def test_explain_toy_figure_moves_with_the_outlier():
    from wanda_engine.outputs import explain

    quiet, loud = explain.toy(1), explain.toy(60)
    figs = [F.explain_toy(t) for t in (quiet, loud)]
    for fig, t in zip(figs, (quiet, loud)):
        heat = [tr for tr in fig.data if tr.type == "heatmap"]
        assert [np.asarray(h.z).astype(bool).tolist() for h in heat] == [t.masks["magnitude"].tolist(),
                                                                       t.masks["wanda"].tolist()]
        # each mask's error stands in its matrix's title (issue 19: no side panel whose ticks sit on the matrix)
        titles = [a.text.replace("<br>", " ") for a in fig.layout.annotations]
        assert [f"error {explain.number(t.errors[m])}" in titles[i] for i, m in enumerate(("magnitude", "wanda"))] \
            == [True, True]
        assert fig.layout.font.size >= 18 and fig.layout.title.font.size >= 22  # projector size
    assert "60× louder" in figs[1].layout.title.text
    assert (quiet.masks["wanda"] != loud.masks["wanda"]).any()  # the slider moves Wanda's mask, and the figure
    assert figs[0].to_plotly_json()["data"] != figs[1].to_plotly_json()["data"]


def test_explain_figures_draw_exactly_the_evidence(records):
    from wanda_engine.outputs import explain

    run = _explain_run()
    outliers, cuts, share = (explain.outliers(records, run), explain.outlier_cuts(records, run),
                             explain.error_share(records, run))
    fig = F.explain_outliers(outliers)
    lines = {(tr.name, tr.yaxis): list(tr.y) for tr in fig.data}
    # q, k and v read the same input: one line, named for all three (issue 19: no line hidden under another)
    assert outliers.ratio["self_attn.k_proj"] == outliers.ratio[records[0].name]
    assert lines[("self_attn.q/k/v_proj", "y")] == outliers.ratio[records[0].name]
    assert lines[("self_attn.q/k/v_proj", "y2")] == outliers.share[records[0].name]
    fig = F.explain_cuts(cuts)
    # each legend names the mask with its group (issue 19 item 7): 'magnitude, per matrix', 'Wanda, per output row'
    assert {tr.name: list(tr.x) for tr in fig.data} == {cuts.labels["magnitude"]: cuts.pruned["magnitude"],
                                                        cuts.labels["wanda"]: cuts.pruned["wanda"]}
    assert list(fig.data[0].y) == cuts.matrices
    fig = F.explain_error_share(share)
    curves = {tr.name: tr for tr in fig.data if tr.name in share.labels.values()}
    assert np.allclose(curves[share.labels["magnitude"]].y, share.cumulative["magnitude"])
    assert curves[share.labels["wanda"]].y[-1] == pytest.approx(1.0)
    marks = [tr for tr in fig.data if tr.mode == "markers+text"]
    assert [m.y[0] for m in marks] == [share.top1pct["magnitude"], share.top1pct["wanda"]]
    for fig in (F.explain_outliers(outliers), F.explain_cuts(cuts), F.explain_error_share(share)):
        assert fig.layout.title.text and fig.layout.font.size >= 18 and len(F.figure_data(fig)) > 0


def test_explain_protect_figure_has_the_references():
    from wanda_engine.outputs import explain

    ev = explain.Intervention([0.0, 0.001, 0.01], [300.0, 200.0, 60.0], ["plain", "p01", "p1"], 40.0, 20.0,
                              "austen:prideprejudice, 2 windows × 64 tokens = 128 tokens", "s")
    fig = F.explain_protect(ev)
    assert list(fig.data[0].x) == ["0 (plain)", "0.1%", "1%"] and list(fig.data[0].y) == ev.ppl
    assert {tr.name: tr.y[0] for tr in fig.data[1:]} == {"Wanda": 40.0, "dense": 20.0}
    assert "128 tokens" in fig.layout.title.subtitle.text and fig.layout.yaxis.type == "log"
    alone = F.explain_protect(dataclasses.replace(ev, protect=[0.0], ppl=[300.0], runs=["plain"], wanda=None))
    assert len(alone.data) == 2  # plain magnitude and the dense line


# ---------------------------------------------------------------- export

def _chromium() -> bool:
    return Path("/usr/bin/chromium").exists() or any(
        shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))


@pytest.mark.slow
def test_plotly_config_exports_svg(rec, monkeypatch):
    """The camera button on every chart of the app downloads an SVG of the configured size: ui.chart hands
    st.plotly_chart the config, and plotly.js renders its toImage options to that SVG."""
    import streamlit as st

    from app import ui
    from wanda_engine.outputs.export import export_figure

    handed = {}
    monkeypatch.setattr(st, "plotly_chart", lambda fig, config=None, key=None: handed.update(fig=fig, config=config))
    ui.chart(F.row_sparsity(rec), key="k")
    assert handed["config"]["displaylogo"] is False  # no link out to plotly's site
    if not _chromium():
        pytest.skip("no Chromium installed (/usr/bin/chromium)")
    opts = handed["config"]["toImageButtonOptions"]
    image = export_figure(handed["fig"], opts["format"], width=opts["width"], height=opts["height"], scale=opts["scale"])
    assert image.lstrip().startswith(b"<svg"), image[:80]
    assert f'width="{opts["width"]}" height="{opts["height"]}"'.encode() in image[:2000]


def test_export_rejects_unknown_format(rec):
    from wanda_engine.outputs.export import export_figure

    with pytest.raises(ValueError, match="png, svg, pdf"):
        export_figure(F.row_sparsity(rec), "jpg")


@pytest.mark.slow
def test_export_png_svg_pdf_with_and_without_server(records, rec):
    if not _chromium():
        pytest.skip("no Chromium installed (/usr/bin/chromium)")
    from wanda_engine.outputs import export as E

    fig = F.sparsity_heatmap(records)
    before = fig.to_plotly_json()
    E.stop_export_server()
    png = E.export_figure(fig, "png", width=600, height=400, scale=1)  # one-shot browser
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 600  # IHDR width at scale 1
    try:
        E.start_export_server()
        E.start_export_server()  # idempotent
        assert E.export_server_running()
        svg = E.export_figure(F.mask_crop(rec), "svg")
        assert b"<svg" in svg[:2000]
        pdf = E.export_figure(fig, "PDF")
        assert pdf[:5] == b"%PDF-"
    finally:
        E.stop_export_server()
        E.stop_export_server()
    assert not E.export_server_running()
    assert fig.to_plotly_json() == before  # export styles a copy
    assert E.MIME["svg"] == "image/svg+xml" and E.FORMATS == ("png", "svg", "pdf")
