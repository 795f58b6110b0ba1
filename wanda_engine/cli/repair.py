"""python -m wanda_engine repair RUN_DIR ... : fine-tune a pruned run back, every pruned weight kept at zero.

cli.py adds the subcommand (`add_repair_parser`) and dispatches to `run_repair_command`; its main turns an
EngineError into one `error: ...` line and a cancel into status 130. Torch loads only when a repair runs.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .progress import EventBar
from ..core.events import Event, StageStarted
from ..core.paths import new_folder, usable_folder
from ..repair.config import EVALUATE, REPAIR_METHODS, RepairConfig, RepairRequest
from ..repair.events import RepairEval, RepairStep
from ..repair.record import RepairRecord
from ..store.run_store import RunStore


def add_repair_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The `repair` subcommand on cli.py's subparsers."""
    d = RepairConfig()
    p = subparsers.add_parser("repair", help="fine-tune a pruned run (sparse full fine-tuning or LoRA), zeros kept")
    p.add_argument("run", metavar="RUN_DIR", help="the pruned run's directory (or its name in the run store)")
    g = p.add_argument_group("repair")
    g.add_argument("--method", default=d.method, choices=REPAIR_METHODS,
                   help="finetune: every kept weight trains | lora: adapters, merged under the mask")
    g.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="training windows per step")
    g.add_argument("--seqlen", type=int, default=d.seqlen, help="tokens per training window")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 2e-4 lora, 2e-5 finetune)")
    g.add_argument("--schedule", default=d.schedule, help="cosine | linear | constant, after the warmup")
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--rank", type=int, default=d.lora_rank, help="LoRA rank")
    g.add_argument("--alpha", type=float, default=d.lora_alpha, help="LoRA alpha (scaling alpha / rank)")
    g.add_argument("--targets", default="", help="LoRA: comma-separated linears inside a block (default: all)")
    g.add_argument("--evaluate", default=d.evaluate, choices=EVALUATE,
                   help="LoRA: evaluate the masked merge or the unmerged adapter")
    g.add_argument("--train-text", default=d.train_text, help="default (the run's calibration text) | FILE.txt")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="evaluate every K steps (and before, at the end)")
    g.add_argument("--dense", action="store_true", help="fine-tune the dense model instead: the fair reference")
    g.add_argument("--seed", type=int, default=d.seed, help="training order and adapter init")
    g.add_argument("--device", default=d.device, help="cpu | cuda | auto")
    g = p.add_argument_group("output")
    g.add_argument("--name", default=None, help="the repair's folder under RUN_DIR/repairs/ (default: from the method)")
    g.add_argument("--save-model", default=None, help="save the repaired model (lora --evaluate adapter: the adapter) here")
    g.add_argument("--runs-dir", default=None, help="run store to find RUN_DIR by name (default: $WANDA_RUNS or ./runs)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _request(args: argparse.Namespace) -> RepairRequest:
    config = RepairConfig(method=args.method, steps=args.steps, batch_size=args.batch_size, seqlen=args.seqlen,
                          lr=args.lr, schedule=args.schedule, warmup_steps=args.warmup_steps,
                          weight_decay=args.weight_decay, lora_rank=args.rank, lora_alpha=args.alpha,
                          lora_targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
                          evaluate=args.evaluate, train_text=args.train_text, eval_every=args.eval_every,
                          seed=args.seed, device=args.device, dense=args.dense)
    if args.save_model:
        new_folder(args.save_model, "--save-model")
    return RepairRequest(run=str(_run_dir(args).resolve()), config=config, name=args.name, save_model=args.save_model)


def _run_dir(args: argparse.Namespace) -> Path:
    """RUN_DIR as a folder, or a run's name in the run store; ConfigError saying which it is not."""
    return RunStore(usable_folder(RunStore(args.runs_dir).root, "--runs-dir")).locate(args.run)


class _Progress(EventBar):
    """A tqdm bar over steps on stderr, with stage and evaluation lines."""

    def show(self, event: Event) -> None:
        if isinstance(event, StageStarted) and event.stage != "repair-train":
            self.line(event, f"{event.stage}: {event.detail}")
        elif isinstance(event, RepairEval):
            self.line(event, f"perplexity after {event.step} steps: {event.ppl:.3f}")
        elif isinstance(event, RepairStep):
            bar = self.started(event.steps, "step", "repair")
            bar.set_postfix_str(f"loss {event.loss:.4f} lr {event.lr:.2e} tokens {event.tokens_seen:,}", refresh=False)
            bar.update(1)


def _summary(record: RepairRecord, path: Path) -> dict[str, Any]:
    """The one JSON line `repair` prints."""
    return {"repair": str(path), "status": record.status, "label": record.label(), "start": record.start,
            "evaluated": record.evaluated, "ppl_before": record.ppl_before, "ppl_after": record.ppl_after,
            "evals": [list(e) for e in record.evals], "eval": record.eval.to_json() if record.eval else None,
            "sparsity_before": record.sparsity_before, "sparsity_after": record.sparsity_after,
            "mask_unchanged": record.mask_sha256_before == record.mask_sha256_after, "train": record.train,
            "timings": record.timings, "peak_rss_mib": record.peak_rss_mib, "saved_model": record.saved_model}


def run_repair_command(args: argparse.Namespace) -> int:
    """Run the repair `args` describe; prints the JSON summary. Errors propagate to cli.main."""
    from ..repair.record import repairs_dir
    from ..repair.run import execute_repair

    request = _request(args)
    cancel = threading.Event()
    progress = _Progress(args.quiet)

    def on_sigint(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\ncancelling after the current step (Ctrl-C again to abort now)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        record = execute_repair(request, on_event=progress, cancel=cancel)
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
    print(json.dumps(_summary(record, repairs_dir(request.run) / record.name)))
    return 0
