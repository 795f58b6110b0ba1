"""Worker for tests/test_distributed.py, run under `torchrun`: prunes a tiny model with the
calibration windows shared among the ranks and saves rank 0's masks and block records."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import TINY_VOCAB, tiny_model  # noqa: E402

from wanda_engine.config import PruneConfig  # noqa: E402
from wanda_engine.inputs.layers import find_blocks, find_linears, weight_of  # noqa: E402
from wanda_engine.pruning.pipeline import prune_model  # noqa: E402


def main(out: str, specs: list[str]) -> None:
    torch.set_num_threads(1)  # the same reduction order in every process, whatever the rank count
    dist.init_process_group("gloo")
    calib = torch.randint(0, TINY_VOCAB, (8, 16), generator=torch.Generator().manual_seed(0))
    results = {}
    for spec in specs:
        method, _, layerwise = spec.partition("+")
        model = tiny_model("llama")
        cfg = PruneConfig(method=method, sparsity=0.6, layerwise=layerwise or "uniform", nsamples=8, seqlen=16,
                          batch_size=2, device="cpu")
        result = prune_model(model, calib, cfg)
        _, blocks = find_blocks(model)
        masks = {f"{spec}/{i}.{n}": weight_of(l) == 0 for i, b in enumerate(blocks) for n, l in find_linears(b).items()}
        results[spec] = {"masks": masks, "blocks": [b.to_dict() for b in result.blocks], "world": result.world_size}
    if dist.get_rank() == 0:
        torch.save({k: v["masks"] for k, v in results.items()}, out)
        Path(out + ".json").write_text(json.dumps({k: {"blocks": v["blocks"], "world": v["world"]}
                                                   for k, v in results.items()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","))
