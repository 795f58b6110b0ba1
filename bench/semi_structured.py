"""2:4 sparsity's payoff on a GPU: torch.sparse.to_sparse_semi_structured against dense, per matrix and per block.

Needs CUDA on an Ampere-or-newer GPU (the 2:4 sparse tensor cores); on anything else it says so and exits 2.
LLaMA-7B shapes, fp16, random weights pruned 2:4 by the engine's N:M selector (magnitude scores):

    python bench/semi_structured.py --json semi.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from table import print_table  # noqa: E402  (bench/ is the script's own folder)

from wanda_engine.methods.selection import select  # noqa: E402

SHAPES = {"q/k/v/o_proj": (4096, 4096), "gate/up_proj": (11008, 4096), "down_proj": (4096, 11008)}  # [out, in]


def cuda_ms(fn, repeat: int = 50) -> float:
    """Median of `repeat` CUDA-event timings, after a warm-up."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def pruned_2of4(out_f: int, in_f: int) -> torch.Tensor:
    w = torch.randn(out_f, in_f, device="cuda", dtype=torch.float16)
    return w.masked_fill(select(w.abs().float(), 0.5, "nm", (2, 4)).mask, 0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default="1,16,128", help="tokens x batch per forward")
    p.add_argument("--json", help="write the rows here too")
    args = p.parse_args()
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        print("semi-structured sparsity needs a CUDA GPU of compute capability 8.0 or newer", file=sys.stderr)
        return 2
    from torch.sparse import to_sparse_semi_structured

    torch.manual_seed(0)
    rows = []
    for tokens in [int(t) for t in args.tokens.split(",")]:
        for name, (out_f, in_f) in SHAPES.items():
            w = pruned_2of4(out_f, in_f)
            ws = to_sparse_semi_structured(w)
            x = torch.randn(tokens, in_f, device="cuda", dtype=torch.float16)
            # same result, up to fp16 rounding
            err = float((F.linear(x, ws) - F.linear(x, w)).abs().max())
            dense, sparse = cuda_ms(lambda: F.linear(x, w)), cuda_ms(lambda: F.linear(x, ws))
            rows.append({"what": name, "shape": f"{out_f}x{in_f}", "tokens": tokens, "dense_ms": round(dense, 4),
                         "sparse_ms": round(sparse, 4), "speedup": round(dense / sparse, 2), "max_abs_diff": err})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        rows.append(block_row(tokens))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                               "rows": rows}, indent=1))
    return 0


def block_row(tokens: int) -> dict:
    """A whole LLaMA-7B decoder block forward, dense against its 7 matrices 2:4-sparse."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding
    from torch.sparse import to_sparse_semi_structured

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32)
    block = LlamaDecoderLayer(cfg, layer_idx=0).to("cuda", torch.float16).eval()
    rotary = LlamaRotaryEmbedding(cfg).to("cuda")
    x = torch.randn(1, tokens, 4096, device="cuda", dtype=torch.float16)
    pos = torch.arange(tokens, device="cuda")[None]
    emb = rotary(x, pos)
    with torch.inference_mode():
        for lin in [m for m in block.modules() if isinstance(m, torch.nn.Linear)]:
            lin.weight.copy_(lin.weight.masked_fill(select(lin.weight.abs().float(), 0.5, "nm", (2, 4)).mask, 0))
        run = lambda: block(x, position_embeddings=emb, position_ids=pos)  # noqa: E731
        dense = cuda_ms(run, 20)
        for lin in [m for m in block.modules() if isinstance(m, torch.nn.Linear)]:
            lin.weight = torch.nn.Parameter(to_sparse_semi_structured(lin.weight), requires_grad=False)
        sparse = cuda_ms(run, 20)
    return {"what": "decoder block", "shape": "llama-7b", "tokens": tokens, "dense_ms": round(dense, 4),
            "sparse_ms": round(sparse, 4), "speedup": round(dense / sparse, 2), "max_abs_diff": None}


if __name__ == "__main__":
    sys.exit(main())
