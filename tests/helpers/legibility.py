"""Measure the text of rendered SVG figures in headless Chromium: every text element's box as the browser lays it
out (getBBox in the element's own coordinates, carried to the figure's by its transforms, so a rotated tick label
is a rotated box), then the defects a reader meets: two texts on top of each other, text cut off at the canvas'
edge, and an axis's text (tick labels, axis titles, colour-bar labels) lying on another plot area's data.

One browser page serves every check; figures are loaded in batches, a page of SVGs at a time.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# How far (CSS px, 1/96 in) two boxes must reach into each other, or text past the canvas, to count: a glyph
# box holds the font's ascent and descent, so touching lines of text may share a hair of it.
OVERLAP_TOLERANCE_PX = 1.0
EDGE_TOLERANCE_PX = 0.5

_MEASURE = """
(svgs) => {
  const host = document.getElementById('host');
  host.innerHTML = svgs.join('');
  const out = [];
  for (const svg of host.querySelectorAll(':scope > svg')) {
    const view = svg.viewBox.baseVal;
    const toRoot = svg.getScreenCTM().inverse();
    const corners = (el, box) => {
      const m = toRoot.multiply(el.getScreenCTM());
      return [[box.x, box.y], [box.x + box.width, box.y], [box.x + box.width, box.y + box.height],
              [box.x, box.y + box.height]].map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]);
    };
    const texts = [];
    for (const el of svg.querySelectorAll('text')) {
      const text = el.textContent.trim();
      const style = getComputedStyle(el);
      if (!text || style.display === 'none' || style.visibility === 'hidden' || Number(style.opacity) === 0) continue;
      if (el.closest('[display="none"], [visibility="hidden"]')) continue;
      const box = el.getBBox();
      if (box.width <= 0 || box.height <= 0) continue;
      const axis = !!el.closest('.xaxislayer-above, .yaxislayer-above, .colorbar')
                   || /^[xy][0-9]*title$/.test(el.getAttribute('class') || '');
      texts.push({text, axis, quad: corners(el, box)});
    }
    const plots = [...svg.querySelectorAll('rect.bg')].filter(r => !r.closest('.legend'))
                                                      .map(r => corners(r, r.getBBox()));
    out.push({width: view.width, height: view.height, texts, plots});
  }
  return out;
}
"""


@dataclass(frozen=True)
class Text:
    text: str
    axis: bool  # a tick label, axis title or colour-bar label
    quad: tuple[tuple[float, float], ...]  # its box's four corners in the figure's px


def _axes(quad: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(quad[i][1] - quad[i - 1][1], quad[i - 1][0] - quad[i][0]) for i in range(len(quad))]


def penetration(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    """How deep two convex quadrilaterals reach into each other (px; 0 or less: apart), by separating axes."""
    depth = float("inf")
    for nx, ny in _axes(a) + _axes(b):
        length = (nx * nx + ny * ny) ** 0.5
        if length == 0:
            continue
        pa = [(x * nx + y * ny) / length for x, y in a]
        pb = [(x * nx + y * ny) / length for x, y in b]
        depth = min(depth, min(max(pa), max(pb)) - max(min(pa), min(pb)))
    return depth


def problems(name: str, figure: dict) -> list[str]:
    """The legibility defects of one measured figure, one sentence each."""
    texts = [Text(t["text"], t["axis"], tuple(map(tuple, t["quad"]))) for t in figure["texts"]]
    width, height = figure["width"], figure["height"]
    found = []
    for i, a in enumerate(texts):
        xs, ys = [p[0] for p in a.quad], [p[1] for p in a.quad]
        if (min(xs) < -EDGE_TOLERANCE_PX or min(ys) < -EDGE_TOLERANCE_PX or max(xs) > width + EDGE_TOLERANCE_PX
                or max(ys) > height + EDGE_TOLERANCE_PX):
            found.append(f"{name}: {a.text!r} leaves the {width:.0f}×{height:.0f} canvas "
                         f"(x {min(xs):.0f}…{max(xs):.0f}, y {min(ys):.0f}…{max(ys):.0f})")
        for b in texts[i + 1:]:
            depth = penetration(a.quad, b.quad)
            if depth > OVERLAP_TOLERANCE_PX:
                found.append(f"{name}: {a.text!r} overlaps {b.text!r} by {depth:.1f} px")
        if a.axis:
            for plot in figure["plots"]:
                depth = penetration(a.quad, plot)
                if depth > OVERLAP_TOLERANCE_PX:
                    found.append(f"{name}: axis text {a.text!r} lies {depth:.1f} px inside a plot area")
    return found


class Measurer:
    """One headless Chromium page that measures batches of SVG figures."""

    def __init__(self, page) -> None:
        self.page = page
        page.set_content('<html><body style="margin:0"><div id="host"></div></body></html>')

    def measure(self, named_svgs: Iterable[tuple[str, bytes]], batch: int = 24) -> list[str]:
        """Every defect of every figure, measured `batch` figures at a time."""
        items = list(named_svgs)
        found: list[str] = []
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            measured = self.page.evaluate(_MEASURE, [svg.decode() for _, svg in chunk])
            for (name, _), figure in zip(chunk, measured):
                found += problems(name, figure)
        return found
