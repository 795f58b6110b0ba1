"""The download controls under an exportable figure: the image through Kaleido, and the data behind it."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from wanda_engine import export, figures
from wanda_engine.runs import safe_file_stem


@st.cache_resource(show_spinner=False)
def export_server() -> bool:
    """Kaleido's browser, started once per server; every later export reuses it."""
    export.start_export_server()
    return True


def export_controls(fig: go.Figure, name: str, key: str) -> pd.DataFrame:
    """Format and size inputs, Render (PNG/SVG/PDF) then Download, and the figure's data as CSV and JSON.

    `name` says which figure this is and names the downloaded files; `key` prefixes the widgets' keys,
    one per figure on a page. Returns the data behind the figure, for the page to show if it wants to."""
    stem = safe_file_stem(name)
    c1, c2, c3, c4 = st.columns(4)
    fmt = c1.selectbox("Format", list(export.FORMATS), key=f"{key}_fmt", format_func=str.upper)
    width = c2.number_input("Width (px)", 200, 4000, 1000, step=50, key=f"{key}_w")
    height = c3.number_input("Height (px)", 150, 4000, 600, step=50, key=f"{key}_h")
    scale = c4.number_input("Scale", 0.5, 8.0, 2.0, step=0.5, key=f"{key}_scale",
                            help="Pixel multiplier for PNG; vector formats ignore it.")
    # the rendered bytes belong to these exact settings: any change hides the stale download
    spec = (name, fmt, int(width), int(height), float(scale))
    rendered = st.session_state.get(f"_{key}_rendered")
    b1, b2, b3, b4 = st.columns(4)
    if b1.button(f"Render {fmt.upper()}", key=f"{key}_render"):
        try:
            with st.spinner("Rendering with Kaleido…"):
                try:
                    export_server()  # a kept-open browser makes later exports fast
                except Exception:  # noqa: BLE001 - export_figure then starts a browser for this one export
                    pass
                data = export.export_figure(fig, fmt, width=int(width), height=int(height), scale=float(scale))
            st.session_state[f"_{key}_rendered"] = rendered = (spec, data)
        except Exception as e:  # noqa: BLE001 - Kaleido or its browser: show, don't crash the page
            st.error(f"Export failed: {e}")
    if rendered is not None and rendered[0] == spec:
        b2.download_button(f"Download {fmt.upper()} ({len(rendered[1]) / 1024:.0f} KB)", rendered[1],
                           file_name=f"{stem}.{fmt}", mime=export.MIME[fmt], on_click="ignore",
                           key=f"{key}_image", type="primary")
    table = figures.figure_data(fig)
    b3.download_button("Data as CSV", table.to_csv(index=False), file_name=f"{stem}.csv", mime="text/csv",
                       on_click="ignore", key=f"{key}_csv")
    b4.download_button("Data as JSON", table.to_json(orient="records", indent=1, default_handler=str),
                       file_name=f"{stem}.json", mime="application/json", on_click="ignore", key=f"{key}_json")
    return table
