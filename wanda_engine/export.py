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
in a container needs nothing extra. MathJax is turned off (`mathjax=False`): by default kaleido
loads it from a CDN, which costs seconds (or fails) without network, and no figure here uses LaTeX.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import threading
from typing import Any

FORMATS = ("png", "svg", "pdf")
MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}

PAPER_FONT = {"family": "Arial, 'Liberation Sans', Helvetica, sans-serif", "size": 14, "color": "black"}
RENDER_TIMEOUT_S = 90.0
START_TIMEOUT_S = 60.0
_KALEIDO_OPTS: dict[str, Any] = {"n": 1, "mathjax": False, "timeout": RENDER_TIMEOUT_S}


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
        import kaleido

        k = kaleido.Kaleido(**_KALEIDO_OPTS)
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
    return _server is not None


def _oneshot(fig_dict: dict, opts: dict) -> bytes:
    """Start a browser for one export, on a fresh event loop in its own thread (the caller may have a loop)."""
    import kaleido

    result: dict[str, Any] = {}

    async def run() -> bytes:
        async with kaleido.Kaleido(**_KALEIDO_OPTS) as k:
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


def _paper_dict(fig: Any) -> dict:
    """`fig` as a new plotly dict with paper fonts and a plain white background (`fig` is not touched).

    Works on the dict rather than through go.Figure(fig): that re-validates every property (~60 ms).
    """
    d = fig.to_dict() if hasattr(fig, "to_dict") else copy.deepcopy(dict(fig))
    layout = d.setdefault("layout", {})
    layout["font"] = {**(layout.get("font") or {}), **PAPER_FONT}
    title = layout.get("title")
    if isinstance(title, dict):
        title["font"] = {**(title.get("font") or {}), "family": PAPER_FONT["family"],
                         "size": PAPER_FONT["size"] + 3, "color": "black"}
    layout["paper_bgcolor"] = layout["plot_bgcolor"] = "white"
    return d


def export_figure(fig: Any, fmt: str, width: int = 900, height: int = 600, scale: float = 2.0) -> bytes:
    """Render `fig` as PNG, SVG or PDF bytes, with publication fonts applied to a copy."""
    global _server
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}.")
    for name, value in (("width", width), ("height", height), ("scale", scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"export {name} must be a positive number, not {value!r}.")
    fig_dict = _paper_dict(fig)
    opts = {"format": fmt, "width": int(width), "height": int(height), "scale": float(scale)}
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
