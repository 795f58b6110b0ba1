"""Benchmark: what structured pruning buys against unstructured Wanda, on one machine, in one run.

For each method, one run through the engine's runner on the same loaded model and the same calibration windows (the
app's defaults: 16 x 256 tokens of Emma; perplexity on 10 x 512 tokens of Pride and Prejudice), each measuring its
pruned model's speed beside the dense model in this process. Prints one row per method: perplexity, the fraction of
the decoder blocks' parameters removed (or zeroed), parameters, prefill and decode speed-up (medians, and the
fastest rounds' ratio) with the ideal speed-up (matmul FLOPs per token, the LM head included) and prefill's share
of it, and the pruning time over the Wanda run's. Ratios measured in one run are what to compare: these machines
are noisy.

    python bench/shrink.py                                  # embedded model, CPU, 20% of the blocks' parameters
    python bench/shrink.py --device cuda --ratio 0.3 --json rows.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from table import print_table  # noqa: E402  (bench/ is the script's own folder)

from wanda_engine.config import EvalConfig, PruneConfig, RunRequest, SpeedConfig  # noqa: E402
from wanda_engine.inputs.models import load_model  # noqa: E402
from wanda_engine.runner.execute import execute_run  # noqa: E402
from wanda_engine.store.run_store import RunStore  # noqa: E402

WANDA = "wanda"  # the unstructured reference: its pruning time is the denominator
# (method, settings): the structured methods at --ratio of the blocks' parameters, Wanda at 50% unstructured
RUNS = {
    "flap": dict(method="flap", bias_compensation=True),
    "flap-global": dict(method="flap", bias_compensation=True, allocation="global"),
    "flap-no-bias": dict(method="flap"),  # what the compensation alone buys
    "wanda-sp": dict(method="wanda-sp"),
    "magnitude-sp": dict(method="magnitude-sp"),
    "depth": dict(method="block-influence"),
    WANDA: dict(method="wanda", sparsity=0.5),
}


def row(record, wanda_prune_s: float | None) -> dict:
    s, sp = record.structure, record.speed
    removed = s.removed_fraction if s else None
    return {
        "method": record.label(), "ppl": round(record.ppl, 3), "ppl_dense": round(record.ppl_dense, 3),
        "removed_of_blocks": round(removed, 4) if removed is not None else None,
        "zeroed_of_blocks": round(record.sparsity, 4),
        "params": sp.pruned.params, "params_dense": sp.dense.params,
        "prefill_speedup": round(sp.prefill_speedup, 3), "decode_speedup": round(sp.decode_speedup, 3),
        "ideal_speedup": round(sp.ideal_speedup, 3), "prefill_of_ideal": round(sp.prefill_speedup / sp.ideal_speedup, 3),
        # the fastest round of each: on a shared machine the least disturbed one (the record keeps every round)
        "prefill_speedup_best": round(min(sp.dense.prefill_s) / min(sp.pruned.prefill_s), 3),
        "decode_speedup_best": round(min(sp.dense.decode_s) / min(sp.pruned.decode_s), 3),
        "prune_s": record.timings["prune_s"],
        "prune_vs_wanda": round(record.timings["prune_s"] / wanda_prune_s, 3) if wanda_prune_s else None,
        "device": sp.device, "threads": sp.threads, "dtype": sp.dtype,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--ratio", type=float, default=0.2, help="fraction of the decoder blocks' parameters to remove")
    p.add_argument("--methods", default=",".join(RUNS), help="comma-separated: " + ", ".join(RUNS))
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--eval-windows", type=int, default=10)
    p.add_argument("--eval-seqlen", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=9, help="interleaved rounds per run (the median is kept)")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    names = sorted(names, key=lambda n: n != WANDA)  # Wanda first: the others' pruning time is compared with it
    loaded = load_model(args.model, dtype=args.dtype)
    store = RunStore(tempfile.mkdtemp(prefix="bench-shrink-"))
    records = {}
    for name in names:
        settings = {"sparsity": args.ratio, **RUNS[name]}
        request = RunRequest(model=args.model, dtype=args.dtype,
                             prune=PruneConfig(nsamples=args.nsamples, seqlen=args.seqlen, device=args.device,
                                               **settings),
                             eval=EvalConfig(seqlen=args.eval_seqlen, windows=args.eval_windows),
                             speed=SpeedConfig(args.decode_tokens, args.repeats))
        records[name] = execute_run(request, store=store, loaded=loaded).record
        print(f"{name}: ppl {records[name].ppl:.3f}", file=sys.stderr, flush=True)
    wanda_s = records[WANDA].timings["prune_s"] if WANDA in records else None
    rows = [row(records[name], wanda_s) for name in names]
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
