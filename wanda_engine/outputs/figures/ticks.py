"""Numbers as a reader reads them (`significant`, `tick_text`), and tick labels that fit their axis: the figures name every tick they could label (each block, 1-2-5 on a log
axis), and `fit_ticks` keeps the ones the axis has room for at the size it is drawn at, in print
(`paper.paper_figure`) and on screen (`style.on_screen`, the screen-size export).

Plotly places explicit ticks as given, overlapping when they do not fit, so the thinning is done here: a log axis
keeps its powers of ten first, then every second or fifth decade; an axis of whole numbers (blocks) keeps the
multiples of 2, 5, 10 …; other explicit ticks every k-th.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# A sans-serif digit's width in ems (Arial's figures are 0.556 em), and the gap a reader needs between labels
DIGIT_EM, LABEL_GAP_EM, LINE_EM = 0.56, 0.6, 1.35
# An automatic tick's label: up to 6 characters ('0.0025', '100k'), and twice a line between labels on a y axis
AUTO_LABEL_CHARS, AUTO_LINE_EM = 6, 2.0
_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_STEPS = (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000)


def tick_text(value: float) -> str:
    """'0.01', '500', '20000' — and '10⁻⁴', '2×10⁻⁵', '10⁶' beyond what plain digits write legibly."""
    if value == 0 or 0.01 <= abs(value) < 1e5:
        return f"{value:g}"
    exponent = math.floor(math.log10(abs(value)) + 1e-9)
    mantissa = round(value / 10.0**exponent, 6)
    power = f"10{str(exponent).translate(_SUPERSCRIPT)}"
    return power if mantissa == 1 else f"{mantissa:g}×{power}"


def significant(x: float, digits: int = 3) -> str:
    """`digits` significant digits, never a row of zeros: 0.0712 → '0.0712', 0.000123 → '0.000123',
    3.2e-07 → '3.2×10⁻⁷', 541.3 → '541'."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    exponent = math.floor(math.log10(abs(x)))
    if -4 <= exponent < digits + 3:
        return f"{x:.{max(0, digits - 1 - exponent)}f}"
    mantissa = f"{x / 10.0**exponent:.{digits}g}"
    return f"{mantissa}×10{str(exponent).translate(_SUPERSCRIPT)}"


def log_ticks(values: Sequence[float | None]) -> dict[str, Any]:
    """Ticks 1-2-5 × 10^k spanning `values` for a log axis (plotly would label minor ticks '2', '5' on top of
    its powers); `fit_ticks` thins them to the axis' length."""
    v = np.asarray([x for x in values if x is not None and x > 0 and math.isfinite(x)], dtype=float)
    if not v.size:
        return {}
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    ticks = [m * 10.0**k for k in range(lo, hi + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if v.min() / 2.5 <= t <= v.max() * 2.5]
    return {"tickvals": ticks, "ticktext": [tick_text(t) for t in ticks]}


def index_ticks(indices: Sequence[int]) -> dict[str, Any]:
    """A tick for every block (or other whole-number index) in `indices`; `fit_ticks` thins them."""
    values = sorted({int(i) for i in indices})
    return {"tickvals": values, "ticktext": [str(i) for i in values], "tickmode": "array"}


def _label_width_em(text: str) -> float:
    plain = re.sub(r"<[^>]+>", "", text)
    return DIGIT_EM * len(plain)


def _positions(values: Sequence[float], log: bool) -> np.ndarray:
    return np.log10(np.asarray(values, dtype=float)) if log else np.asarray(values, dtype=float)


def _candidates(values: list[float], log: bool) -> list[list[int]]:
    """Index sets of the ticks to keep, from all of them to the sparsest."""
    n = len(values)
    if log:
        powers = [i for i, v in enumerate(values) if abs(math.log10(v) - round(math.log10(v))) < 1e-9]
        out = [list(range(n))]
        if len(powers) >= 2:
            out += [[i for i in powers if round(math.log10(values[i])) % k == 0] for k in (1, 2, 3, 5, 10)]
        return [c for c in out if len(c) >= 2] or [list(range(n))]
    if all(float(v).is_integer() for v in values):
        out = [[i for i, v in enumerate(values) if int(v) % k == 0] for k in _STEPS]
    else:
        out = [list(range(0, n, k)) for k in _STEPS]
    return [c for c in out if len(c) >= 2] or [[0, n - 1]]


def _fits(positions: np.ndarray, keep: list[int], texts: list[str], px_per_unit: float, font_px: float,
          along_x: bool) -> bool:
    if len(keep) < 2:
        return True
    gaps = np.diff(np.sort(positions[keep])) * px_per_unit
    if along_x:
        widest = max(_label_width_em(texts[i]) for i in keep)
        need = (widest + LABEL_GAP_EM) * font_px
    else:
        need = LINE_EM * font_px
    return bool(gaps.min() >= need)


def _fit_axis(ax: dict, length_px: float, font_px: float, along_x: bool) -> None:
    values = ax.get("tickvals")
    if not isinstance(values, (list, tuple)) or len(values) < 3:
        return
    values = [float(v) for v in values]
    texts = [str(t) for t in (ax.get("ticktext") or [tick_text(v) for v in values])]
    log = ax.get("type") == "log"
    if log and any(v <= 0 for v in values):
        return
    positions = _positions(values, log)
    rng = ax.get("range")
    if isinstance(rng, (list, tuple)) and len(rng) == 2 and None not in rng:
        span = abs(float(rng[1]) - float(rng[0]))  # a log axis' range is in log10 units already
    else:
        span = float(positions.max() - positions.min()) * 1.1
    if span <= 0 or length_px <= 0:
        return
    px_per_unit = length_px / span
    angle = ax.get("tickangle")
    across = along_x and isinstance(angle, (int, float)) and abs(angle) >= 60  # rotated: a line's height apart
    for keep in _candidates(values, log):
        if _fits(positions, keep, texts, px_per_unit, font_px, along_x and not across):
            break
    ax["tickvals"] = [values[i] for i in keep]
    ax["ticktext"] = [texts[i] for i in keep]
    ax["tickmode"] = "array"


def axis_span(ax: dict) -> float:
    """The share of the plot area's width or height an axis (a layout dict's xaxis/yaxis) spans: its domain."""
    domain = ax.get("domain") or [0.0, 1.0]
    return max(0.05, float(domain[1]) - float(domain[0]))


def categorical_axes(traces: Iterable[Any]) -> set[str]:
    """The layout keys ('xaxis', 'yaxis2', …) of the axes that traces (plotly dicts or trace objects) draw text
    categories on: those keep every label (a category left unlabelled is a bar nobody can name)."""
    found = set()
    for trace in traces:
        for letter in "xy":
            values = trace[letter] if letter in trace else None
            first = next((v for v in (values if isinstance(values, (list, tuple)) else ()) if v is not None), None)
            if isinstance(first, (str, list, tuple)):
                anchor = trace[f"{letter}axis"] if f"{letter}axis" in trace else None
                found.add(f"{letter}axis{str(anchor or letter)[1:]}")
    return found


def _auto_ticks(ax: dict, length_px: float, font_px: float, along_x: bool) -> None:
    """At most as many automatic ticks as labels fit (plotly spaces its own by the axis' length alone, so type
    at poster size runs them into each other)."""
    if ax.get("dtick") is not None or ax.get("tickmode") == "array" or ax.get("type") in ("category", "multicategory"):
        return
    need = (AUTO_LABEL_CHARS * DIGIT_EM + LABEL_GAP_EM) * font_px if along_x else AUTO_LINE_EM * font_px
    most = max(2, int(length_px / need))
    ax["nticks"] = min(most, int(ax["nticks"])) if ax.get("nticks") else most


def fit_ticks(layout: dict, plot_width_px: float, plot_height_px: float, font_px: float,
              categorical: set[str] = frozenset()) -> dict:
    """Thin every axis' ticks (in place in a plotly layout dict) so that their labels, at `font_px`, do not touch
    along an axis of the figure's plot area (`plot_width_px` × `plot_height_px`, shared by subplots in proportion
    to their domains): explicit ticks by `_candidates`, automatic ones by a largest count. The `categorical`
    axes (`categorical_axes`) keep every label."""
    for key in [k for k in layout if re.fullmatch(r"[xy]axis\d*", k) and k not in categorical]:
        ax = layout[key]
        if not isinstance(ax, dict):
            continue
        along_x = key.startswith("x")
        size = ax.get("tickfont", {}).get("size") if isinstance(ax.get("tickfont"), dict) else None
        length = (plot_width_px if along_x else plot_height_px) * axis_span(ax)
        _fit_axis(ax, length, float(size or font_px), along_x)
        _auto_ticks(ax, length, float(size or font_px), along_x)
    return layout
