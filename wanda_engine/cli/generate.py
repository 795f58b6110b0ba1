"""python -m wanda_engine generate --runs A,B --prompt "..." : one prompt continued by the dense model and by each
run's pruned model, printed side by side with each one's tokens/s (then one JSON line), and kept as a record in the
run store.

cli.py adds the subcommand (`add_generate_parser`) and dispatches to `run_generate_command`; its main turns an
EngineError into one `error: ...` line. Torch loads only once the request is checked.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from .progress import EventBar
from ..config import GenerateRequest
from ..config.request import MAX_NEW_TOKENS
from ..core.errors import ConfigError
from ..core.events import Event, StageStarted
from ..core.parsing import parse_list
from ..core.paths import usable_folder
from ..store.generation_record import GenerationRecord, generation_path
from ..store.run_store import RunStore


def add_generate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The `generate` subcommand on cli.py's subparsers."""
    d = GenerateRequest(prompt="-")
    p = subparsers.add_parser("generate", help="continue one prompt with the dense model and chosen runs, side by "
                                               "side, each with its tokens/s")
    g = p.add_argument_group("what to generate")
    g.add_argument("--prompt", required=True, help="the text to continue")
    g.add_argument("--runs", default="", help="comma-separated runs: their names in the run store or their folders")
    g.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help=f"at most this many (1-{MAX_NEW_TOKENS})")
    g.add_argument("--no-dense", action="store_true", help="leave the dense model out (the runs only)")
    g.add_argument("--temperature", type=float, default=d.temperature, help="0: greedy (default); above: sampled")
    g.add_argument("--seed", type=int, default=d.seed, help="the sampling's seed (greedy ignores it)")
    g.add_argument("--model", default=d.model, help="the dense model when no run is given: default | HF_ID | DIR")
    g.add_argument("--device", default=d.device, help="cpu | cuda | auto")
    g = p.add_argument_group("output")
    g.add_argument("--name", default=None, help="the record's name (default: gen-DATE-TIME)")
    g.add_argument("--runs-dir", default=None, help="run store: where the runs are found and the record is kept "
                                                    "(default: $WANDA_RUNS or ./runs)")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


class _Progress(EventBar):
    def show(self, event: Event) -> None:
        if isinstance(event, StageStarted):
            self.line(event, f"{event.stage}: {event.detail}")


def _request(args: argparse.Namespace, store: RunStore) -> GenerateRequest:
    """The request the arguments describe, each run located in the store; one sentence when one is wrong."""
    runs = tuple(str(store.locate(given)) for given in parse_list(args.runs, "generate runs"))
    request = GenerateRequest(prompt=args.prompt, runs=runs, max_new_tokens=args.max_new_tokens,
                              dense=not args.no_dense, temperature=args.temperature, seed=args.seed,
                              device=args.device, model=args.model, name=args.name)
    if request.name is not None and generation_path(store.root, request.name).exists():
        raise ConfigError(f"a generation named {request.name!r} already exists in {store.root}; choose another name")
    return request


def side_by_side(record: GenerationRecord) -> str:
    """The record as text: each model's continuation under a line naming it and its tokens/s."""
    lines = [f"prompt: {record.prompt}", f"({record.measured_on()})", ""]
    for out in record.outputs:
        decode = f", decode {out.decode_tokens_per_s:.1f} tokens/s" if out.decode_tokens_per_s else ""
        mask = {True: "; mask checked", False: "", None: ""}[out.mask_verified]
        lines += [f"== {out.label} ({out.source}{mask}): {len(out.tokens)} tokens in {out.seconds:.2f} s = "
                  f"{out.tokens_per_s:.1f} tokens/s{decode}; stopped at {out.stopped}", out.text.strip(), ""]
    return "\n".join(lines)


def run_generate_command(args: argparse.Namespace) -> int:
    from ..runner.generate import generate_side_by_side

    store = RunStore(usable_folder(RunStore(args.runs_dir).root, "--runs-dir"))
    request = _request(args, store)
    progress = _Progress(args.quiet)
    try:
        record = generate_side_by_side(request, store, on_event=progress)
    finally:
        progress.close()
    print(side_by_side(record))
    print(json.dumps({"generation": record.name, "record": str(generation_path(store.root, record.name)),
                      "outputs": [{"model": o.model, "label": o.label, "text": o.text, "tokens": len(o.tokens),
                                   "tokens_per_s": round(o.tokens_per_s, 2), "mask_verified": o.mask_verified}
                                  for o in record.outputs]}))
    return 0
