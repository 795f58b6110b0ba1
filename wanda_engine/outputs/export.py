"""Figures → PNG / SVG / PDF bytes through kaleido 1.x and a local Chromium (Debian's /usr/bin/chromium).

Kaleido 1.x starts a headless Chromium for every export (~2-3 s) unless a browser is kept open.
`start_export_server()` keeps one open in a background thread with its own event loop; exports then
take a fraction of a second. `export_figure` works either way: without the server it starts a
browser for the one export.

Why not `kaleido.start_sync_server()`: its `call_function` waits on a shared task queue and takes
the next result from a shared result queue, so two threads exporting at once can receive each
other's images, and a call blocks forever if the server thread has died. Here every export is its
own future on the server's loop (`asyncio.run_coroutine_threadsafe`), with a timeout.

Chromium flags: choreographer (kaleido's browser driver) passes `--no-sandbox` unless
`enable_sandbox=True`, plus `--headless --disable-gpu --disable-dev-shm-usage`, so running as root
in a container needs nothing extra.

No MathJax (`mathjax=False` on the page kaleido renders in): kaleido would fetch it from a CDN, which
stalls or fails offline. The labels are clean Unicode math instead (‖Xⱼ‖₂, ×, ΔW, ≤, subscripts), which
needs no script at all, renders the same on screen and in print, and stays ordinary searchable text in
the PDF and SVG (LaTeX itself then only captions the figure).

Print size (`preset=`, see `figures.paper`): the figure is laid out at its physical size in CSS pixels
(96 per inch) with fonts in points, then PNG is rendered at `dpi` (width_in × dpi pixels wide), PDF on a
page of width_in × 72 pt (Chromium prints the page at 96 px per inch, text kept as text with its fonts
embedded), and SVG with width="…in" height="…in" on its root and a viewBox in the layout's pixels.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import io
import re
import threading
from typing import Any

from ..core.errors import ConfigError
from .figures.paper import CSS_PX_PER_IN, PT_PER_IN, PrintPreset, paper_figure, print_preset
from .figures.ticks import categorical_axes, fit_ticks

FORMATS = ("png", "svg", "pdf")
DPI_RANGE = (50, 2400)  # PNG resolution at the print size: a screen's preview to an art print
MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}

PAPER_FONT = {"family": "Arial, 'Liberation Sans', Helvetica, sans-serif", "size": 14, "color": "black"}
RENDER_TIMEOUT_S = 90.0
START_TIMEOUT_S = 60.0
# kaleido prints PDFs with 0.1-in page margins inside a page the figure's own size, which shifts the
# figure and crops its right and bottom edges; a CSS @page margin of 0 takes precedence over them.
_NO_PAGE_MARGIN = "<style>@page { margin: 0; }</style>\n"


KEPT_OPEN_TABS = 2  # two exports at once (two sessions, say) render side by side
RELOAD_EVERY = 20


def _kaleido_options(tabs: int = 1) -> dict[str, Any]:
    """One Kaleido's options: its tabs, the render timeout, and its page without MathJax or page margins."""
    import kaleido

    page = kaleido.PageGenerator(mathjax=False)
    page.header = kaleido.PageGenerator.header + _NO_PAGE_MARGIN
    return {"n": tabs, "timeout": RENDER_TIMEOUT_S, "page_generator": page}


def _kept_open_kaleido(**options: Any) -> Any:
    """A kaleido.Kaleido that reloads a tab only every RELOAD_EVERY renders, and after handing the image back.

    Kaleido reloads the tab (plotly.js parsed again, ~0.2 s of CPU) after every render, before it returns
    the image. A render leaves nothing behind that the next one reads (plotly.toImage draws into a
    detached element, and the PDF's page style and image are set anew each time), so here the reload
    only bounds the tab's memory: every RELOAD_EVERY renders, run on the server's loop after the image has
    gone back; the next render takes the tab once it is ready (kaleido's own tab queue)."""
    import kaleido

    class KeptOpen(kaleido.Kaleido):
        async def _return_kaleido_tab(self, tab: Any) -> None:
            renders = self._renders[id(tab)] = self._renders.get(id(tab), 0) + 1
            if renders % RELOAD_EVERY:
                await self.tabs_ready.put(tab)
                return
            reload = asyncio.ensure_future(super()._return_kaleido_tab(tab))
            self._reloading.add(reload)  # a reference, so the task is not collected half-way
            reload.add_done_callback(self._reloading.discard)

    k = KeptOpen(**options)
    k._renders, k._reloading = {}, set()
    return k


class _ExportServer:
    """One Chromium kept open by a kaleido.Kaleido on a private event loop in a daemon thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wanda-figure-export", daemon=True)
        self._thread.start()
        try:
            self._kaleido = self._call(self._open(), START_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _open() -> Any:
        k = _kept_open_kaleido(**_kaleido_options(KEPT_OPEN_TABS))
        await k.open()
        return k

    def _call(self, coro: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def render(self, fig_dict: dict, opts: dict) -> bytes:
        return self._call(self._kaleido.calc_fig(fig_dict, opts=opts), RENDER_TIMEOUT_S + 5)

    def close(self) -> None:
        try:
            self._call(self._kaleido.close(), 30)
        finally:
            self._stop_loop()

    @staticmethod
    async def _cancel_pending() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop_loop(self) -> None:
        with contextlib.suppress(Exception):  # e.g. the watchdog of a browser that was killed
            self._call(self._cancel_pending(), 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


_server: _ExportServer | None = None
_server_wanted = False  # start_export_server was called (and stop was not): restart a server that died
_server_lock = threading.Lock()
_atexit_registered = False


def start_export_server() -> None:
    """Keep a Chromium open for fast exports. Idempotent and thread-safe; raises if no browser starts."""
    global _server, _server_wanted, _atexit_registered
    with _server_lock:
        if _server is None:
            _server = _ExportServer()
        _server_wanted = True
        if not _atexit_registered:
            atexit.register(stop_export_server)
            _atexit_registered = True


def stop_export_server() -> None:
    """Close the kept-open Chromium, if any. Idempotent and thread-safe."""
    global _server, _server_wanted
    with _server_lock:
        server, _server, _server_wanted = _server, None, False
    if server is not None:
        with contextlib.suppress(Exception):  # a browser that is already gone needs no closing
            server.close()


def export_server_running() -> bool:
    """Whether the kept-open export browser is up (started by `start_export_server`, not stopped since)."""
    return _server is not None


def _oneshot(fig_dict: dict, opts: dict) -> bytes:
    """Start a browser for one export, on a fresh event loop in its own thread (the caller may have a loop)."""
    import kaleido

    result: dict[str, Any] = {}

    async def run() -> bytes:
        async with kaleido.Kaleido(**_kaleido_options()) as k:
            return await k.calc_fig(fig_dict, opts=opts)

    def target() -> None:
        try:
            result["value"] = asyncio.run(run())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    t = threading.Thread(target=target, name="wanda-figure-export-oneshot", daemon=True)
    t.start()
    t.join(START_TIMEOUT_S + RENDER_TIMEOUT_S)
    if t.is_alive():
        raise TimeoutError("the figure export did not finish within "
                           f"{START_TIMEOUT_S + RENDER_TIMEOUT_S:.0f} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _paper_dict(fig: Any, width: float, height: float) -> dict:
    """`fig` as a new plotly dict with paper fonts, a plain white background and the ticks that fit `width` ×
    `height` px (`fig` is not touched): the screen-size export. Works on the dict rather than through
    go.Figure(fig): that re-validates every property (~60 ms).
    """
    d = fig.to_dict() if hasattr(fig, "to_dict") else copy.deepcopy(dict(fig))
    layout = d.setdefault("layout", {})
    margin = {"t": 100, "b": 80, "l": 80, "r": 80, **(layout.get("margin") or {})}
    fit_ticks(layout, width - margin["l"] - margin["r"], height - margin["t"] - margin["b"], PAPER_FONT["size"],
              categorical_axes(d.get("data") or []))
    layout["font"] = {**(layout.get("font") or {}), **PAPER_FONT}
    title = layout.get("title")
    if isinstance(title, dict):
        title["font"] = {**(title.get("font") or {}), "family": PAPER_FONT["family"],
                         "size": PAPER_FONT["size"] + 3, "color": "black"}
    layout["paper_bgcolor"] = layout["plot_bgcolor"] = "white"
    return d


def check_dpi(dpi: Any) -> int:
    """`dpi` when it is a whole number in DPI_RANGE; else ConfigError, one sentence."""
    lo, hi = DPI_RANGE
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not lo <= dpi <= hi:
        raise ConfigError(f"export dpi must be a whole number between {lo} and {hi}, not {dpi!r}.")
    return dpi


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"export {name} must be a positive number, not {value!r}.")


def _resolve_preset(preset: PrintPreset | str) -> PrintPreset:
    if isinstance(preset, PrintPreset):
        return preset
    if isinstance(preset, str):
        return print_preset(preset)
    raise ConfigError(f"export preset must be a preset's name or a PrintPreset, not {preset!r}.")


def _physical_svg(svg: bytes, preset: PrintPreset) -> bytes:
    """The root <svg>'s width and height in inches, its viewBox in the layout's pixels (the drawing unchanged)."""
    head_end = svg.index(b">", svg.index(b"<svg")) + 1
    head = svg[:head_end].decode()
    size = f'width="{preset.width_in:g}in" height="{preset.height_in:g}in"'
    head = re.sub(r'\swidth="[^"]*"\s+height="[^"]*"', " " + size, head, count=1)
    if "viewBox" not in head:
        head = head.replace("<svg", f'<svg viewBox="0 0 {preset.width_px:g} {preset.height_px:g}"', 1)
    return head.encode() + svg[head_end:]


def _physical_pdf(pdf: bytes, preset: PrintPreset) -> bytes:
    """The page set to exactly the preset in points: Chromium rounds a page's height to 1/300 in (2.4 in
    comes out 0.24 pt tall, 5.625 in 0.12 pt short); the strip gained or lost is the figure's top margin."""
    import pypdf

    reader = pypdf.PdfReader(io.BytesIO(pdf))
    writer = pypdf.PdfWriter(clone_from=reader)
    width, height = preset.width_in * PT_PER_IN, preset.height_in * PT_PER_IN
    for page in writer.pages:
        page.mediabox = page.cropbox = pypdf.generic.RectangleObject((0, 0, width, height))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _render_options(fmt: str, width: float, height: float, scale: float, preset: PrintPreset | None,
                    dpi: int) -> dict:
    if preset is None:
        return {"format": fmt, "width": int(width), "height": int(height), "scale": float(scale)}
    if fmt != "png":  # one CSS px is 1/96 in: the page is the preset
        return {"format": fmt, "width": preset.width_px, "height": preset.height_px, "scale": 1.0}
    # the canvas truncates width × scale to whole pixels: aim at the middle of the wanted pixel
    scale = dpi / CSS_PX_PER_IN
    return {"format": fmt, "width": (round(preset.width_in * dpi) + 0.5) / scale,
            "height": (round(preset.height_in * dpi) + 0.5) / scale, "scale": scale}


def export_figure(fig: Any, fmt: str, width: int = 900, height: int = 600, scale: float = 2.0, *,
                  preset: PrintPreset | str | None = None, dpi: int = 300, keep_title: bool = False) -> bytes:
    """Render `fig` as PNG, SVG or PDF bytes; `fig` itself is not touched.

    Without `preset`: `width` × `height` pixels (PNG × `scale`) with publication fonts. With a preset (a
    `PrintPreset` or a preset's name): the physical size wins and `width`/`height`/`scale` are ignored:
    paper style (`figures.paper.paper_figure`, the title kept only with `keep_title`), PNG width_in × dpi
    pixels wide, PDF's page width_in × 72 pt, SVG's root width="<width_in>in" (a viewBox in CSS px)."""
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}.")
    for name, value in (("width", width), ("height", height), ("scale", scale)):
        _check_number(name, value)
    paper = _resolve_preset(preset) if preset is not None else None
    if paper is not None:
        check_dpi(dpi)
    fig_dict = paper_figure(fig, paper, keep_title) if paper is not None else _paper_dict(fig, width, height)
    opts = _render_options(fmt, width, height, scale, paper, dpi)
    image = _render(fig_dict, opts)
    if paper is not None and fmt == "svg":
        return _physical_svg(image, paper)
    if paper is not None and fmt == "pdf":
        return _physical_pdf(image, paper)
    return image


def _render(fig_dict: dict, opts: dict) -> bytes:
    """On the kept-open browser if there is one (restarting it once if it died), else a one-shot browser."""
    global _server
    server = _server
    if server is None and _server_wanted:
        with contextlib.suppress(Exception):  # the kept-open browser died earlier: start another
            start_export_server()
        server = _server
    if server is not None:
        from kaleido.errors import JavascriptError, KaleidoError

        try:
            return server.render(fig_dict, opts)
        except (KaleidoError, JavascriptError):
            raise  # plotly.js rejected this figure; the browser is fine
        except Exception:  # noqa: BLE001 - the kept-open browser may have died: drop it, try a fresh one
            with _server_lock:
                if _server is server:
                    _server = None
            with contextlib.suppress(Exception):
                server.close()
    return _oneshot(fig_dict, opts)
