"""The look every figure shares: colours, fonts, the title block, the modebar, and small axis helpers."""
from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ...core.errors import ConfigError
from ...core.palette import BLUE, DARK_GREY, GREY, LIGHT_GREY, VERMILLION, YELLOW, MethodStyle
from ...methods import table
from ...store.matrix_records import KEPT, PRUNED_BOTH, PRUNED_ONLY_METHOD, PRUNED_ONLY_REFERENCE

PLOTLY_CONFIG: dict[str, Any] = {
    "toImageButtonOptions": {"format": "svg", "filename": "wanda-figure", "width": 900, "height": 600, "scale": 1},
    "displaylogo": False,
}

FONT_FAMILY = "Arial, 'Liberation Sans', Helvetica, sans-serif"
TEMPLATE = "simple_white"
# The palette (Okabe–Ito) and each method's look are the core's and the table of methods' (methods/table.py).
DENSE_STYLE = MethodStyle(GREY, "dash", "line-ew")
_CYCLE = (VERMILLION, DARK_GREY, YELLOW)  # for methods not in the table: no method's colour
# a second, third … series of the same base method in one figure: the base's colour, another dash, an open marker
_VARIANT_LOOKS = (("longdashdot", "-open", "+"), ("dot", "-open", "-"), ("dash", "-dot", "|"),
                  ("dashdot", "-open-dot", "x"))
MASK_COLOURS = {KEPT: LIGHT_GREY, PRUNED_BOTH: DARK_GREY, PRUNED_ONLY_METHOD: VERMILLION, PRUNED_ONLY_REFERENCE: BLUE}


def wrap(text: str, width: int) -> list[str]:
    """Split at spaces into lines of at most ~width characters, keeping '<br>' breaks (plotly does not wrap)."""
    lines: list[str] = []
    for part in text.split("<br>"):
        lines += textwrap.wrap(part, width, break_long_words=False, break_on_hyphens=False) or [""]
    return lines


def layout(fig: go.Figure, title: str, subtitle: str | None = None, **kwargs: Any) -> go.Figure:
    """The shared template, fonts and a left-aligned title (and subtitle) with room made for them."""
    title_lines = wrap(title, 78)
    sub_lines = wrap(subtitle, 112) if subtitle else []
    t: dict[str, Any] = {"text": "<br>".join(title_lines), "x": 0.0, "xanchor": "left", "xref": "paper",
                         "yref": "container", "y": 1.0, "yanchor": "top", "pad": {"t": 14 + 20 * (len(title_lines) - 1)},
                         "font": {"size": 16}}
    if sub_lines:
        t["subtitle"] = {"text": "<br>".join(sub_lines), "font": {"size": 12, "color": "#555555"}}
    # Fixed pixel offsets: title.automargin mis-draws bars in static exports (kaleido 1.5, plotly.js 3).
    top = 14 + 20 * (len(title_lines) - 1) + 20 * len(title_lines) + (6 + 16 * len(sub_lines) if sub_lines else 0) + 28
    fig.update_layout(template=TEMPLATE, title=t, font={"family": FONT_FAMILY, "size": 13},
                      margin={"t": top, "l": 70, "r": 30, "b": 60}, hoverlabel={"font_family": FONT_FAMILY},
                      **kwargs)
    return fig


def on_screen(fig: go.Figure, rows: int | None = None, narrow: bool = False) -> go.Figure:
    """`fig` as the app shows it (changed in place): `rows`, a heatmap's row count, gives each row room;
    `narrow`, a half-width column, wraps long titles instead of letting them run off the figure."""
    if narrow and fig.layout.title.text:
        title = "<br>".join(wrap(fig.layout.title.text, 48))
        sub = fig.layout.title.subtitle.text if fig.layout.title.subtitle else None
        sub = "<br>".join(wrap(sub, 66)) if sub else None
        fig.update_layout(title_text=title)
        if sub:
            fig.update_layout(title_subtitle_text=sub)
        lines = title.count("<br>") + 1 + (sub.count("<br>") + 1 if sub else 0)
        fig.update_layout(margin_t=max(fig.layout.margin.t or 0, 40 + 22 * lines))
    if rows and fig.layout.height is None:
        fig.update_layout(height=int(min(max(450, 190 + 20 * rows), 1400)))
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
    ones keep the colour and take another dash and an open marker. Unknown methods take the spare colours in
    turn, a method's series sharing one."""
    seen = {} if seen is None else seen
    if label in seen:
        return seen[label]
    base = choice or base_method(label)
    own = table_look(base)
    if own is not None:
        siblings = [look for look in seen.values() if look.colour == own.colour]
    else:
        siblings = [look for other, look in seen.items() if base_method(other) == base]
        own = siblings[0] if siblings else None
    if own is None:
        used = {look.colour for look in seen.values()}
        own = MethodStyle(next((c for c in _CYCLE if c not in used), _CYCLE[len(used) % len(_CYCLE)]),
                          "solid", "circle")
    if siblings:
        dash, suffix, pattern = _VARIANT_LOOKS[(len(siblings) - 1) % len(_VARIANT_LOOKS)]
        own = MethodStyle(own.colour, dash, own.symbol + suffix, pattern)
    seen[label] = own
    return own


def method_colour(label: str, seen: dict[str, MethodStyle] | None = None, choice: str | None = None) -> str:
    """The colour of the series `label`: its method's, in every figure (see `method_style`)."""
    return method_style(label, seen, choice).colour


def log_ticks(values: Sequence[float]) -> dict[str, Any]:
    """Tick values 1-2-5 × 10^k spanning `values`, for a readable log axis (plotly labels minor ticks '2', '5')."""
    v = np.asarray([x for x in values if x is not None and x > 0], dtype=float)
    if not v.size:
        return {}
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    ticks = [m * 10.0**k for k in range(lo, hi + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if v.min() / 2.5 <= t <= v.max() * 2.5]
    return {"tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def finite(v: Any) -> float | None:
    """`v` as a float if it is a finite number (not a bool), else None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
