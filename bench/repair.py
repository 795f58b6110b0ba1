"""Benchmark: how much of the perplexity gap each repair closes at exactly the same sparsity (issue 14).

For Wanda 50% and magnitude 50% of the embedded model (16×256 calibration tokens, the app's evaluation of
10×512 tokens of Pride and Prejudice): the pruned model, + OBS weight update (a prune with weight_update
'obs'), + sparse full fine-tuning, + LoRA (masked merge); and the dense model fine-tuned with the same budget,
the fair reference (fine-tuning on Austen also adapts to Austen's style, which lowers its perplexity for
reasons that have nothing to do with repair). WikiText-2's test split (../shared/data, out of domain) is
evaluated on every model where it is there. Prints one Markdown table, its settings and its times.

    python bench/repair.py                                   # the full table: about an hour on 2 cores
    python bench/repair.py --steps 4 --eval-windows 2        # a smoke run
    python bench/repair.py --device cuda                     # the same on a GPU
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from table import print_table  # noqa: E402  (bench/ is the script's own folder)

from wanda_engine.config import EvalConfig, PruneConfig, RunRequest  # noqa: E402
from wanda_engine.inputs.data import WIKITEXT2_TEST_ENV, eval_tokens  # noqa: E402
from wanda_engine.core.errors import ConfigError  # noqa: E402
from wanda_engine.evaluation.perplexity import perplexity  # noqa: E402
from wanda_engine.inputs.models import load_model  # noqa: E402
from wanda_engine.repair.config import DEFAULT_LR, RepairConfig, RepairRequest  # noqa: E402
from wanda_engine.repair.run import execute_repair  # noqa: E402
from wanda_engine.runner.execute import execute_run  # noqa: E402
from wanda_engine.store.run_store import load_run  # noqa: E402

SHARED_WIKITEXT2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2-raw-test.txt"


def wikitext_ppl(folder: str | None, args: argparse.Namespace, loaded=None) -> str:
    """WikiText-2 test perplexity of a saved (or the `loaded`) model, on as many windows as the Austen rows."""
    if not SHARED_WIKITEXT2.is_file():
        return "not measured (no ../shared/data/wikitext2-raw-test.txt)"
    loaded = loaded or load_model(folder)
    tokens, label = eval_tokens(loaded.tokenizer, "wikitext2")
    return f"{perplexity(loaded.model, tokens, args.eval_seqlen, label, args.eval_windows, 1, args.device).ppl:.2f}"


def prune(loaded, method: str, update: str, out: Path, args: argparse.Namespace):
    pc = PruneConfig(method=method, sparsity=0.5, nsamples=args.nsamples, seqlen=args.calib_seqlen,
                     weight_update=update, device=args.device)
    request = RunRequest(model=args.model, prune=pc, eval=EvalConfig(seqlen=args.eval_seqlen, windows=args.eval_windows),
                         save_model=str(out / f"{pc.stem}-model"))
    return execute_run(request, run_dir=out / pc.stem, loaded=loaded).record, request.save_model


def repair(run_dir: Path, method: str, dense: bool, out: Path, args: argparse.Namespace):
    config = RepairConfig(method=method, steps=args.steps, seqlen=args.train_seqlen, eval_every=args.steps,
                          device=args.device, dense=dense)
    folder = out / f"{run_dir.name}-{config.stem()}-model"
    record = execute_repair(RepairRequest(run=str(run_dir), config=config, save_model=str(folder)))
    return record, str(folder)


def _row(what: str, method: str, ppl: float, wiki: str, sparsity: float, tokens: int, seconds: float) -> dict:
    return {"model": what, "mask": method, "PP ppl": f"{ppl:.2f}", "WikiText-2 ppl": wiki,
            "sparsity": f"{sparsity:.4f}", "tokens trained": f"{tokens:,}", "seconds": f"{seconds:.0f}"}


def bench_mask(loaded, method: str, out: Path, args: argparse.Namespace) -> list[dict]:
    rows = []
    t = time.perf_counter()
    pruned, folder = prune(loaded, method, "none", out, args)
    rows.append(_row("pruned", method, pruned.ppl, wikitext_ppl(folder, args), pruned.sparsity, 0,
                     time.perf_counter() - t))
    t = time.perf_counter()
    try:
        obs, obs_folder = prune(loaded, method, "obs", out, args)
        rows.append(_row("+obs", method, obs.ppl, wikitext_ppl(obs_folder, args), obs.sparsity, 0,
                         time.perf_counter() - t))
    except ConfigError as e:
        rows.append({**_row("+obs", method, float("nan"), "not measured", pruned.sparsity, 0, 0), "PP ppl": f"not measured ({e})"})
    for repair_method, what in (("finetune", "+sparse fine-tune"), ("lora", "+LoRA (masked merge)")):
        t = time.perf_counter()
        rec, rep_folder = repair(out / pruned.name, repair_method, False, out, args)
        rows.append(_row(what, method, rec.ppl_after, wikitext_ppl(rep_folder, args), rec.sparsity_after,
                         rec.request.config.tokens(), time.perf_counter() - t))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--steps", type=int, default=RepairConfig().steps)
    p.add_argument("--train-seqlen", type=int, default=RepairConfig().seqlen)
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--calib-seqlen", type=int, default=256)
    p.add_argument("--eval-windows", type=int, default=10)
    p.add_argument("--eval-seqlen", type=int, default=512)
    p.add_argument("--methods", default="wanda,magnitude")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = p.parse_args()
    if SHARED_WIKITEXT2.is_file():
        os.environ[WIKITEXT2_TEST_ENV] = str(SHARED_WIKITEXT2)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        loaded = load_model(args.model)
        rows = [_row("dense", "-", float("nan"), wikitext_ppl(None, args, loaded), 0.0, 0, 0)]
        rows += [row for method in args.methods.split(",") for row in bench_mask(loaded, method, out, args)]
        first = out / PruneConfig(method=args.methods.split(",")[0], sparsity=0.5).stem
        rows[0]["PP ppl"] = f"{load_run(first).record.ppl_dense:.2f}"  # every run measured the same dense model
        for repair_method in ("finetune", "lora"):
            t = time.perf_counter()
            rec, folder = repair(first, repair_method, True, out, args)
            rows.append(_row(f"dense +{repair_method}", "-", rec.ppl_after, wikitext_ppl(folder, args),
                             rec.sparsity_after, rec.request.config.tokens(), time.perf_counter() - t))
    c = RepairConfig(steps=args.steps, seqlen=args.train_seqlen)
    print(f"model {args.model}; calibration {args.nsamples}×{args.calib_seqlen} tokens of Emma (seed 0); evaluation "
          f"{args.eval_windows}×{args.eval_seqlen} tokens of Pride and Prejudice (PP) and of WikiText-2 test; repairs "
          f"{c.steps} steps × {c.batch_size}×{c.seqlen} tokens of Emma = {c.tokens():,} tokens (lr {DEFAULT_LR['finetune']:g} "
          f"finetune, {DEFAULT_LR['lora']:g} LoRA r{c.lora_rank} on every decoder linear, {c.schedule}, warmup "
          f"{min(c.warmup_steps, c.steps // 10)} steps); device {args.device}; "
          f"total {time.perf_counter() - started:.0f} s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print_table(rows)


if __name__ == "__main__":
    main()
