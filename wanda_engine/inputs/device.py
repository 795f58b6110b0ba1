"""Where a run computes: the device a name asks for ('auto', 'cpu', 'cuda', 'cuda:1'), refused in one sentence
when CUDA is asked for and absent."""
from __future__ import annotations

import torch

from ..core.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The torch device `name` asks for; 'auto' is CUDA when it is available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available")
    return torch.device(name)
