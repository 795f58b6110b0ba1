"""python -m wanda_engine prune | sweep | export | repair | generate: the engine headless, for servers and scripts.

Exit status 0 on success; on any error one line `error: ...` on stderr and status 1 (2 for usage).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

from .export import add_export_parser, run_export
from .generate import add_generate_parser, run_generate_command
from .progress import EventBar
from .repair import add_repair_parser, run_repair_command
from ..config import (ALLOCATIONS, TARGETS, WEIGHT_UPDATES, EvalConfig, OffloadConfig, PruneConfig, RunRequest,
                      SpeedConfig, ZeroShotConfig)
from ..core.parsing import parse_fraction, parse_list
from ..core.paths import new_file, new_folder, usable_folder
from ..core.status import SweepStatus
from ..core.errors import ConfigError, EngineError, PruneCancelled
from ..core.events import BlockFinished, Event, MatrixPruned, StageStarted
from ..methods import table
from ..methods.table import Structure
from ..store.run_record import RunRecord
from ..store.run_store import RunStore

# The commands import the torch-heavy modules (runner, sweep, export) when they run: --help answers at once.


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="default", help="default | HF_ID | DIR | FILE.gguf")
    g.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")
    g.add_argument("--trust-remote-code", action="store_true", help="run code from the model repository (off by default)")


def _owl_args(g: argparse._ArgumentGroup) -> None:
    d = PruneConfig()
    g.add_argument("--group", default=None, help="row | matrix (default: the reference's per method)")
    g.add_argument("--owl-m", type=float, default=d.owl_m, help="OWL: outlier threshold, times the block's mean score")
    g.add_argument("--owl-lambda", type=float, default=d.owl_lambda, help="OWL: block sparsities spread over 2*lambda")


def _calibration_args(p: argparse.ArgumentParser, nsamples: dict) -> argparse._ArgumentGroup:
    d = PruneConfig()
    g = p.add_argument_group("calibration")
    g.add_argument("--calib", default=d.calib, help="default | wikitext2 | c4 | FILE.txt | FILE.npy")
    g.add_argument("--nsamples", **nsamples)
    g.add_argument("--seqlen", type=int, default=d.seqlen, help="tokens per calibration window")
    g.add_argument("--seed", type=int, default=d.seed, help="which windows of the text are drawn")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="calibration windows per block forward")
    return g


def _evaluation_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval", default="default", help="default | wikitext2 | c4 | FILE.txt | none")
    g.add_argument("--eval-windows", type=int, default=None, help="number of eval windows (default: all)")
    g.add_argument("--eval-seqlen", type=int, default=None, help="eval window length (default: --seqlen)")
    return g


def _add_prune_args(p: argparse.ArgumentParser) -> None:
    d = PruneConfig()
    _model_args(p)
    g = p.add_argument_group("method and pattern")
    g.add_argument("--method", default=d.method,
                   help=" | ".join([*table.choices(), *table.choices(structures=True)])
                        + f" (M{table.VARIANT_SUFFIX} is --method M --variant)")
    g.add_argument("--sparsity", "--ratio", dest="sparsity", default=str(d.sparsity),
                   help="fraction of weights to prune, in [0, 1): 0.5 or 50%%; for a structure remover (--ratio) the "
                        "fraction to remove, in (0, 1), counted as --target says")
    g.add_argument("--pattern", default=d.pattern, help="unstructured | N:M (e.g. 2:4)")
    g.add_argument("--variant", action="store_true", help="Wanda's adaptive-alpha variant")
    g.add_argument("--protect-channels", default=str(d.protect_channels), metavar="P",
                   help="never prune the weights of this fraction of input channels, those with the highest "
                        "activation norms (e.g. 0.01); the rest is pruned harder to keep the sparsity")
    g.add_argument("--weight-update", default=d.weight_update, choices=WEIGHT_UPDATES,
                   help="obs: after the mask, reconstruct the kept weights with SparseGPT's OBS update on the "
                        "block's Gram matrix (the Wanda paper's ablation); the mask is unchanged")
    g.add_argument("--layerwise", default=d.layerwise, help="uniform | owl (outlier-weighted block sparsities)")
    _owl_args(g)
    _structure_args(p)
    g = _calibration_args(p, {"type": int, "default": d.nsamples, "help": "calibration windows"})
    g.add_argument(
        "--no-calibration", action="store_true",
        help=f"{' and '.join(table.from_weights_alone())} only: prune from the weights alone, skipping the "
             "calibration passes; records then hold no activation statistics")
    g = _evaluation_args(p)
    g.add_argument("--tasks", default=None, help="zero-shot lm-eval tasks, comma-separated, or 'paper' for the "
                   "paper's seven (default: none); needs lm-eval installed")
    g.add_argument("--task-dir", default=None, help="folder of local lm-eval task YAMLs (for offline tasks)")
    g.add_argument("--zeroshot-limit", type=int, default=None, help="at most N questions per zero-shot task")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", default=None, help="run directory (default: a new folder under ./runs)")
    g.add_argument("--save-model", default=None, help="save the pruned model here (save_pretrained)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("resources")
    g.add_argument("--device", default=d.device, help="cpu | cuda | auto")
    g.add_argument("--max-memory", default=None,
                   help="load with accelerate's device_map under these budgets, e.g. 0=20GiB,cpu=64GiB or cpu=300MiB; "
                        "what does not fit is offloaded (GPU -> host -> disk) and pruned block by block")
    g.add_argument("--offload-folder", default=None, help="where disk-offloaded weights go (default: the cache)")


def _structure_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("structure (a smaller model: whole heads, MLP channels or blocks removed)")
    g.add_argument("--structure", default=None, choices=[s.value for s in Structure],
                   help="width: attention heads and MLP channels (--method " + " | ".join(_removers(Structure.WIDTH))
                        + "); depth: whole blocks (" + " | ".join(_removers(Structure.DEPTH)) + ", chosen by "
                        "--structure depth alone)")
    _width_args(g)
    _speed_args(p, "measure prefill and decode tokens/s of the dense and the pruned model, a copy of the dense "
                   "one kept in memory for it (default: on for structure removers)")


def _width_args(g: argparse._ArgumentGroup) -> None:
    d = PruneConfig()
    g.add_argument("--allocation", default=d.allocation, choices=ALLOCATIONS,
                   help="uniform: the same heads and channels from every block (a standard config); global: every "
                        "block's standardized scores compete for one budget (FLAP)")
    g.add_argument("--target", default=d.target, choices=TARGETS,
                   help="what --ratio counts: params, the fraction of the decoder blocks' parameters; per-block, the "
                        "published tables' pruning_ratio of heads and of channels in every block")
    g.add_argument("--bias-compensation", action="store_true",
                   help="FLAP: add the removed channels' mean contribution to the output projection's bias")


def _speed_args(p: argparse.ArgumentParser, what: str) -> None:
    speed = SpeedConfig()
    g = p.add_argument_group("speed (measured beside the dense model in the same run)")
    g.add_argument("--speed", action=argparse.BooleanOptionalAction, default=None, help=what)
    g.add_argument("--speed-decode-tokens", type=int, default=speed.decode_tokens, help="greedy tokens decoded")
    g.add_argument("--speed-repeats", type=int, default=speed.repeats, help="interleaved rounds (the median is kept)")


def _removers(structure: Structure) -> list[str]:
    return [name for name in table.removers() if table.get(name).removes is structure]


def _method_choice(args: argparse.Namespace) -> tuple[table.Method, bool]:
    """The method `--method` and `--structure` name together; ConfigError when they disagree."""
    if args.structure is not None and args.method == PruneConfig().method:  # --structure alone picks its one remover
        removers = _removers(Structure(args.structure))
        if len(removers) != 1:
            raise ConfigError(f"--structure {args.structure} needs --method, one of {', '.join(removers)}")
        return table.get(removers[0]), False
    method, variant = table.parse_choice(args.method)
    if args.structure is not None and (method.removes is None or method.removes.value != args.structure):
        raise ConfigError(f"--structure {args.structure} does not go with --method {args.method}, which removes "
                          f"{method.removes.value if method.removes else 'no structure (it masks weights)'}")
    return method, variant


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    d = PruneConfig()
    _model_args(p)
    g = p.add_argument_group("methods and patterns (the grid)")
    g.add_argument("--methods", default="magnitude,wanda",
                   help="comma-separated: " + ", ".join([*table.choices(), *table.choices(structures=True)]))
    g.add_argument("--sparsities", default="0.5", help="comma-separated fractions or percentages, e.g. 0.5,0.6,70%% (N:M ignores them)")
    g.add_argument("--ratios", default=None, help="the structure removers' ratios, e.g. 0.1,0.2,0.3 (default: "
                                                  "--sparsities)")
    _width_args(g)
    g.add_argument("--patterns", default="unstructured", help="comma-separated: unstructured, N:M (e.g. 2:4)")
    g.add_argument("--layerwise", default=d.layerwise, help="comma-separated: uniform, owl")
    g.add_argument("--protect-channels", default="0", metavar="P,...",
                   help="comma-separated fractions of input channels to protect, e.g. 0,0.001,0.005,0.01,0.02")
    g.add_argument("--weight-update", default="none", metavar="U,...",
                   help="comma-separated: none, obs (SparseGPT's update of the kept weights on each selector's mask)")
    _owl_args(g)
    _calibration_args(p, {"default": str(d.nsamples), "help": "calibration windows; a list (8,32,128) adds an axis"})
    _evaluation_args(p)
    _speed_args(p, "every point measures its speed beside the dense model, which draws the frontier (default: on "
                   "when a structure remover is swept)")
    g = p.add_argument_group("outputs")
    g.add_argument("--name", default=None, help="sweep name (default: sweep-DATE-TIME); runs are named after it")
    g.add_argument("--runs-dir", default=None, help="run store (default: $WANDA_RUNS or ./runs)")
    g.add_argument("--figure", default=None,
                   help="write perplexity vs sparsity here (.html, .png, .svg, .pdf); with several --nsamples "
                        "also FIGURE-nsamples.EXT; with speed or a structure remover the frontier, "
                        "FIGURE-frontier.EXT (speed-up) and FIGURE-frontier_params.EXT (parameters kept)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("resources")
    g.add_argument("--device", default=d.device, help="cpu | cuda | auto")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wanda_engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prune_args(sub.add_parser("prune", help="prune one model and write a run directory"))
    _add_sweep_args(sub.add_parser("sweep", help="prune a grid of settings on one loaded model, one run each"))
    add_export_parser(sub)
    add_repair_parser(sub)
    add_generate_parser(sub)
    return parser


def _cancel_on_sigint(cancel: threading.Event):
    """A SIGINT handler: the first Ctrl-C stops cleanly between blocks, the second aborts now."""
    def on_sigint(signum, frame) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\ncancelling after the current block (Ctrl-C again to abort now)", file=sys.stderr)
    return on_sigint


class _Progress(EventBar):
    """A tqdm bar over blocks, fed by pipeline events."""

    def show(self, event: Event) -> None:
        if isinstance(event, StageStarted):
            self.close()
            self.line(event, f"{event.stage}: {event.detail}")
        elif isinstance(event, MatrixPruned):
            bar = self.started(event.num_blocks, "block", "prune")
            bar.set_postfix_str(f"block {event.block + 1}/{event.num_blocks} {event.matrix}", refresh=False)
        elif isinstance(event, BlockFinished) and self.bar is not None:
            error = "" if event.block_error is None else f" block error {event.block_error:.4f}"
            self.bar.set_postfix_str(f"sparsity {event.sparsity_so_far:.3f}{error}")
            self.bar.update(1)


def _fraction(what: str) -> Callable[[str], float]:
    return lambda text: parse_fraction(text, what)


def _eval_config(args: argparse.Namespace) -> EvalConfig | None:
    if args.eval == "none":
        return None
    return EvalConfig(dataset=args.eval, seqlen=args.eval_seqlen or args.seqlen, windows=args.eval_windows)


def _request(args: argparse.Namespace) -> RunRequest:
    """The run `prune`'s arguments describe; ConfigError naming the option otherwise."""
    method, variant = _method_choice(args)
    pc = PruneConfig(method=method.name, sparsity=parse_fraction(args.sparsity, "ratio" if method.removes else "sparsity"),
                     pattern=args.pattern, group=args.group,
                     variant=variant or args.variant, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed,
                     calib=args.calib, batch_size=args.batch_size, device=args.device, layerwise=args.layerwise,
                     owl_m=args.owl_m, owl_lambda=args.owl_lambda,
                     protect_channels=parse_fraction(args.protect_channels, "protect_channels"),
                     weight_update=args.weight_update, calibrate=not args.no_calibration, allocation=args.allocation,
                     target=args.target, bias_compensation=args.bias_compensation)
    measure = args.speed if args.speed is not None else pc.structure is not None
    speed = SpeedConfig(args.speed_decode_tokens, args.speed_repeats) if measure else None
    zc = None
    if args.tasks:
        from ..evaluation.tasks import parse_tasks

        zc = ZeroShotConfig(tasks=parse_tasks(args.tasks), task_dir=args.task_dir, limit=args.zeroshot_limit)
    elif args.task_dir or args.zeroshot_limit is not None:
        raise ConfigError("--task-dir and --zeroshot-limit need --tasks (the zero-shot tasks to run)")
    if args.offload_folder and not args.max_memory:
        raise ConfigError("--offload-folder needs --max-memory (the budgets that decide what is offloaded)")
    offload = OffloadConfig.parse(args.max_memory, args.offload_folder) if args.max_memory else None
    return RunRequest(model=args.model, prune=pc, eval=_eval_config(args), dtype=args.dtype, save_model=args.save_model,
                      trust_remote_code=args.trust_remote_code, zeroshot=zc, offload=offload, speed=speed)


def _summary(path: Path, record: RunRecord) -> dict[str, Any]:
    """The one JSON line `prune` prints."""
    summary = {"run": str(path), "sparsity": round(record.sparsity, 6), "ppl_dense": record.ppl_dense,
               "ppl": record.ppl, "eval": record.eval.to_json() if record.eval else None,
               "timings": {k: record.timings.get(k) for k in ("load_s", "prune_s", "eval_s")}}
    if record.structure:
        s = record.structure
        summary["structure"] = {"removed_fraction": round(s.removed_fraction, 6), "params": s.model_params_kept,
                                "params_dense": s.model_params_dense, "removed_blocks": list(s.removed_blocks),
                                "loader": s.loader}
    if record.speed:
        sp = record.speed
        summary["speed"] = {"device": sp.device, "threads": sp.threads, "prefill_speedup": round(sp.prefill_speedup, 3),
                            "decode_speedup": round(sp.decode_speedup, 3), "ideal_speedup": round(sp.ideal_speedup, 3)}
    if record.zeroshot:
        zs = record.zeroshot
        summary["zeroshot"] = {t: {"dense": zs.dense.value(t, "acc"), "pruned": r.value("acc")}
                               for t, r in zs.pruned.results.items()}
    return summary


def _check_prune_outputs(args: argparse.Namespace) -> None:
    """--out and --save-model checked before the model loads: one sentence, nothing written."""
    if args.out:
        out = usable_folder(args.out, "--out")
        if (out / "run.json").exists():
            raise ConfigError(f"--out {args.out!r} already holds a run; choose another folder")
    if args.save_model:
        new_folder(args.save_model, "--save-model")


def _prune(args: argparse.Namespace) -> int:
    from ..pruning.distributed import finish, init_from_env
    from ..runner.execute import execute_run, prune_on_rank

    request = _request(args)
    _check_prune_outputs(args)
    if args.trust_remote_code:
        print("warning: --trust-remote-code runs Python code from the model repository", file=sys.stderr)
    rank, world = init_from_env()  # under torchrun: data-parallel calibration
    if rank > 0:
        try:
            prune_on_rank(request)
        finally:
            finish()
        return 0
    cancel = threading.Event()
    progress = _Progress(args.quiet)
    previous = signal.signal(signal.SIGINT, _cancel_on_sigint(cancel))
    try:
        run = execute_run(request, run_dir=args.out, on_event=progress, cancel=cancel)
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
        if world > 1:
            finish()
    print(json.dumps(_summary(run.path, run.record)))
    return 0


FIGURE_FORMATS = ("html", "png", "svg", "pdf")


def _write_figure(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "html":
        fig.write_html(path, include_plotlyjs=True)  # embedded: the file opens offline
    else:
        from ..outputs.export import export_figure

        path.write_bytes(export_figure(fig, fmt))


def _sweep_config(args: argparse.Namespace) -> Any:
    from ..sweep.grid import SweepConfig

    nsamples = parse_list(args.nsamples, "sweep nsamples", int)
    base = PruneConfig(group=args.group, nsamples=nsamples[0] if nsamples else PruneConfig().nsamples, seqlen=args.seqlen,
                       seed=args.seed, calib=args.calib, batch_size=args.batch_size, device=args.device,
                       owl_m=args.owl_m, owl_lambda=args.owl_lambda)
    methods = parse_list(args.methods, "sweep methods")
    ratios = parse_list(args.ratios, "sweep ratios", _fraction("ratio")) if args.ratios is not None else None
    removes = any(table.parse_choice(m)[0].removes for m in methods if m in table.names())
    measure = args.speed if args.speed is not None else removes
    return SweepConfig(methods=methods, sparsities=parse_list(args.sparsities, "sweep sparsities", _fraction("sparsity")),
                       ratios=ratios, allocation=args.allocation, target=args.target,
                       bias_compensation=args.bias_compensation,
                       speed=SpeedConfig(args.speed_decode_tokens, args.speed_repeats) if measure else None,
                       patterns=parse_list(args.patterns, "sweep patterns"),
                       layerwise=parse_list(args.layerwise, "sweep layerwise"),
                       protect_channels=parse_list(args.protect_channels, "sweep protect_channels",
                                                   _fraction("protect_channels")),
                       weight_update=parse_list(args.weight_update, "sweep weight_update"),
                       nsamples=nsamples, base=base, eval=_eval_config(args), model=args.model, dtype=args.dtype,
                       name=args.name, trust_remote_code=args.trust_remote_code)


def _sweep(args: argparse.Namespace) -> int:
    from ..outputs.figures.catalog import sweep_figures
    from ..sweep.grid import plan_sweep, run_sweep

    figure = Path(args.figure) if args.figure else None
    if figure is not None and figure.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        raise ConfigError(f"--figure must end in {', '.join('.' + f for f in FIGURE_FORMATS)}, got {args.figure!r}")
    if figure is not None:
        new_file(figure, "--figure")
    store = RunStore(usable_folder(RunStore(args.runs_dir).root, "--runs-dir"))
    cfg = _sweep_config(args)
    plan = plan_sweep(cfg)  # bad combinations are reported before the model loads
    if not plan.requests:
        raise ConfigError("the sweep plans no runs: " + "; ".join(f"{lab}: {why}" for lab, why in plan.skipped[:3]))
    for label, why in plan.skipped:
        print(f"skipped {label}: {why}", file=sys.stderr)
    if args.trust_remote_code:
        print("warning: --trust-remote-code runs Python code from the model repository", file=sys.stderr)
    cancel = threading.Event()
    progress = _Progress(args.quiet)

    def on_point(point: dict) -> None:
        progress.close()
        progress.bar = None
        print(json.dumps({"point": point["index"] + 1, "of": len(plan), "label": point["label"], "run": point["run"],
                          "status": point["status"], "ppl": point.get("ppl"), "ppl_dense": point.get("ppl_dense"),
                          "sparsity": point.get("achieved_sparsity"), "seconds": point.get("seconds"),
                          "error": point.get("error")}), flush=True)

    previous = signal.signal(signal.SIGINT, _cancel_on_sigint(cancel))
    try:
        result = run_sweep(cfg, store=store, on_event=progress, cancel=cancel, on_point=on_point)
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
    written = []
    if figure is not None:
        for kind, fig in sweep_figures([r.record for r in result.runs(store) if r.record is not None]).items():
            path = figure if kind == "sparsity" else figure.with_name(f"{figure.stem}-{kind}{figure.suffix}")
            _write_figure(fig, path)
            written.append(str(path))
    print(json.dumps({"sweep": result.name, "manifest": str(result.manifest), "status": result.status,
                      "runs": len(result.points), "complete": result.count(SweepStatus.COMPLETE), "failed": result.count(SweepStatus.FAILED),
                      "skipped": [{"label": lab, "reason": why} for lab, why in result.skipped], "figures": written}))
    if result.status == SweepStatus.CANCELLED:
        print("cancelled: the sweep stopped early; finished points are kept", file=sys.stderr)
        return 130
    if result.count(SweepStatus.FAILED):
        print(f"error: {result.count('failed')} of {len(result.points)} sweep points failed; see {result.manifest}",
              file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "prune":
            return _prune(args)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "export":
            return run_export(args)
        if args.command == "repair":
            return run_repair_command(args)
        if args.command == "generate":
            return run_generate_command(args)
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
