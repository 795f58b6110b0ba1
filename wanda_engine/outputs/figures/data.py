"""The data behind any figure as a long-form table, for CSV / JSON export next to the image."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

if TYPE_CHECKING:
    import pandas as pd


def figure_data(fig: go.Figure) -> pd.DataFrame:
    """The data behind a figure in long form: one row per bar / point / heatmap cell.

    Columns: trace, type, x, y, z, text (missing values as NaN/None). Multi-category x values are
    joined with ' / '.
    """
    import pandas as pd  # imported here: pandas costs ~1 s and the figures need it only for export
    frames = []
    for i, tr in enumerate(fig.data):
        name = tr.name if tr.name is not None else f"trace {i}"
        kind = tr.type
        x, y = getattr(tr, "x", None), getattr(tr, "y", None)
        z = getattr(tr, "z", None) if kind in ("heatmap", "contour") else None
        text = getattr(tr, "text", None)
        if z is not None:
            za = np.asarray(z, dtype=float) if not isinstance(z, np.ndarray) else z.astype(float)
            if za.ndim == 1:
                za = za[None, :]
            ny, nx = za.shape
            xs = np.asarray(x, dtype=object) if x is not None else np.arange(nx)
            ys = np.asarray(y, dtype=object) if y is not None else np.arange(ny)
            gx, gy = np.meshgrid(xs[:nx], ys[:ny])
            df = pd.DataFrame({"x": gx.ravel(), "y": gy.ravel(), "z": za.ravel()})
            if text is not None and np.ndim(text) == 2 and np.shape(text) == za.shape:
                df["text"] = np.asarray(text, dtype=object).ravel()
        else:
            if all(v is None for v in (*(() if x is None else x), *(() if y is None else y))):
                continue  # nothing drawn: no data, or a legend entry's key
            if x is not None and isinstance(x, (tuple, list)) and len(x) and isinstance(x[0], (list, tuple, np.ndarray)):
                x = [" / ".join(str(p) for p in parts) for parts in zip(*x)]
            n = len(y) if y is not None else len(x)
            xa = np.asarray(x, dtype=object) if x is not None else np.arange(n)
            ya = np.asarray(y, dtype=object) if y is not None else np.full(n, None)
            df = pd.DataFrame({"x": xa[:n], "y": ya[:n]})
            if text is not None and not isinstance(text, str) and np.ndim(text) == 1 and len(text) == n:
                df["text"] = np.asarray(text, dtype=object)
        df.insert(0, "type", kind)
        df.insert(0, "trace", name)
        frames.append(df)
    cols = ["trace", "type", "x", "y", "z", "text"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    for c in cols:
        if c not in out:
            out[c] = None
    return out[cols]
