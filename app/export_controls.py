"""The download controls under an exportable figure: the image through Kaleido at print size (or in screen
pixels), the suggested caption, and the data behind it."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from wanda_engine.outputs import export
from wanda_engine.outputs import figures
from wanda_engine.core.errors import ConfigError
from wanda_engine.outputs.bundle import file_stem
from wanda_engine.outputs.figures.paper import PRESETS, PrintPreset, print_preset, suggested_caption

CUSTOM, SCREEN = "custom", "screen (pixels)"
SIZES = [*PRESETS, CUSTOM, SCREEN]
DEFAULT_SIZE = "two-column"


@dataclass(frozen=True)
class PrintSettings:
    """What the size controls chose: a print preset (None: screen pixels), the PNG dpi, whether the title
    stays on the figure, and the screen size (pixels, PNG scale) used when `preset` is None."""

    preset: PrintPreset | None
    dpi: int = 300
    keep_title: bool = False
    width_px: int = 1000
    height_px: int = 600
    scale: float = 2.0

    def export(self, fig: go.Figure, fmt: str) -> bytes:
        if self.preset is None:
            return export.export_figure(fig, fmt, width=self.width_px, height=self.height_px, scale=self.scale)
        return export.export_figure(fig, fmt, preset=self.preset, dpi=self.dpi, keep_title=self.keep_title)

    def describe(self) -> str:
        if self.preset is None:
            return f"{self.width_px} × {self.height_px} px"
        return f"{self.preset.describe()}, PNG at {self.dpi} dpi"


@st.cache_resource(show_spinner=False)
def export_server() -> bool:
    """Kaleido's browser, started once per server; every later export reuses it."""
    export.start_export_server()
    return True


def _size_label(name: str) -> str:
    p = PRESETS.get(name)
    return f"{name} ({p.width_in:g} × {p.height_in:g} in)" if p else name


def print_settings(key: str, screen: bool = True) -> PrintSettings:
    """The size controls: a preset (one-column, two-column, slide, poster), a custom size in inches or
    centimetres, or (if `screen`) today's screen pixels; dpi for PNG and whether the title stays.
    Shared by the single-figure export and the bundles; `key` prefixes the widgets' keys."""
    sizes = SIZES if screen else SIZES[:-1]
    c1, c2, c3, c4 = st.columns(4)
    size = c1.selectbox("Size", sizes, index=sizes.index(DEFAULT_SIZE), key=f"{key}_size", format_func=_size_label,
                        help="Print presets lay the figure out at its printed size with fonts in points "
                             "(8 pt text, 9 pt axis titles in a column), so it drops into "
                             "\\includegraphics[width=\\columnwidth] unscaled.")
    if size == SCREEN:
        width = c2.number_input("Width (px)", 200, 4000, 1000, step=50, key=f"{key}_w")
        height = c3.number_input("Height (px)", 150, 4000, 600, step=50, key=f"{key}_h")
        scale = c4.number_input("Scale", 0.5, 8.0, 2.0, step=0.5, key=f"{key}_scale",
                                help="Pixel multiplier for PNG; vector formats ignore it.")
        return PrintSettings(None, width_px=int(width), height_px=int(height), scale=float(scale))
    if size == CUSTOM:
        unit = c4.selectbox("Unit", ["in", "cm"], key=f"{key}_unit")
        per_in = 1.0 if unit == "in" else 2.54
        width = c2.number_input(f"Width ({unit})", 1.0 * per_in, 60.0 * per_in, 3.25 * per_in, step=0.25,
                                key=f"{key}_cw_{unit}")
        height = c3.number_input(f"Height ({unit})", 1.0 * per_in, 60.0 * per_in, 2.4 * per_in, step=0.25,
                                 key=f"{key}_ch_{unit}")
        preset = print_preset("custom", width=float(width), height=float(height), unit=unit)
        d1, d2 = st.columns(2)
    else:
        preset = print_preset(size)
        d1, d2 = c2, c3
    dpi = d1.number_input("PNG dpi", *export.DPI_RANGE, 300, step=50, key=f"{key}_dpi",
                          help="Pixels per inch of the PNG; PDF and SVG are vector at the physical size.")
    keep_title = d2.checkbox("Keep the title on the figure", False, key=f"{key}_title",
                             help="Papers caption in LaTeX: by default the title becomes the suggested caption.")
    return PrintSettings(preset, dpi=int(dpi), keep_title=bool(keep_title))


def export_controls(fig: go.Figure, name: str, key: str) -> pd.DataFrame:
    """Size and format inputs, Render (PNG/SVG/PDF) then Download, the suggested caption, and the figure's
    data as CSV and JSON.

    `name` says which figure this is and names the downloaded files; `key` prefixes the widgets' keys,
    one per figure on a page. Returns the data behind the figure, for the page to show if it wants to."""
    stem = file_stem(name, len(".json"))  # the longest of the downloads' extensions
    try:
        settings = print_settings(key)
    except ConfigError as e:
        st.error(str(e))
        settings = None
    fmt = st.selectbox("Format", list(export.FORMATS), key=f"{key}_fmt", format_func=str.upper)
    # the rendered bytes belong to these exact settings: any change hides the stale download
    spec = (name, fmt, settings)
    rendered = st.session_state.get(f"_{key}_rendered")
    b1, b2, b3, b4 = st.columns(4)
    if b1.button(f"Render {fmt.upper()}", key=f"{key}_render", disabled=settings is None):
        try:
            with st.spinner("Rendering with Kaleido…"):
                try:
                    export_server()  # a kept-open browser makes later exports fast
                except Exception:  # noqa: BLE001 - export_figure then starts a browser for this one export
                    pass
                data = settings.export(fig, fmt)  # type: ignore[union-attr]
            st.session_state[f"_{key}_rendered"] = rendered = (spec, data)
        except Exception as e:  # noqa: BLE001 - Kaleido or its browser: show, don't crash the page
            st.error(f"Export failed: {e}")
    if rendered is not None and rendered[0] == spec:
        b2.download_button(f"Download {fmt.upper()} ({len(rendered[1]) / 1024:.0f} KB)", rendered[1],
                           file_name=f"{stem}.{fmt}", mime=export.MIME[fmt], on_click="ignore",
                           key=f"{key}_image", type="primary", help=settings.describe() if settings else None)
    table = figures.figure_data(fig)
    b3.download_button("Data as CSV", table.to_csv(index=False), file_name=f"{stem}.csv", mime="text/csv",
                       on_click="ignore", key=f"{key}_csv")
    b4.download_button("Data as JSON", table.to_json(orient="records", indent=1, default_handler=str),
                       file_name=f"{stem}.json", mime="application/json", on_click="ignore", key=f"{key}_json")
    caption = suggested_caption(fig)
    if caption and (settings is None or not settings.keep_title):
        st.caption("Suggested caption (the figure's title, left off the exported figure):")
        st.code(caption, language=None, wrap_lines=True)
    return table
