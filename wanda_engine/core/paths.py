"""Where the engine keeps what it computes once (the embedded model's fp32 copy, dense results, task
indexes): $WANDA_CACHE, or ~/.cache/wanda_engine. Torch-free."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("WANDA_CACHE", Path.home() / ".cache" / "wanda_engine"))
