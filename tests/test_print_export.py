"""Figures at print size: every figure the app draws, in every preset, styled for a paper (fonts in points,
physical size, no baked-in title, the legend above the plot); a few rendered through kaleido and read back
(PNG pixels = inches × dpi, PDF page = inches × 72 pt with its fonts embedded, SVG width in inches)."""
from __future__ import annotations

import dataclasses
import io
import re
import struct

import plotly.graph_objects as go
import pytest
import torch

from wanda_engine.outputs import explain
from wanda_engine.outputs import figures as F
from wanda_engine.config import PruneConfig
from wanda_engine.core.errors import ConfigError
from wanda_engine.outputs.figures import paper
from wanda_engine.outputs.figures.paper import PRESETS, PrintPreset, paper_figure, print_preset, suggested_caption
from wanda_engine.methods import table
from wanda_engine.outputs.figures.style import base_method, method_style
from wanda_engine.store.run_record import RunRecord


def _run(name: str, method: str, sparsity: float, ppl: float, *, nsamples: int = 16, protect: float = 0.0,
         pattern: str = "unstructured", accuracy: float | None = None) -> RunRecord:
    zeroshot = None
    if accuracy is not None:
        def results(acc: float) -> dict:
            return {"results": {task: {"acc": acc - k / 50, "acc_stderr": 0.02, "n": 200}
                                for k, task in enumerate(("boolq", "rte"))}}
        zeroshot = {"harness": "0.4.13", "config": {"num_fewshot": 0, "limit": 200},
                    "dense": results(0.7), "pruned": results(accuracy)}
    return RunRecord.from_json({
        "name": name, "status": "complete", "ppl": ppl, "ppl_dense": 10.0, "sparsity": sparsity, "zeroshot": zeroshot,
        "config": {"method": method, "pattern": pattern, "target_sparsity": sparsity, "sparsity": sparsity,
                   "nsamples": nsamples, "seqlen": 128, "protect_channels": protect},
        "eval": {"dataset": "austen:prideprejudice", "seqlen": 128, "windows": 4, "tokens": 512}})


@pytest.fixture(scope="module")
def pruned():
    from conftest import tiny_model

    from wanda_engine.pruning.pipeline import prune_model

    torch.manual_seed(1)
    windows = torch.randint(0, 512, (4, 32))
    config = PruneConfig(method="wanda", nsamples=4, seqlen=32, batch_size=4, device="cpu", layerwise="owl")
    return prune_model(tiny_model("llama"), windows, config)


@pytest.fixture(scope="module")
def shrunk():
    """What a width remover (FLAP, every block's scores competing) and a depth remover took out of a tiny LLaMA."""
    from conftest import tiny_model

    from wanda_engine.pruning.pipeline import prune_model

    torch.manual_seed(1)
    windows = torch.randint(0, 512, (4, 32))
    width, depth = (prune_model(tiny_model("llama"), windows, PruneConfig(
        method=method, sparsity=ratio, nsamples=4, seqlen=32, batch_size=4, device="cpu", **kw)).structure
        for method, ratio, kw in (("flap", 0.25, dict(allocation="global", bias_compensation=True)),
                                  ("block-influence", 0.5, {})))  # one of the tiny model's two blocks
    return width, depth


@pytest.fixture(scope="module")
def every_figure(pruned, shrunk) -> dict[str, go.Figure]:
    """Every figure function of the app's pages (Layers, Sparsity, Masks, Perplexity, Sweep, Zero-shot, Explain,
    Shrink)."""
    from test_frontier import frontier_records
    records, rec = pruned.records, pruned.records[0]
    runs = [_run(f"{m}-{s}", m, s, base * (1 + 4 * (s - 0.5)), accuracy=0.7 - s / 2)
            for m, base in (("wanda", 12.0), ("magnitude", 30.0), ("sparsegpt", 11.0)) for s in (0.4, 0.5, 0.6)]
    runs.append(_run("mag-protect", "magnitude", 0.5, 20.0, protect=0.01, accuracy=0.6))
    by_n = [_run(f"{m}-n{n}", m, 0.5, base * (1 + 8 / n), nsamples=n)
            for m, base in (("wanda", 12.0), ("sparsegpt", 11.0)) for n in (8, 16, 32, 64)]
    blocks = pruned.blocks
    assert all(b.outlier_ratio is not None for b in blocks)  # OWL's figure has its ratios to draw
    toy = explain.toy(30)
    story = dataclasses.replace(runs[0], calibration=dataclasses.replace(runs[0].calibration, label="austen:emma",
                                                                         nsamples=4, seqlen=32))
    protect = explain.Intervention([0.0, 0.001, 0.01], [300.0, 200.0, 60.0], ["p0", "p01", "p1"], 40.0, 20.0,
                                   "austen:prideprejudice, 2 windows × 64 tokens = 128 tokens", "s")
    return {
        "histograms": F.metric_histograms(rec), "channels": F.channel_norms(rec), "rows": F.row_sparsity(rec),
        "density": F.density_map(rec), "mask_crop": F.mask_crop(rec), "sparsity": F.sparsity_heatmap(records),
        "overlap": F.overlap_heatmap(records), "blocks": F.block_progress(blocks),
        "owl": F.owl_block_ratios(blocks, PruneConfig(layerwise="owl")), "bars": F.perplexity_bars(runs[1:5]),
        "sweep": F.perplexity_vs_sparsity(runs), "nsamples": F.perplexity_vs_nsamples(by_n),
        "zeroshot": F.zeroshot_bars(runs[1:3] + runs[-1:]), "toy": F.explain_toy(toy),
        "outliers": F.explain_outliers(explain.outliers(records, story)),
        "cuts": F.explain_cuts(explain.outlier_cuts(records, story)),
        "error_share": F.explain_error_share(explain.error_share(records, story)),
        "protect": F.explain_protect(protect),
        "zeros": F.zeros_where([("wanda", records), ("owl", records)], records[-1].name),
        "heads_kept": F.heads_kept(shrunk[0]), "kept_per_block": F.kept_per_block(shrunk[0]),
        "structure_scores": F.structure_scores(shrunk[0]), "removed_blocks": F.removed_blocks(shrunk[1]),
        "frontier": F.frontier(frontier_records(), "prefill"),
    }


# the figure functions drawn above, by the names `figures` exports them under (issue 14's repair figures
# need repair records and are checked in its own tests)
DRAWN = {"metric_histograms", "channel_norms", "row_sparsity", "density_map", "mask_crop", "sparsity_heatmap",
         "overlap_heatmap", "block_progress", "owl_block_ratios", "perplexity_bars", "perplexity_vs_sparsity",
         "perplexity_vs_nsamples", "zeroshot_bars", "explain_toy", "explain_outliers", "explain_cuts",
         "explain_error_share", "explain_protect", "zeros_where", "heads_kept", "kept_per_block",
         "structure_scores", "removed_blocks", "frontier"}


def test_every_figure_function_is_drawn():
    not_figures = {"PLOTLY_CONFIG", "ZEROSHOT_METRICS", "figure_data", "zeroshot_table"}
    exported = {name for name in F.__all__ if name not in not_figures and not name.startswith("repair_")}
    assert exported == DRAWN


# ---------------------------------------------------------------- presets

def test_presets_are_the_issue_sizes():
    assert PRESETS["one-column"].width_in == 3.25 and PRESETS["two-column"].width_in == 6.75
    slide = PRESETS["slide"]
    assert slide.width_in == 10 and slide.height_in / slide.width_in == pytest.approx(9 / 16)
    for name in ("one-column", "two-column"):
        assert (PRESETS[name].body_pt, PRESETS[name].title_pt) == (8, 9)
    assert PRESETS["poster"].body_pt > PRESETS["slide"].body_pt > PRESETS["two-column"].body_pt
    p = PRESETS["one-column"]
    assert p.width_px == pytest.approx(3.25 * 96) and p.body_px == pytest.approx(8 * 96 / 72)


def test_custom_sizes_in_inches_and_centimetres():
    cm = print_preset("one-column", width=8.0, unit="cm")
    assert cm.name == "custom" and cm.width_in == pytest.approx(8 / 2.54, abs=1e-4)
    base = PRESETS["one-column"]
    assert cm.height_in / cm.width_in == pytest.approx(base.height_in / base.width_in, rel=1e-3)
    assert cm.body_pt == base.body_pt
    both = print_preset("custom", width=5, height=2)
    assert (both.width_in, both.height_in, both.body_pt) == (5, 2, PRESETS["two-column"].body_pt)
    assert print_preset("poster") is PRESETS["poster"]


@pytest.mark.parametrize("kwargs, field", [({"name": "a4"}, "preset"), ({"width": -1}, "width"),
                                            ({"height": float("nan")}, "height"), ({"width": 3, "unit": "mm"}, "unit"),
                                            ({"width": True}, "width"), ({"width": 100}, "width"),
                                            ({"name": "custom"}, "custom"), ({"height": 0.5, "unit": "in"}, "height")])
def test_bad_sizes_raise_one_sentence(kwargs, field):
    with pytest.raises(ConfigError, match=field) as err:
        print_preset(**kwargs)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


# ---------------------------------------------------------------- the paper style, in the dict

def _fonts(d: dict) -> list[tuple[str, float]]:
    """Every explicit font size in a figure dict's layout and traces (the template aside), with its key."""
    sizes: list[tuple[str, float]] = []

    def walk(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "template":
                    continue
                if k in ("font", "tickfont", "textfont") and isinstance(v, dict) and "size" in v:
                    sizes.append((k, v["size"]))
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)

    walk(d["layout"])
    walk(d["data"])
    return sizes


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_figure_in_every_preset(every_figure, name):
    p = PRESETS[name]
    pt = 96 / 72
    for fig_name, fig in every_figure.items():
        before = fig.to_json()
        d = paper_figure(fig, p)
        assert fig.to_json() == before, fig_name  # a copy is styled
        layout = d["layout"]
        assert (layout["width"], layout["height"]) == (pytest.approx(p.width_in * 96), pytest.approx(p.height_in * 96))
        assert layout["font"]["size"] == pytest.approx(p.body_pt * pt, abs=0.01)
        assert not layout["title"].get("text"), fig_name  # the title is the caption's, not the figure's
        sizes = _fonts(d)
        # labels among the data (heatmap cells) may shrink to fit their cells, never below 5 pt
        assert sizes and all((paper.MIN_TEXT_PT if k == "textfont" else 0.8 * p.body_pt) * pt - 0.01 <= s
                             <= p.title_pt * pt + 0.01 for k, s in sizes), (fig_name, sizes)
        axes = [k for k in layout if re.fullmatch(r"[xy]axis\d*", k)]
        assert axes, fig_name
        for key in axes:
            assert layout[key]["tickfont"]["size"] == pytest.approx(p.body_pt * pt, abs=0.01)
            assert layout[key]["title"]["font"]["size"] == pytest.approx(p.title_pt * pt, abs=0.01)
        legend = layout.get("legend")
        if legend and legend.get("orientation") == "h":
            assert legend["yanchor"] == "top" and legend["yref"] == "container"
            assert legend["y"] * p.height_px > p.height_px - layout["margin"]["t"]  # in the top margin, off the data
        for tr in d["data"]:
            if tr["type"] == "scatter" and "lines" in tr.get("mode", "lines") and "line" in tr:
                assert 0.25 * p.line_px <= tr["line"]["width"] <= 1.5 * p.line_px + 0.01, fig_name
        assert suggested_caption(fig) and "<" not in suggested_caption(fig)
        assert re.sub(r"\W", "", paper.plain_text(fig.layout.title.text)) in re.sub(r"\W", "", suggested_caption(fig))


def test_keep_title_sets_it_at_print_size(every_figure):
    p = PRESETS["two-column"]
    d = paper_figure(every_figure["sweep"], p, keep_title=True)
    assert d["layout"]["title"]["text"].startswith("Perplexity versus sparsity")
    assert d["layout"]["title"]["font"]["size"] == pytest.approx(p.title_px, abs=0.01)
    assert d["layout"]["margin"]["t"] > paper_figure(every_figure["sweep"], p)["layout"]["margin"]["t"]


def test_suggested_caption_is_plain_text():
    fig = go.Figure(layout={"title": {"text": "Norms ‖X<sub>j</sub>‖<sub>2</sub> of<br>block 0 &amp; 1",
                                      "subtitle": {"text": "4\u00a0windows × 128 tokens"}}})
    assert suggested_caption(fig) == "Norms ‖Xⱼ‖₂ of block 0 & 1. 4 windows × 128 tokens."
    assert suggested_caption(go.Figure()) == ""
    # what the title names, the caption names once
    said_twice = go.Figure(layout={"title": {"text": "Perplexity on austen:prideprejudice",
                                             "subtitle": {"text": "austen:prideprejudice, 4 windows × 256 tokens"}}})
    assert suggested_caption(said_twice) == "Perplexity on austen:prideprejudice. 4 windows × 256 tokens."
    kept = go.Figure(layout={"title": {"text": "Perplexity", "subtitle": {"text": "austen:emma, 4 windows"}}})
    assert suggested_caption(kept) == "Perplexity. austen:emma, 4 windows."


def test_a_method_keeps_its_look_in_every_figure(every_figure):
    METHOD_STYLES = {choice: table.look(choice) for choice in table.choices()}  # the table of methods' looks
    for label, base in (("wanda+obs", "wanda"), ("magnitude+protect1% 50%", "magnitude"), ("wanda 2:4", "wanda"),
                        ("owl-wanda 70%", "wanda"), ("wanda-variant", "wanda-variant"), ("sparsegpt (n=32)", "sparsegpt")):
        assert base_method(label) == base
        assert method_style(label).colour == METHOD_STYLES[base].colour
    looks = list(METHOD_STYLES.values())
    assert len({s.colour for s in looks}) == len({(s.dash, s.symbol) for s in looks}) == len(looks)
    seen: dict = {}
    first, second = method_style("wanda 50%", seen), method_style("wanda 60%", seen)
    assert first.colour == second.colour and (first.dash, first.symbol) != (second.dash, second.symbol)
    colour_of = {}
    for fig in every_figure.values():
        for tr in fig.data:
            if tr.type == "scatter" and tr.name and base_method(tr.name) in METHOD_STYLES and tr.line.color:
                colour_of.setdefault(base_method(tr.name), set()).add(tr.line.color)
            if tr.type == "bar" and tr.name and base_method(tr.name) in METHOD_STYLES and isinstance(tr.marker.color, str):
                colour_of.setdefault(base_method(tr.name), set()).add(tr.marker.color)
    assert {"wanda", "magnitude", "sparsegpt"} <= set(colour_of)
    assert all(colours == {METHOD_STYLES[m].colour} for m, colours in colour_of.items()), colour_of


# ---------------------------------------------------------------- through kaleido (slow: a browser)

def _chromium() -> bool:
    from pathlib import Path

    return Path("/usr/bin/chromium").exists()


@pytest.fixture(scope="module")
def server():
    if not _chromium():
        pytest.skip("no Chromium installed (/usr/bin/chromium)")
    from wanda_engine.outputs import export as E

    E.start_export_server()
    yield E
    E.stop_export_server()


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def _pdf_page(pdf: bytes):
    import pypdf

    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    return reader.pages[0]


STANDARD_14 = {"Courier", "Helvetica", "Times-Roman", "Symbol", "ZapfDingbats"}


def _fonts_embedded_or_standard(page) -> dict[str, bool]:
    """Each font of the page: embedded (a FontFile in its descriptor, or its descendant's) or one of the 14."""
    found = {}
    for font in (page["/Resources"].get("/Font") or {}).values():
        font = font.get_object()
        name = str(font.get("/BaseFont", "")).lstrip("/")
        descriptor = font.get("/FontDescriptor")
        if descriptor is None and font.get("/DescendantFonts"):
            descriptor = font["/DescendantFonts"][0].get_object().get("/FontDescriptor")
        embedded = descriptor is not None and any(k in descriptor.get_object()
                                                  for k in ("/FontFile", "/FontFile2", "/FontFile3"))
        found[name] = embedded or name.split("-")[0] in STANDARD_14
    return found


@pytest.mark.slow
@pytest.mark.parametrize("fig_name, preset, dpi", [("sweep", "one-column", 300), ("histograms", "two-column", 600),
                                                   ("mask_crop", "slide", 150)])
def test_kaleido_print_sizes(every_figure, server, fig_name, preset, dpi):
    p = print_preset(preset)
    fig = every_figure[fig_name]
    png = server.export_figure(fig, "png", preset=p, dpi=dpi)
    assert _png_size(png) == (round(p.width_in * dpi), round(p.height_in * dpi))
    page = _pdf_page(server.export_figure(fig, "pdf", preset=preset))
    assert (float(page.mediabox.width), float(page.mediabox.height)) == (
        pytest.approx(p.width_in * 72, abs=0.01), pytest.approx(p.height_in * 72, abs=0.01))
    fonts = _fonts_embedded_or_standard(page)
    assert fonts and all(fonts.values()), fonts
    axis_title = paper.plain_text(fig.layout.xaxis.title.text or fig.layout.xaxis2.title.text)
    assert axis_title.split()[0] in page.extract_text()  # text kept as text, not outlines
    svg = server.export_figure(fig, "svg", preset=p)
    head = svg[:svg.index(b">") + 1].decode()
    assert f'width="{p.width_in:g}in"' in head and f'height="{p.height_in:g}in"' in head
    view_box = re.search(r'viewBox="([^"]+)"', head)
    assert view_box, head
    x0, y0, width, height = (float(v) for v in view_box.group(1).split())
    assert (x0, y0) == (0, 0) and (width, height) == (pytest.approx(p.width_px, abs=0.5), pytest.approx(p.height_px, abs=0.5))


@pytest.mark.slow
def test_kaleido_custom_centimetres_and_the_title_kept(every_figure, server):
    p = print_preset("one-column", width=8.5, unit="cm")
    png = server.export_figure(every_figure["bars"], "png", preset=p, dpi=300)
    assert _png_size(png) == (round(8.5 / 2.54 * 300), round(p.height_in * 300))
    page = _pdf_page(server.export_figure(every_figure["bars"], "pdf", preset=p, keep_title=True))
    assert float(page.mediabox.width) == pytest.approx(8.5 / 2.54 * 72, abs=0.01)
    assert "Perplexity" in page.extract_text()
    no_title = _pdf_page(server.export_figure(every_figure["bars"], "pdf", preset=p)).extract_text()
    assert "Perplexity on" not in no_title


def test_export_with_a_preset_checks_its_inputs(every_figure):
    from wanda_engine.outputs import export as E

    with pytest.raises(ConfigError, match="dpi"):
        E.export_figure(every_figure["sweep"], "png", preset="one-column", dpi=10)
    with pytest.raises(ConfigError, match="preset"):
        E.export_figure(every_figure["sweep"], "png", preset="a4")
    with pytest.raises(ConfigError, match="preset"):
        E.export_figure(every_figure["sweep"], "png", preset=3.25)  # type: ignore[arg-type]
    assert isinstance(PRESETS["slide"], PrintPreset)


# ---------------------------------------------------------------- the app's controls

def _controls_app():
    import plotly.graph_objects as go

    from app.export_controls import export_controls

    fig = go.Figure(go.Scatter(x=[0.4, 0.5], y=[12.0, 30.0], name="wanda"),
                    layout={"title": {"text": "Perplexity versus sparsity", "subtitle": {"text": "4 × 128 tokens"}}})
    export_controls(fig, "sweep figure", "exp")


def _app_test():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_controls_app, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_controls_offer_the_presets_and_the_caption():
    at = _app_test()
    size = at.selectbox(key="exp_size")
    assert size.value == "two-column" and set(size.options) >= {
        "one-column (3.25 × 2.4 in)", "two-column (6.75 × 3 in)", "slide (10 × 5.625 in)", "custom", "screen (pixels)"}
    assert at.number_input(key="exp_dpi").value == 300 and at.checkbox(key="exp_title").value is False
    assert [c.value for c in at.code] == ["Perplexity versus sparsity. 4 × 128 tokens."]
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Data as CSV" in labels and "Data as JSON" in labels
    at.checkbox(key="exp_title").check().run()
    assert not at.code  # the title stays on the figure: no caption to copy
    size.set_value("custom").run()
    at.selectbox(key="exp_unit").set_value("cm").run()
    assert at.number_input(key="exp_cw_cm").value == pytest.approx(3.25 * 2.54)
    at.selectbox(key="exp_size").set_value("screen (pixels)").run()
    assert not at.exception
    assert (at.number_input(key="exp_w").value, at.number_input(key="exp_h").value) == (1000, 600)


@pytest.mark.slow
def test_controls_render_a_print_size_png():
    if not _chromium():
        pytest.skip("no Chromium installed (/usr/bin/chromium)")
    at = _app_test()
    at.selectbox(key="exp_size").set_value("one-column").run()
    at.button(key="exp_render").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    label = next(b.proto.label for b in at.get("download_button") if b.proto.label.startswith("Download PNG"))
    assert "KB" in label


@pytest.mark.slow
def test_the_kept_open_browser_draws_as_a_fresh_one(every_figure, server):
    """The kept-open tabs are reloaded only every RELOAD_EVERY renders: nothing of one render reaches the next."""
    a, b = every_figure["sweep"], every_figure["bars"]
    first = server.export_figure(a, "png", preset="one-column")
    for i in range(server.RELOAD_EVERY + 1):  # through a reload of each tab
        server.export_figure(b if i % 2 else a, ("svg", "pdf", "png")[i % 3], preset="one-column", dpi=100)
    assert server.export_figure(a, "png", preset="one-column") == first
    server.stop_export_server()  # the last test of the module that exports: no restart needed
    assert server.export_figure(a, "png", preset="one-column") == first  # a browser for this export alone


def test_a_legend_that_leaves_no_room_for_the_plot_is_refused_in_one_sentence():
    """Plotly's export fails with an unexplained "axis scaling" error when the legend's rows take the whole height."""
    fig = go.Figure([go.Scatter(x=[0, 1], y=[1, 2], name=f"a run with a long label number {k}") for k in range(12)])
    with pytest.raises(ConfigError, match="the legend's 12 entries leave no room for the plot at one-column size"):
        paper_figure(fig, PRESETS["one-column"])
    fig.data = fig.data[:3]
    assert paper_figure(fig, PRESETS["one-column"])["layout"]["height"] == pytest.approx(PRESETS["one-column"].height_px)
