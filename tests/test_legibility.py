"""Every figure legible at its size: each figure the project draws (the catalog's for a comparison and a sweep,
Explain's, Repair's), exported as SVG by the project's own export at every print preset and at the sizes the app
shows it, is measured in headless Chromium: no two texts on top of each other, none cut off at the canvas' edge,
no axis text on a plot's data (tests/helpers/legibility.py says how).

The figures are drawn from real runs of the embedded model (tests/helpers/figure_cases.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.headless import CHROMIUM, CHROMIUM_ARGS
from helpers.legibility import Measurer, penetration, problems
from wanda_engine.outputs import export
from wanda_engine.outputs.figures.paper import PRESETS
from wanda_engine.outputs.figures.style import PLOTLY_CONFIG, on_screen

if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

SCREEN_HEIGHT_PX = 450  # plotly's own height, which Streamlit keeps for a figure that sets none
MODEBAR_SVG = PLOTLY_CONFIG["toImageButtonOptions"]  # the chart's own download button: 900 × 600


@pytest.fixture(scope="module")
def measurer():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield Measurer(browser.new_page())
        finally:
            browser.close()


def _svg(texts: str, width: int = 200, height: int = 100) -> tuple[str, bytes]:
    return "hand-made", (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                         f'viewBox="0 0 {width} {height}">{texts}</svg>').encode()


def test_the_measure_finds_overlaps_rotated_boxes_and_text_off_the_canvas(measurer):
    clean = _svg('<text x="10" y="20" font-size="12">alpha</text><text x="10" y="50" font-size="12">beta</text>')
    assert measurer.measure([clean]) == []
    on_top = _svg('<text x="10" y="20" font-size="12">alpha</text><text x="20" y="22" font-size="12">beta</text>')
    found = measurer.measure([on_top])
    assert len(found) == 1 and found[0].startswith("hand-made: 'alpha' overlaps 'beta' by ")
    cut = _svg('<text x="170" y="20" font-size="12">off the edge</text>')
    assert len(measurer.measure([cut])) == 1 and "leaves the 200×100 canvas" in measurer.measure([cut])[0]
    # two labels rotated 45°, 12 px apart: their upright boxes would intersect, the text does not
    rotated = _svg('<text transform="translate(60,80) rotate(-45)" font-size="10">label one</text>'
                   '<text transform="translate(90,80) rotate(-45)" font-size="10">label two</text>')
    assert measurer.measure([rotated]) == []
    on_plot = _svg('<rect class="bg" x="50" y="10" width="100" height="60"/><g class="yaxislayer-above">'
                   '<text x="40" y="40" font-size="12">long tick label</text></g>')
    assert any("inside a plot area" in p for p in measurer.measure([on_plot]))


def test_penetration_of_boxes():
    square = ((0, 0), (10, 0), (10, 10), (0, 10))
    assert penetration(square, tuple((x + 7, y) for x, y in square)) == pytest.approx(3)
    assert penetration(square, tuple((x + 12, y) for x, y in square)) < 0
    assert problems("f", {"width": 5, "height": 5, "plots": [],
                          "texts": [{"text": "a", "axis": False, "quad": square}]})[0].startswith("f: 'a' leaves")


# ---------------------------------------------------------------- every figure, from real runs

@pytest.fixture(scope="module")
def cases(embedded, tmp_path_factory):
    from helpers import figure_cases

    runs = figure_cases.make_runs(tmp_path_factory.mktemp("legibility") / "runs", embedded)
    repairs = figure_cases.make_repairs(runs["wanda"], embedded)
    return (figure_cases.catalog_cases(runs) + figure_cases.sparsity_cases(runs) + figure_cases.explain_cases(runs)
            + figure_cases.repair_cases(runs["wanda"], repairs, None) + figure_cases.shrink_cases(runs))


@pytest.fixture(scope="module")
def exporter():
    export.start_export_server()
    yield export.export_figure
    export.stop_export_server()


@pytest.mark.slow
def test_every_figure_is_legible_at_every_print_preset(cases, exporter, measurer):
    rendered = []
    for case in cases:
        fig = case.build()
        rendered += [(f"{case.name} at {name}", exporter(fig, "svg", preset=preset)) for name, preset in PRESETS.items()]
    found = measurer.measure(rendered)
    assert not found, f"{len(found)} legibility defects in {len(rendered)} figures:\n" + "\n".join(found)


@pytest.mark.slow
def test_every_figure_is_legible_at_the_sizes_the_app_shows_it(cases, exporter, measurer):
    rendered = []
    for case in cases:
        for width in case.screen + (MODEBAR_SVG["width"],):
            fig = on_screen(case.build(), case.rows, narrow=width < 700)
            height = MODEBAR_SVG["height"] if width == MODEBAR_SVG["width"] else fig.layout.height or SCREEN_HEIGHT_PX
            rendered.append((f"{case.name} on screen at {width}×{height}",
                             exporter(fig, "svg", width=width, height=height, scale=1)))
    found = measurer.measure(rendered)
    assert not found, f"{len(found)} legibility defects in {len(rendered)} figures:\n" + "\n".join(found)
