"""Joining torch.distributed when launched by torchrun: data-parallel calibration.

    torchrun --standalone --nproc-per-node 2 -m wanda_engine prune ...

Every rank loads the model and the same calibration windows; `prune_model` gives each rank its
share of the windows and sums the statistics over ranks, so every rank selects the same masks.
Rank 0 alone evaluates and writes the run directory.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes (WORLD_SIZE > 1); (rank, world size), or (0, 1) alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # Rank 0 measures the dense perplexity before pruning while the others wait at the first
        # all-reduce: a long timeout, not the default 30 minutes.
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=6))
    return dist.get_rank(), dist.get_world_size()


def finish() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
