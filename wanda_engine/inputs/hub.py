"""The Hugging Face hub, offline-first: cache-only mode, and a bounded reachability probe.

Models and datasets try the local cache first; only if that fails do they probe the hub, so an
offline machine gets a clear error within seconds instead of a minute of retries.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Iterator
from urllib.parse import urlparse

import huggingface_hub.constants as hc

HUB_TIMEOUT_S = 3.0


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Temporarily put `datasets` and `huggingface_hub` into offline (cache-only) mode."""
    import datasets.config as dc  # here, not at the top: importing `datasets` takes 1.3 s

    saved = (dc.HF_HUB_OFFLINE, getattr(dc, "HF_DATASETS_OFFLINE", None), hc.HF_HUB_OFFLINE)
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    dc.HF_HUB_OFFLINE = True
    dc.HF_DATASETS_OFFLINE = True
    hc.HF_HUB_OFFLINE = True
    os.environ.update({k: "1" for k in saved_env})
    try:
        yield
    finally:
        dc.HF_HUB_OFFLINE, dc.HF_DATASETS_OFFLINE, hc.HF_HUB_OFFLINE = saved
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """True if a TCP connection to the hub endpoint opens within `timeout` seconds (DNS included)."""
    try:
        endpoint = urlparse(hc.ENDPOINT)
    except Exception:  # noqa: BLE001 - a malformed HF_ENDPOINT: probe the default hub
        endpoint = urlparse("https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    # A thread bounds the whole probe: create_connection's timeout does not cover a hanging DNS lookup.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)
