"""The look every figure shares: colours, fonts, the title block, the modebar, and small axis helpers."""
from __future__ import annotations

import math
import re
import textwrap
from typing import Any

import plotly.graph_objects as go

from ...core.errors import ConfigError
from ...core.palette import BLUE, DARK_GREY, GREY, LIGHT_GREY, VERMILLION, YELLOW, MethodStyle
from ...methods import table
from ...store.matrix_records import KEPT, PRUNED_BOTH, PRUNED_ONLY_METHOD, PRUNED_ONLY_REFERENCE
from .ticks import categorical_axes, fit_ticks

PLOTLY_CONFIG: dict[str, Any] = {
    "toImageButtonOptions": {"format": "svg", "filename": "wanda-figure", "width": 900, "height": 600, "scale": 1},
    "displaylogo": False,
}

SCREEN_WIDTH_PX = {False: 1100, True: 540}  # the main column beside the sidebar at a 1500-px window; half of it
SCREEN_HEIGHT_PX, SCREEN_FONT_PX = 450, 13  # plotly's own height (Streamlit keeps it), the figures' text
FONT_FAMILY = "Arial, 'Liberation Sans', Helvetica, sans-serif"
TEMPLATE = "simple_white"
# The palette (Okabe–Ito) and each method's look are the core's and the table of methods' (methods/table.py).
DENSE_STYLE = MethodStyle(GREY, "dash", "line-ew")
_CYCLE = (VERMILLION, DARK_GREY, YELLOW)  # for methods not in the table: no method's colour
# a second, third … series of the same base method in one figure: the base's colour, another dash and bar pattern,
# and a dot in its marker (`_varied_symbol`)
_VARIANT_LOOKS = (("longdashdot", "+"), ("dot", "-"), ("dash", "|"), ("dashdot", "x"))
MASK_COLOURS = {KEPT: LIGHT_GREY, PRUNED_BOTH: DARK_GREY, PRUNED_ONLY_METHOD: VERMILLION, PRUNED_ONLY_REFERENCE: BLUE}


def wrap(text: str, width: int) -> list[str]:
    """Split at spaces into lines of at most ~width characters, keeping '<br>' breaks (plotly does not wrap)."""
    lines: list[str] = []
    for part in text.split("<br>"):
        lines += textwrap.wrap(part, width, break_long_words=False, break_on_hyphens=False) or [""]
    return lines


# how many characters a title's and a subtitle's line may hold at TITLE_PX / SUBTITLE_PX: a page's figure, a
# half-page one (fewer at larger type)
LINE_CHARS = {False: (78, 112), True: (48, 66)}
TITLE_PX, SUBTITLE_PX = 16, 12


def title_block(title: str, subtitle: str | None = None, *, narrow: bool = False, title_px: float = TITLE_PX,
                sub_px: float = SUBTITLE_PX) -> tuple[dict[str, Any], int]:
    """A left-aligned title (and subtitle) broken into lines that fit the figure, and the top margin they take."""
    title_chars, sub_chars = LINE_CHARS[narrow]
    title_lines = wrap(title, int(title_chars * TITLE_PX / title_px))
    sub_lines = wrap(subtitle, int(sub_chars * SUBTITLE_PX / sub_px)) if subtitle else []
    line, sub_line = 1.25 * title_px, 1.33 * sub_px
    pad = round(14 + line * (len(title_lines) - 1))  # plotly anchors a title's first line: room for the others
    t: dict[str, Any] = {"text": "<br>".join(title_lines), "x": 0.0, "xanchor": "left", "xref": "paper",
                         "yref": "container", "y": 1.0, "yanchor": "top", "pad": {"t": pad},
                         "font": {"size": title_px}}
    if sub_lines:
        t["subtitle"] = {"text": "<br>".join(sub_lines), "font": {"size": sub_px, "color": "#555555"}}
    # Fixed pixel offsets: title.automargin mis-draws bars in static exports (kaleido 1.5, plotly.js 3).
    top = pad + line * len(title_lines) + (6 + sub_line * len(sub_lines) if sub_lines else 0) + 28
    return t, round(top)


def layout(fig: go.Figure, title: str, subtitle: str | None = None, *, title_px: float = TITLE_PX,
           sub_px: float = SUBTITLE_PX, **kwargs: Any) -> go.Figure:
    """The shared template, fonts and a left-aligned title (and subtitle) with room made for them; `title_px`
    and `sub_px` for larger type (the Explain page's)."""
    t, top = title_block(title, subtitle, title_px=title_px, sub_px=sub_px)
    fig.update_layout(template=TEMPLATE, title=t, font={"family": FONT_FAMILY, "size": 13},
                      margin={"t": top, "l": 70, "r": 30, "b": 60}, hoverlabel={"font_family": FONT_FAMILY},
                      **kwargs)
    return fig


def on_screen(fig: go.Figure, rows: int | None = None, narrow: bool = False) -> go.Figure:
    """`fig` as the app shows it (changed in place): `rows`, a heatmap's row count, gives each row room;
    `narrow`, a half-width column, wraps long titles instead of letting them run off the figure."""
    title = fig.layout.title
    if narrow and title.text:
        sub = title.subtitle.text if title.subtitle else None
        t, top = title_block(unbroken(title.text), unbroken(sub) if sub else None, narrow=True,
                             title_px=title.font.size or TITLE_PX,
                             sub_px=(title.subtitle.font.size if sub else None) or SUBTITLE_PX)
        fig.update_layout(title=t, margin_t=max(fig.layout.margin.t or 0, top))
    if rows and fig.layout.height is None:
        fig.update_layout(height=int(min(max(450, 190 + 20 * rows), 1400)))
    # the page's width, or the modebar's download (PLOTLY_CONFIG) where that is smaller
    download = PLOTLY_CONFIG["toImageButtonOptions"]
    width = min(SCREEN_WIDTH_PX[narrow], download["width"])
    height = min(fig.layout.height or SCREEN_HEIGHT_PX, download["height"])
    fit_on_screen(fig, width, height)
    return fig


def unbroken(text: Any) -> Any:
    """A label with its line breaks taken out, to be broken again at another width."""
    return re.sub(r"\s*<br\s*/?>\s*", " ", text, flags=re.I) if isinstance(text, str) else text


def fit_on_screen(fig: go.Figure, width: float, height: float) -> go.Figure:
    """Thin the axes' explicit ticks (`ticks.fit_ticks`) for `fig` drawn `width` × `height` px (in place)."""
    margin = fig.layout.margin
    plot_w = width - (margin.l if margin.l is not None else 80) - (margin.r if margin.r is not None else 80)
    plot_h = height - (margin.t if margin.t is not None else 100) - (margin.b if margin.b is not None else 80)
    axes = {key: fig.layout[key].to_plotly_json() for key in fig.layout if re.fullmatch(r"[xy]axis\d*", key)}
    font = fig.layout.font.size or SCREEN_FONT_PX
    for key, ax in fit_ticks(axes, plot_w, plot_h, font, categorical_axes(fig.data)).items():
        if ax.get("tickmode") == "array" and "ticktext" in ax:
            fig.layout[key].update(tickvals=ax["tickvals"], ticktext=ax["ticktext"], tickmode="array")
        if ax.get("nticks"):
            fig.layout[key].nticks = ax["nticks"]
    return fig


def note(fig: go.Figure, text: str) -> go.Figure:
    """A grey sentence in the middle of an empty figure, saying why it is empty."""
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font={"size": 15, "color": GREY})
    return fig


def base_method(label: str) -> str:
    """The method choice a series label draws (labels are built by config.method_label): 'owl-wanda 70%' →
    'wanda', 'magnitude+protect1% 50%' → 'magnitude', 'wanda-variant 2:4' → 'wanda-variant', 'sparsegpt (n=32)' →
    'sparsegpt'."""
    return re.split(r"[\s+(]", label.strip(), maxsplit=1)[0].removeprefix("owl-")


def table_look(choice: str) -> MethodStyle | None:
    """The look the table of methods gives a method choice ('wanda', 'wanda-variant'); None for a method it lacks."""
    try:
        return table.look(choice)
    except ConfigError:
        return None


def method_style(label: str, seen: dict[str, MethodStyle] | None = None, choice: str | None = None) -> MethodStyle:
    """The look of the series `label`: its method's colour, dash and marker from the table of methods. `choice`
    names the method as the run's settings do (`PruneConfig.choice`); without it, it is read off the label.

    `seen` (one dict per figure) tells series of the same look apart: the first keeps the table's look, later
    ones keep the colour and take another dash and a dot in the marker. Unknown methods take the spare colours in
    turn, a method's series sharing one."""
    seen = {} if seen is None else seen
    if label in seen:
        return seen[label]
    base = choice or base_method(label)
    own = table_look(base)
    if own is not None:  # a structure remover shares its mask relative's colour, not its look: not a sibling
        siblings = [look for other, look in seen.items() if table_look(base_method(other)) == own]
    else:
        siblings = [look for other, look in seen.items() if base_method(other) == base]
        own = siblings[0] if siblings else None
    if own is None:
        used = {look.colour for look in seen.values()}
        own = MethodStyle(next((c for c in _CYCLE if c not in used), _CYCLE[len(used) % len(_CYCLE)]),
                          "solid", "circle")
    if siblings:
        dash, pattern = _VARIANT_LOOKS[(len(siblings) - 1) % len(_VARIANT_LOOKS)]
        own = MethodStyle(own.colour, dash, _varied_symbol(own.symbol), pattern)
    seen[label] = own
    return own


def _varied_symbol(symbol: str) -> str:
    """Another series' marker of the same method, as filled or open as the table's own (open: a structure remover,
    filled: zeros in dense weights), with a dot: 'circle' -> 'circle-dot', 'hexagon-open' -> 'hexagon-open-dot'."""
    plain = re.sub(r"(-open)?(-dot)?$", "", symbol)
    return plain + ("-open-dot" if symbol.endswith(("-open", "-open-dot")) else "-dot")


def method_colour(label: str, seen: dict[str, MethodStyle] | None = None, choice: str | None = None) -> str:
    """The colour of the series `label`: its method's, in every figure (see `method_style`)."""
    return method_style(label, seen, choice).colour


def finite(v: Any) -> float | None:
    """`v` as a float if it is a finite number (not a bool), else None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
