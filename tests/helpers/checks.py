"""Checks only the tests need."""
from __future__ import annotations

import hashlib

import torch
from torch import nn


def parameter_checksum(model: nn.Module) -> str:
    """A checksum over every parameter's bytes: proves a cached model was not mutated."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if p.numel() else b"")
    return h.hexdigest()
