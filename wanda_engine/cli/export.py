"""python -m wanda_engine export RUN_DIR [RUN_DIR ...] | --sweep NAME --out DIR|FILE.zip: Export all from the
command line, for a run, a comparison or a sweep (wanda_engine.outputs.bundle).

It reads run directories only and imports no torch or model code, so it runs on a laptop from a copied
run store. Every option, the runs and the target are checked before anything is drawn (one `error:` line,
nothing written). Progress goes to stderr, one JSON line to stdout; a figure that failed to render is named, the
rest of the bundle is written, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..core.errors import ConfigError
from ..core.events import Event
from ..store.run_store import Run, RunStore, load_run

# cli.build_parser adds this command: the bundle, its figures and pandas are imported when it runs, so that
# `--help` and `prune` do not wait for them.


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `export` command to the CLI's subparsers; returns its parser."""
    p = subparsers.add_parser("export", help="figures, tables and a reproducibility card of runs or a sweep, "
                                             "as one folder or .zip")
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run directories (or run names in --runs)")
    p.add_argument("--sweep", default=None, metavar="NAME", help="export this sweep of the run store instead")
    p.add_argument("--runs", default=None, metavar="DIR", help="run store (default: $WANDA_RUNS or ./runs)")
    p.add_argument("--preset", default="two-column",
                   help="one-column | two-column | slide | poster | custom (with --width and/or --height)")
    p.add_argument("--width", type=float, default=None, help="figure width, in --unit (a custom size)")
    p.add_argument("--height", type=float, default=None, help="figure height, in --unit (a custom size)")
    p.add_argument("--unit", default="in", help="in | cm: the unit of --width and --height")
    p.add_argument("--formats", default="pdf,png", help="comma-separated: pdf, png, svg")
    p.add_argument("--dpi", type=int, default=300, help="PNG resolution (dots per inch at the print size)")
    p.add_argument("--out", required=True, metavar="DIR|FILE.zip", help="a new folder, or a .zip file")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _runs(args: argparse.Namespace, store: RunStore) -> list[Run]:
    """The runs named on the command line (folders, or names in the store), each complete and given once."""
    out = []
    for given in args.run_dirs:
        run = load_run(store.locate(given))
        if not run.complete:
            raise ConfigError(f"run {given!r} is {run.status}, not complete; only complete runs are exported")
        if any(r.path.resolve() == run.path.resolve() for r in out):
            raise ConfigError(f"run {given!r} is given twice")
        out.append(run)
    return out


def _progress(quiet: bool):
    from ..outputs.bundle import FigureRendered

    def on_event(event: Event) -> None:
        if quiet or not isinstance(event, FigureRendered):
            return
        state = "ok" if event.ok else f"FAILED ({event.error})"
        print(f"[{event.elapsed_s:6.1f}s] figure {event.index}/{event.total} {event.figure}: {state}", file=sys.stderr)
    return on_event


def run_export(args: argparse.Namespace) -> int:
    """Build and write the bundle `args` describe; 0 when every figure rendered, 1 when some failed. Every
    option, the runs and the target are checked before anything is drawn or written."""
    from ..outputs.bundle import build_bundle, check_out, export_options, read_sweep, same_model_runs

    if bool(args.run_dirs) == bool(args.sweep):
        raise ConfigError("export needs either run directories or --sweep NAME (not both)")
    options = export_options(args.preset, args.formats, args.dpi, width=args.width, height=args.height,
                             unit=args.unit)
    out = check_out(args.out)
    store = RunStore(args.runs)
    if store.root.exists() and not store.root.is_dir():
        raise ConfigError(f"--runs {str(store.root)!r} is a file, not a run store")
    sweep = read_sweep(store, args.sweep) if args.sweep else None
    runs = _runs(args, store) if sweep is None else []
    if sweep is not None and not sweep.runs:
        raise ConfigError(f"sweep {sweep.name!r} has no complete run to export")
    candidates = [r for r in store.list() if r.complete] if runs else []
    bundle = build_bundle(runs, sweep=sweep, preset=options.preset, formats=options.formats, dpi=options.dpi,
                          model_runs=same_model_runs(runs, candidates) if runs else (),
                          on_event=_progress(args.quiet))
    path = bundle.write(out)
    print(json.dumps({"bundle": str(path), "files": len(bundle.files), "figures": len(bundle.rendered),
                      "left_out": len(bundle.omitted), "failed": [{"figure": f, "error": e} for f, e in bundle.failed],
                      "seconds": round(bundle.seconds, 2)}))
    if bundle.failed:
        print(f"error: {len(bundle.failed)} figure(s) failed to render; the rest is in {path} (see REPRODUCE.md)",
              file=sys.stderr)
        return 1
    return 0
