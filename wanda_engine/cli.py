"""python -m wanda_engine prune ... : the engine headless, for GPU servers and scripted sweeps.

Exit status 0 on success; on any error one line `error: ...` on stderr and status 1 (2 for usage).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Sequence

from .config import EvalConfig, PruneConfig
from .errors import EngineError, PruneCancelled
from .events import BlockFinished, Event, MatrixPruned, StageStarted


def _add_prune_args(p: argparse.ArgumentParser) -> None:
    d = PruneConfig()
    p.add_argument("--model", default="default", help="default | HF_ID | DIR | FILE.gguf")
    p.add_argument("--method", default=d.method, help="magnitude | wanda | sparsegpt")
    p.add_argument("--sparsity", type=float, default=d.sparsity, help="fraction of weights to prune, in [0, 1)")
    p.add_argument("--pattern", default=d.pattern, help="unstructured | N:M (e.g. 2:4)")
    p.add_argument("--group", default=None, help="row | matrix (default: the reference's per method)")
    p.add_argument("--variant", action="store_true", help="Wanda's adaptive-alpha variant")
    p.add_argument("--calib", default=d.calib, help="default | wikitext2 | c4 | FILE.txt | FILE.npy")
    p.add_argument("--nsamples", type=int, default=d.nsamples)
    p.add_argument("--seqlen", type=int, default=d.seqlen)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="calibration windows per block forward")
    p.add_argument("--eval", default="default", help="default | wikitext2 | c4 | FILE.txt | none")
    p.add_argument("--eval-windows", type=int, default=None, help="number of eval windows (default: all)")
    p.add_argument("--eval-seqlen", type=int, default=None, help="eval window length (default: --seqlen)")
    p.add_argument("--out", default=None, help="run directory (default: a new folder under ./runs)")
    p.add_argument("--save-model", default=None, help="save the pruned model here (save_pretrained)")
    p.add_argument("--device", default=d.device, help="cpu | cuda | auto")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")
    p.add_argument("--trust-remote-code", action="store_true", help="run code from the model repository (off by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wanda_engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prune_args(sub.add_parser("prune", help="prune one model and write a run directory"))
    return parser


class _Progress:
    """A tqdm bar over blocks, fed by pipeline events."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar = quiet, None

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if isinstance(event, StageStarted):
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            tqdm.write(f"[{event.elapsed_s:7.1f}s] {event.stage}: {event.detail}", file=sys.stderr)
        elif isinstance(event, MatrixPruned):
            if self.bar is None:
                self.bar = tqdm(total=event.num_blocks, unit="block", desc="prune", file=sys.stderr)
            self.bar.set_postfix_str(f"block {event.block + 1}/{event.num_blocks} {event.matrix}", refresh=False)
        elif isinstance(event, BlockFinished) and self.bar is not None:
            self.bar.set_postfix_str(f"sparsity {event.sparsity_so_far:.3f} block error {event.block_error:.4f}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _prune(args: argparse.Namespace) -> int:
    from .runner import RunRequest, execute_run

    pc = PruneConfig(method=args.method, sparsity=args.sparsity, pattern=args.pattern, group=args.group,
                     variant=args.variant, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed,
                     calib=args.calib, batch_size=args.batch_size, device=args.device)
    ev = None if args.eval == "none" else EvalConfig(dataset=args.eval, seqlen=args.eval_seqlen or args.seqlen,
                                                     windows=args.eval_windows)
    request = RunRequest(model=args.model, prune=pc, eval=ev, dtype=args.dtype, save_model=args.save_model,
                         trust_remote_code=args.trust_remote_code)
    if args.trust_remote_code:
        print("warning: --trust-remote-code runs Python code from the model repository", file=sys.stderr)
    cancel = threading.Event()
    progress = _Progress(args.quiet)

    def on_sigint(signum, frame):  # first Ctrl-C: stop cleanly between blocks; second: abort now
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\ncancelling after the current block (Ctrl-C again to abort now)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        run = execute_run(request, run_dir=args.out, on_event=progress, cancel=cancel)
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
    m = run.meta
    summary = {"run": str(run.path), "sparsity": round(m["sparsity"], 6), "ppl_dense": m["ppl_dense"], "ppl": m["ppl"],
               "eval": m["eval"], "timings": {k: m["timings"].get(k) for k in ("load_s", "prune_s", "eval_s")}}
    print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "prune":
            return _prune(args)
    except PruneCancelled as e:
        print(f"cancelled: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("cancelled: interrupted", file=sys.stderr)
        return 130
    except EngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 2
