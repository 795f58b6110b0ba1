"""Benchmark: what a record's second mask costs per comparison group, on the embedded model's matrix shapes.

Since issue 19 a Wanda run records magnitude's mask per matrix (magnitude's own group, the Compare's magnitude run),
where it was chosen per output row before: `select(score, sparsity, "matrix")` is a top-k over the whole matrix,
`"row"` one per row. Prints, for each shape, the median seconds of each over --repeat runs in this one process and
their ratio, then the ratio summed over one block of SmolLM2-135M (q, k, v, o, gate, up, down).

    python bench/selection_groups.py [--repeat 15] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from table import print_table  # noqa: E402  (bench/ is the script's own folder)

from wanda_engine.methods.selection import select  # noqa: E402

# [out, in] of one SmolLM2-135M block's linears: q, k, v, o, gate, up, down
BLOCK = {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576),
         "gate_proj": (1536, 576), "up_proj": (1536, 576), "down_proj": (576, 1536)}


def seconds(score: torch.Tensor, group: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        select(score, 0.5, group)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the records' selection runs on one)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows, total = [], {"row": 0.0, "matrix": 0.0}
    with torch.inference_mode():
        for name, shape in BLOCK.items():
            score = torch.rand(shape, generator=torch.Generator().manual_seed(0)).abs()
            t = {group: seconds(score, group, a.repeat) for group in ("row", "matrix")}
            total = {g: total[g] + t[g] for g in t}
            rows.append({"matrix": name, "shape": f"{shape[0]}×{shape[1]}", "row_ms": round(t["row"] * 1e3, 2),
                         "matrix_ms": round(t["matrix"] * 1e3, 2), "matrix/row": round(t["matrix"] / t["row"], 2)})
    rows.append({"matrix": "one block", "shape": "", "row_ms": round(total["row"] * 1e3, 2),
                 "matrix_ms": round(total["matrix"] * 1e3, 2), "matrix/row": round(total["matrix"] / total["row"], 2)})
    print_table(rows)


if __name__ == "__main__":
    main()
