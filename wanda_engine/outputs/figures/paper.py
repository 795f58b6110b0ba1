"""Figures at print size: named presets (one-column, two-column, slide, poster, or a custom size) and the
paper style, applied to a copy of any figure as a plotly dict for `export.export_figure`.

Sizes are physical. Plotly and Chromium lay out in CSS pixels at 96 per inch, so a preset's inches,
points and line widths turn into the pixels the figure is drawn at (1 pt = 96/72 px): a one-column figure
is laid out 312 px wide with 8-pt (10.7 px) labels, exactly as it will appear in a 3.25-in column, and
the export then only scales it (PNG at the chosen dpi) or gives it its physical page size (PDF, SVG).

The paper style: no baked-in title (it becomes `suggested_caption`, for the LaTeX caption), the legend in
rows above the plot area, where it covers no data, and every font, line and marker at print size.
Colours, dashes and markers per method come from `style.method_style` when the figure is drawn, so they
are already the same in every figure. Torch-free; nothing here imports kaleido.
"""
from __future__ import annotations

import copy
import html
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from ...core.errors import ConfigError
from .style import FONT_FAMILY, SCREEN_FONT_PX, unbroken, wrap
from .ticks import axis_span, categorical_axes, fit_ticks

CSS_PX_PER_IN = 96.0
PT_PER_IN = 72.0
PX_PER_PT = CSS_PX_PER_IN / PT_PER_IN
CM_PER_IN = 2.54
SIZE_RANGE_IN = (1.0, 60.0)
# The screen figures' own sizes that the print sizes are measured against (style.py, the figure modules).
SCREEN_LINE_PX, SCREEN_MARKER_PX = 2.0, 8.0
MIN_TEXT_PT = 5.0  # labels inside the data smaller than this are dropped, not printed unreadably
# Layout guesses (plotly measures text only in the browser): a sans-serif glyph's mean width in ems, the
# plot area's share of the figure, a legend entry's symbol and gaps
GLYPH_EM, PLOT_SHARE, COLORBAR_SHARE, LEGEND_GAPS_PX = 0.5, 0.8, 0.18, 20.0
# a legend entry's text measured wide (plotly wraps a row that overflows onto the next one), and a subplot's
# title kept inside the figure though centred over a plot area that the axis labels push to the right
LEGEND_GLYPH_EM, SUBPLOT_TITLE_SHARE = 0.6, 0.7
# an x axis title's lines kept to a share of the width (centred on a plot area pushed right by the y labels);
# the lines of text (tick labels, a title) an x axis takes under its plot area
X_TITLE_SHARE, X_AXIS_LINES = 0.6, 2.5
MIN_PLOT_LINES = 3.0  # the least plot height a figure keeps, in lines of body text: below it, it is refused


@dataclass(frozen=True)
class PrintPreset:
    """A figure's printed size and type sizes: inches, and points at that size."""

    name: str  # 'one-column', 'two-column', 'slide', 'poster', or 'custom'
    width_in: float
    height_in: float
    body_pt: float  # tick labels, legend, annotations, bar labels
    title_pt: float  # axis titles, subplot titles (and the figure title when kept)
    line_pt: float  # a data line; reference lines, bar outlines and error bars in proportion
    marker_pt: float  # a marker's diameter

    @property
    def width_px(self) -> float:
        return self.width_in * CSS_PX_PER_IN

    @property
    def height_px(self) -> float:
        return self.height_in * CSS_PX_PER_IN

    @property
    def body_px(self) -> float:
        return self.body_pt * PX_PER_PT

    @property
    def title_px(self) -> float:
        return self.title_pt * PX_PER_PT

    @property
    def line_px(self) -> float:
        return self.line_pt * PX_PER_PT

    @property
    def marker_px(self) -> float:
        return self.marker_pt * PX_PER_PT

    def describe(self) -> str:
        """'two-column, 6.75 × 3 in, 8/9 pt' — for captions and file listings."""
        return (f"{self.name}, {self.width_in:g} × {self.height_in:g} in, "
                f"{self.body_pt:g}/{self.title_pt:g} pt")


# Column widths of the common two-column templates (ACL, NeurIPS/ICML single column ~5.5 in fits between);
# a 16:9 slide 10 in wide (PowerPoint's and Beamer's 16:9 at 10 in); a poster panel read from a metre or two.
PRESETS: dict[str, PrintPreset] = {p.name: p for p in (
    PrintPreset("one-column", 3.25, 2.4, 8.0, 9.0, 1.0, 3.5),
    PrintPreset("two-column", 6.75, 3.0, 8.0, 9.0, 1.25, 4.0),
    PrintPreset("slide", 10.0, 5.625, 16.0, 18.0, 2.25, 7.0),
    PrintPreset("poster", 12.0, 8.0, 24.0, 28.0, 3.0, 10.0),
)}
UNITS = {"in": 1.0, "cm": 1.0 / CM_PER_IN}


def _length_in(field: str, value: Any, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"print {field} must be a number of {unit}, not {value!r}.")
    inches = float(value) * UNITS[unit]
    lo, hi = SIZE_RANGE_IN
    if not lo <= inches <= hi:
        raise ConfigError(f"print {field} must be between {lo / UNITS[unit]:g} and {hi / UNITS[unit]:g} {unit}, "
                          f"not {value!r}.")
    return inches


def print_preset(name: str = "two-column", width: float | None = None, height: float | None = None,
                 unit: str = "in") -> PrintPreset:
    """A named preset, or one resized: `width` / `height` in inches or centimetres give a 'custom' preset
    with the named preset's type sizes (name 'custom' starts from two-column). Only one of the two
    given keeps the named preset's aspect ratio. ConfigError (one sentence) on anything else."""
    if unit not in UNITS:
        raise ConfigError(f"print unit must be one of {', '.join(UNITS)}, not {unit!r}.")
    base_name = "two-column" if name == "custom" else name
    if base_name not in PRESETS:
        raise ConfigError(f"print preset must be one of {', '.join([*PRESETS, 'custom'])}, not {name!r}.")
    base = PRESETS[base_name]
    if width is None and height is None:
        if name == "custom":
            raise ConfigError("print preset 'custom' needs a width or a height.")
        return base
    aspect = base.height_in / base.width_in
    w = _length_in("width", width, unit) if width is not None else None
    h = _length_in("height", height, unit) if height is not None else None
    w = w if w is not None else h / aspect  # type: ignore[operator]
    h = h if h is not None else w * aspect
    if not SIZE_RANGE_IN[0] <= w <= SIZE_RANGE_IN[1]:
        raise ConfigError(f"print width must stay between {SIZE_RANGE_IN[0]:g} and {SIZE_RANGE_IN[1]:g} in "
                          f"for that height, not {w:.3g} in.")
    if not SIZE_RANGE_IN[0] <= h <= SIZE_RANGE_IN[1]:
        raise ConfigError(f"print height must stay between {SIZE_RANGE_IN[0]:g} and {SIZE_RANGE_IN[1]:g} in "
                          f"for that width, not {h:.3g} in.")
    return replace(base, name="custom", width_in=round(w, 4), height_in=round(h, 4))


# ---------------------------------------------------------------- captions

_SUBSCRIPTS = str.maketrans("0123456789+-=()aehijklmnoprstuvx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ")
_SUPERSCRIPTS = str.maketrans("0123456789+-=()in", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁱⁿ")


def plain_text(text: str | None) -> str:
    """Plotly's HTML-ish label text as plain Unicode: breaks become spaces, <sub>/<sup> Unicode indices."""
    if not text:
        return ""
    text = re.sub(r"<br\s*/?>", " ", str(text), flags=re.I)
    text = re.sub(r"<sub>(.*?)</sub>", lambda m: m.group(1).translate(_SUBSCRIPTS), text, flags=re.I | re.S)
    text = re.sub(r"<sup>(.*?)</sup>", lambda m: m.group(1).translate(_SUPERSCRIPTS), text, flags=re.I | re.S)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return re.sub(r"\s+", " ", text.replace("\u00a0", " ")).strip()


def _title_parts(layout: dict) -> tuple[str, str]:
    title = layout.get("title") or {}
    if isinstance(title, str):
        return plain_text(title), ""
    sub = title.get("subtitle") or {}
    return plain_text(title.get("text")), plain_text(sub.get("text") if isinstance(sub, dict) else sub)


def suggested_caption(fig: Any) -> str:
    """The figure's title and subtitle as one plain-text caption (no HTML), for a LaTeX \\caption{}."""
    layout = _as_dict(fig).get("layout") or {}
    title, sub = _title_parts(layout)
    if title and sub:  # a subtitle that opens by naming what the title already names says it once
        first, _, rest = sub.partition(", ")
        if rest and first in title:
            sub = rest[0].upper() + rest[1:]
    parts = [p.rstrip(".") for p in (title, sub) if p]
    return (". ".join(parts) + ".") if parts else ""


# ---------------------------------------------------------------- the paper style

def _as_dict(fig: Any) -> dict:
    # a dict rather than go.Figure(fig): that re-validates every property (~60 ms)
    return fig.to_dict() if hasattr(fig, "to_dict") else copy.deepcopy(dict(fig))


def _scaled(value: Any, unit_px: float, screen_px: float, cap: float = 1.5) -> float:
    """A screen width as a print width: `unit_px` for the screen's standard `screen_px`, in proportion around it."""
    ratio = float(value) / screen_px if isinstance(value, (int, float)) and value > 0 else 1.0
    return unit_px * min(max(ratio, 0.25), cap)


def _font(font: dict | None, size: float, **extra: Any) -> dict:
    return {**(font or {}), "family": FONT_FAMILY, "size": round(size, 2), **extra}


def _wrapped(text: Any, width_px: float, font_px: float) -> Any:
    """`text` broken at spaces into lines that fit `width_px` (plotly never wraps a label itself)."""
    if not isinstance(text, str) or not text:
        return text
    chars = max(8, int(width_px / (GLYPH_EM * font_px)))
    return "<br>".join(wrap(text, chars))


def _style_axes(layout: dict, p: PrintPreset) -> None:
    axes = [k for k in layout if re.fullmatch(r"[xy]axis\d*", k)] or ["xaxis", "yaxis"]
    thin = round(0.5 * PX_PER_PT, 2)
    for key in axes:
        ax = layout.setdefault(key, {})
        title = ax.get("title") or {}
        title = {"text": title} if isinstance(title, str) else dict(title)
        room = (X_TITLE_SHARE * p.width_px if key.startswith("x") else PLOT_SHARE * p.height_px) * axis_span(ax)
        title["text"] = _wrapped(unbroken(title.get("text")), room, p.title_px)
        ax.update(tickfont=_font(ax.get("tickfont"), p.body_px, color="black"), automargin=True,
                  title={**title, "font": _font(title.get("font"), p.title_px, color="black"),
                         "standoff": round(0.25 * p.body_px, 2)},
                  linewidth=thin, tickwidth=thin, gridwidth=thin, ticklen=round(0.4 * p.body_px, 2),
                  linecolor="black", tickcolor="black")


def _wrap_y_titles(layout: dict, plot_height: float, p: PrintPreset) -> None:
    """Each y axis' title broken to the height its plot area keeps under the title and legend rows: a longer
    one would run up into the legend."""
    for key in [k for k in layout if re.fullmatch(r"yaxis\d*", k)]:
        title = layout[key].get("title")
        if isinstance(title, dict) and title.get("text"):
            title["text"] = _wrapped(unbroken(title["text"]), plot_height * axis_span(layout[key]), p.title_px)


def _cell_text_px(trace: dict, layout: dict, p: PrintPreset) -> float:
    """A heatmap's cell labels at the largest size up to the body's that fits a cell; 0 when below 5 pt."""
    rows, cols = _grid_shape(trace.get("z"))
    text = trace.get("text")
    if isinstance(text, (list, tuple)) and text and isinstance(text[0], (list, tuple)):
        chars = max((len(str(t)) for row in text for t in row), default=4)
    else:
        chars = 6  # '57.8%', '0.95': what the figures' texttemplates print, and a little room
    x_axis = layout.get("xaxis" + str(trace.get("xaxis", "x"))[1:]) or {}
    y_axis = layout.get("yaxis" + str(trace.get("yaxis", "y"))[1:]) or {}
    share = PLOT_SHARE - (COLORBAR_SHARE if trace.get("showscale", True) else 0.0)
    cell_w = share * p.width_px * axis_span(x_axis) / cols
    cell_h = PLOT_SHARE * p.height_px * axis_span(y_axis) / rows
    size = min(0.85 * p.body_px, 0.9 * cell_w / (GLYPH_EM * chars), 0.65 * cell_h)
    return size if size >= MIN_TEXT_PT * PX_PER_PT else 0.0


def _grid_shape(z: Any) -> tuple[int, int]:
    """(rows, columns) of a heatmap's z: nested lists, or plotly's typed array {'bdata', 'shape': '6, 8'}."""
    if isinstance(z, dict):
        shape = [int(n) for n in str(z.get("shape", "1")).split(",") if n.strip()]
        return (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0] if shape else 1)
    if isinstance(z, (list, tuple)) and z:
        return len(z), max((len(r) for r in z if isinstance(r, (list, tuple))), default=1)
    return 1, 1


def _style_trace(trace: dict, layout: dict, p: PrintPreset) -> None:
    kind = trace.get("type", "scatter")
    line = trace.get("line")
    if isinstance(line, dict) and kind == "scatter":
        line["width"] = round(_scaled(line.get("width"), p.line_px, SCREEN_LINE_PX), 2)
    marker = trace.get("marker")
    if isinstance(marker, dict):
        if kind == "scatter" and not isinstance(marker.get("size"), (list, tuple)):
            marker["size"] = round(_scaled(marker.get("size"), p.marker_px, SCREEN_MARKER_PX, cap=1.3), 2)
        outline = marker.get("line")
        if isinstance(outline, dict) and outline.get("width"):
            outline["width"] = round(min(float(outline["width"]), 1.0) * 0.5 * p.line_px, 2)
        if isinstance(marker.get("colorbar"), dict):
            _style_colorbar(marker["colorbar"], p)
    if isinstance(trace.get("colorbar"), dict) or kind == "heatmap":
        _style_colorbar(trace.setdefault("colorbar", {}), p)
    for key in ("error_x", "error_y"):
        if isinstance(trace.get(key), dict):
            trace[key].update(thickness=round(0.5 * p.line_px, 2), width=round(0.6 * p.marker_px, 2))
    if kind == "heatmap" and (trace.get("texttemplate") or trace.get("text") is not None):
        size = _cell_text_px(trace, layout, p)
        if not size:  # too small to read at this size: the colours alone tell the values
            trace["texttemplate"] = ""
        trace["textfont"] = _font(trace.get("textfont"), size or MIN_TEXT_PT * PX_PER_PT)
    elif "text" in trace or "texttemplate" in trace:
        # bar and point labels sit among the data: a little smaller than the body text
        trace["textfont"] = _font(trace.get("textfont"), 0.85 * p.body_px)


def _style_colorbar(bar: dict, p: PrintPreset) -> None:
    title = bar.get("title") or {}
    title = {"text": title} if isinstance(title, str) else title
    bar.update(thickness=round(1.2 * p.body_px, 2), outlinewidth=0, tickfont=_font(bar.get("tickfont"), p.body_px),
               title={**title, "font": _font(title.get("font"), p.body_px)}, xpad=round(0.5 * p.body_px, 2))


def _style_annotations(layout: dict, p: PrintPreset) -> float:
    """Fonts, arrows and (for subplot titles) line breaks at print size; returns the height that the
    annotations above the plot area take (subplot titles of the top row), in px."""
    annotations = layout.get("annotations") or []
    titles = [a for a in annotations if _is_subplot_title(a)]
    above = 0.0
    for a in annotations:
        if a in titles:
            per_row = sum(1 for t in titles if t.get("y") == a.get("y"))
            a["text"] = _wrapped(unbroken(a.get("text")), SUBPLOT_TITLE_SHARE * p.width_px / per_row, p.title_px)
            a["font"] = _font(a.get("font"), p.title_px)
        else:
            a["font"] = _font(a.get("font"), p.body_px)
        if a.get("showarrow", True):
            a["arrowwidth"] = round(0.5 * p.line_px, 2)
            for key in ("ax", "ay"):  # arrow offsets are in px, drawn for the screen's 13-px text
                if isinstance(a.get(key), (int, float)) and str(a.get(key + "ref", "pixel")) == "pixel":
                    a[key] = round(a[key] * p.body_px / SCREEN_FONT_PX, 2)
        ref, y = str(a.get("yref", "")), a.get("y")
        if isinstance(y, (int, float)) and y >= 0.999 and (ref == "paper" or ref.endswith("domain")) \
                and a.get("yanchor") == "bottom":
            lines = str(a.get("text", "")).count("<br>") + 1
            above = max(above, lines * 1.35 * a["font"]["size"] + 0.4 * p.body_px)
    return above


def _legend_entries(fig_dict: dict) -> dict[str, list[dict]]:
    """The legend's entries in order, each name with the traces it stands for (a legend group's traces share one)."""
    entries: dict[str, list[dict]] = {}
    for i, trace in enumerate(fig_dict.get("data") or []):
        key = trace.get("legendgroup") or f"trace {i}"
        entries.setdefault(key, []).append(trace)
    return {key: traces for key, traces in entries.items()
            if any(t.get("showlegend") is not False and t.get("visible") not in (False, "legendonly") for t in traces)}


def _legend_symbol_px(p: PrintPreset) -> float:
    # plotly's least symbol width is 30 px; larger type gets a proportionally longer line sample
    return round(max(30.0, 2.8 * p.body_px), 2)


def _legend_row_px(p: PrintPreset) -> float:
    # plotly's entry height: the text's line or a 16-px symbol, whichever is taller, and 3 px
    return max(16.0, 1.3 * p.body_px) + 3.0


def _legend_rows(fig_dict: dict, p: PrintPreset, y_top: float) -> int:
    """The legend as rows above the plot area from `y_top` px below the figure's top edge, filled left to right.

    Each row is a legend of its own (plotly's legend2, legend3, ...): a single plotly legend wraps into a
    grid as wide as its longest entry, which at a column's width leaves one entry per row."""
    layout = fig_dict["layout"]
    entries = _legend_entries(fig_dict)
    room = (PLOT_SHARE - (COLORBAR_SHARE if _has_colorbar(fig_dict) else 0.0)) * p.width_px
    rows: list[list[list[dict]]] = [[]]
    used = 0.0
    for traces in entries.values():
        name = plain_text(next((t.get("name") for t in traces if t.get("showlegend") is not False), "") or "")
        width = _legend_symbol_px(p) + LEGEND_GAPS_PX + LEGEND_GLYPH_EM * p.body_px * len(name)
        if rows[-1] and used + width > room:
            rows.append([])
            used = 0.0
        rows[-1].append(traces)
        used += width
    base = {**(layout.get("legend") or {}), "orientation": "h", "x": 0.0, "xanchor": "left", "xref": "container",
            "yanchor": "top", "yref": "container", "font": _font(None, p.body_px, color="black"),
            "bgcolor": "rgba(0,0,0,0)", "borderwidth": 0, "itemwidth": _legend_symbol_px(p), "tracegroupgap": 0,
            "title": {"text": ""}, "entrywidthmode": "pixels", "entrywidth": 0}
    for r, row in enumerate(rows):
        key = "legend" if r == 0 else f"legend{r + 1}"
        y = y_top + r * _legend_row_px(p)
        layout[key] = {**base, "y": round(1.0 - y / p.height_px, 5)}
        for traces in row:
            for trace in traces:
                if r:
                    trace["legend"] = key
    return len(rows)


def _has_colorbar(fig_dict: dict) -> bool:
    return any(t.get("type") == "heatmap" and t.get("showscale", True) for t in fig_dict.get("data") or [])


def _place_title_and_legend(fig_dict: dict, p: PrintPreset, keep_title: bool, above: float) -> float:
    """Title (or none), a horizontal legend above the plot area, and room for the subplot titles (`above` px)
    under it; returns the top margin they need (px)."""
    layout = fig_dict["layout"]
    line = 1.3 * p.body_px
    top = 0.5 * p.body_px
    title, sub = _title_parts(layout)
    if keep_title and title:
        title_text = _wrapped(title, p.width_px, p.title_px)
        sub_text = _wrapped(sub, p.width_px, p.body_px)
        layout["title"] = {"text": title_text, "x": 0.0, "xanchor": "left", "xref": "container", "yref": "container",
                           "y": 1.0, "yanchor": "top", "pad": {"t": round(top, 2), "l": round(top, 2)},
                           "font": _font(None, p.title_px, color="black"),
                           **({"subtitle": {"text": sub_text, "font": _font(None, p.body_px, color="#444444")}}
                              if sub else {})}
        top += (title_text.count("<br>") + 1) * 1.3 * p.title_px + 0.4 * p.body_px
        top += (sub_text.count("<br>") + 1) * line if sub else 0.0
    else:
        layout["title"] = {"text": ""}
    if isinstance(layout.get("legend"), dict):  # shown or not: no screen-size font left behind
        layout["legend"]["font"] = _font(layout["legend"].get("font"), p.body_px, color="black")
    entries = _legend_entries(fig_dict)
    shown = layout.get("showlegend")
    if shown is not False and (len(entries) > 1 or (shown is True and entries)):
        layout["showlegend"] = True  # several legends would each show their one trace otherwise too
        top += _legend_rows(fig_dict, p, top) * _legend_row_px(p) + 0.2 * p.body_px
    # bar and point labels above the highest value reach into the top margin
    return max(top + above, 1.6 * p.body_px)


def paper_figure(fig: Any, preset: PrintPreset, keep_title: bool = False) -> dict:
    """`fig` as a new plotly dict in paper style at the preset's print size (`fig` is not touched).

    The layout is `preset.width_px` × `preset.height_px` CSS pixels (96 per inch) with fonts in points at
    that size; the title is dropped unless `keep_title` (then it is set at the title size, left-aligned)."""
    d = _as_dict(fig)
    layout = d.setdefault("layout", {})
    _style_axes(layout, preset)
    for trace in d.get("data") or []:
        _style_trace(trace, layout, preset)
    above = _style_annotations(layout, preset)
    for shape in layout.get("shapes") or []:
        if isinstance(shape.get("line"), dict):
            shape["line"]["width"] = round(_scaled(shape["line"].get("width"), preset.line_px, SCREEN_LINE_PX), 2)
    top = _place_title_and_legend(d, preset, keep_title, above)
    share = PLOT_SHARE - (COLORBAR_SHARE if _has_colorbar(d) else 0.0)
    # under the title and legend rows, above the x axis' labels and title
    plot_height = PLOT_SHARE * (preset.height_px - top) - X_AXIS_LINES * preset.body_px
    if plot_height < MIN_PLOT_LINES * preset.body_px:  # plotly's export then fails with "axis scaling", unexplained
        raise ConfigError(f"the legend's {len(_legend_entries(d))} entries leave no room for the plot at "
                          f"{preset.name} size ({preset.width_in:g} × {preset.height_in:g} in); export this figure "
                          "larger or with fewer runs.")
    fit_ticks(layout, share * preset.width_px, plot_height, preset.body_px, categorical_axes(d.get("data") or []))
    _wrap_y_titles(layout, plot_height, preset)
    pad = round(0.5 * preset.body_px, 2)
    if isinstance(layout.get("uniformtext"), dict) and layout["uniformtext"].get("minsize"):
        layout["uniformtext"]["minsize"] = round(MIN_TEXT_PT * PX_PER_PT, 2)
    layout.update(width=round(preset.width_px, 3), height=round(preset.height_px, 3), autosize=False,
                  font=_font(layout.get("font"), preset.body_px, color="black"),
                  margin={"t": round(top, 2), "l": pad, "r": pad, "b": pad, "pad": 0, "autoexpand": True},
                  paper_bgcolor="white", plot_bgcolor="white")
    return d


def _is_subplot_title(annotation: dict) -> bool:
    # make_subplots' titles: paper-referenced, centred over a subplot, anchored at their bottom, no arrow
    return (annotation.get("showarrow") is False and annotation.get("yanchor") == "bottom"
            and str(annotation.get("xref", "")) == "paper" and str(annotation.get("yref", "")) == "paper")
