"""The figures' colours and a series' look, torch- and plotly-free: the table of methods gives each method
its look from here (methods/table.py), the figures draw with it (outputs/figures/style.py)."""
from __future__ import annotations

from dataclasses import dataclass

# Okabe–Ito, readable by colour-blind viewers and in greyscale print.
BLUE, ORANGE, VERMILLION, SKY, GREEN, PURPLE, YELLOW = (
    "#0072B2", "#E69F00", "#D55E00", "#56B4E9", "#009E73", "#CC79A7", "#F0E442")
GREY, LIGHT_GREY, DARK_GREY = "#8c8c8c", "#e6e6e6", "#4d4d4d"


@dataclass(frozen=True)
class MethodStyle:
    """How one method is drawn in every figure: its colour, its line's dash, its marker and its bars' fill
    pattern (lines and bars told apart in greyscale print without the colour)."""

    colour: str
    dash: str
    symbol: str
    pattern: str = ""
