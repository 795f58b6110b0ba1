"""Export all: a print-size picker, formats and dpi, the button that builds the bundle (progress per figure),
then the download of the .zip. The bundle itself is wanda_engine.outputs.bundle's; this only wires the widgets."""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from app.export_controls import export_server
from wanda_engine.outputs import export
from wanda_engine.outputs.bundle import Bundle, FigureRendered, export_options, file_stem
from wanda_engine.core.errors import EngineError
from wanda_engine.core.events import Event
from wanda_engine.outputs.figures.paper import PRESETS

DEFAULT_PRESET = "two-column"


def export_all_controls(name: str, key: str, build: Callable[..., Bundle]) -> None:
    """Preset, formats and dpi inputs, **Export all**, then **Download bundle**. `build(preset=, formats=, dpi=,
    on_event=)` makes the bundle; `name` names the .zip; `key` prefixes the widgets' keys."""
    c1, c2, c3 = st.columns([2, 2, 1])
    presets = list(PRESETS)
    preset = c1.selectbox("Print size", presets, index=presets.index(DEFAULT_PRESET), key=f"{key}_preset",
                          format_func=lambda p: PRESETS[p].describe(),
                          help="Figures laid out at this physical size, fonts in points: they drop into "
                               "\\includegraphics[width=\\columnwidth] at 100%.")
    formats = c2.multiselect("Formats", list(export.FORMATS), default=["pdf", "png"], key=f"{key}_formats",
                             format_func=str.upper)
    dpi = c3.number_input("PNG dpi", *export.DPI_RANGE, 300, step=50, key=f"{key}_dpi")
    spec = (name, preset, tuple(formats), int(dpi))
    if st.button("Export all", key=f"{key}_all", icon=":material/folder_zip:", disabled=not formats,
                 help="Every figure with data in this print size and these formats, the data behind each, the tables "
                      "(LaTeX, Markdown, CSV), the calibration windows and REPRODUCE.md, in one .zip."):
        _build(key, spec, build)
    done = st.session_state.get(f"_{key}_bundle")
    if done is not None and done[0] == spec:
        _, data, failed, rendered, omitted = done
        if failed:
            st.warning(f"{len(failed)} figure(s) failed to render and are left out (listed in REPRODUCE.md): "
                       + "; ".join(f"{stem}: {why}" for stem, why in failed))
        if omitted:
            st.caption(f"{len(omitted)} figure(s) have no data for these runs and are left out, each named with "
                       "its reason in REPRODUCE.md: " + "; ".join(f"{o.run + ': ' if o.run else ''}{o.title}"
                                                                  for o in omitted) + ".")
        st.download_button(f"Download bundle ({rendered} figures, {len(data) / 1024:.0f} KB .zip)", data,
                           file_name=f"{file_stem(f'{name}-bundle')}.zip", mime="application/zip",
                           on_click="ignore", key=f"{key}_zip", type="primary", icon=":material/download:")


def _build(key: str, spec: tuple, build: Callable[..., Bundle]) -> None:
    """Check the options, then build the bundle with a progress bar; one sentence on the page when refused."""
    _, preset, formats, dpi = spec
    try:
        options = export_options(preset, formats, dpi)  # refused before any figure is drawn
    except EngineError as e:
        st.error(str(e))
        return
    bar = st.progress(0.0, text="Drawing the figures…")

    def on_event(event: Event) -> None:
        if isinstance(event, FigureRendered):
            bar.progress(event.index / event.total, text=f"Figure {event.index} of {event.total}: {event.figure}")

    try:
        with st.spinner("Building the bundle…"):
            try:
                export_server()  # a kept-open browser for every figure
            except Exception:  # noqa: BLE001 - export_figure then starts a browser per figure
                pass
            made = build(preset=options.preset, formats=options.formats, dpi=options.dpi, on_event=on_event)
        st.session_state[f"_{key}_bundle"] = (spec, made.zip_bytes(), made.failed, len(made.rendered), made.omitted)
    except EngineError as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001 - Kaleido or its browser: show, don't crash the page
        st.error(f"Export failed: {e}")
    bar.empty()
