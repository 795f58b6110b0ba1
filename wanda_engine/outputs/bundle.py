"""Export all: one bundle for a run, a comparison of runs or a sweep, for the paper and its reviewers.

A bundle holds every figure of the catalog that has data (figures.catalog.plan) in a print preset and the
chosen formats (`figures/`), the data behind each (`data/*.csv`), the tables as LaTeX, Markdown and CSV
(`tables/`: perplexity or the sweep's grid, zero-shot accuracy, and the frontier where a run removed structures or
measured its speed), each run's calibration windows (`calibration/*.npy`) and run.json (`runs/`), and `REPRODUCE.md`,
the card whose commands re-run each run from the unzipped folder on the very same windows and which names,
once, every figure left out for want of data. Torch-free: it reads run directories only, so it runs on a laptop
from a copied run store. Every file name is at most MAX_FILE_NAME characters.

Every option is checked (`export_options`, `check_out`) before anything is drawn. A figure that fails to render
is named (in the result and the card) and the rest is kept, unless none rendered: then nothing is written. The
zip is written to a temporary file and renamed, so no half-written bundle is ever there to download.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import export
from . import tables
from ..core.parsing import check_run_name
from ..core.errors import ConfigError, EngineError
from ..core.events import Event, EventCallback, ignore_events
from .figures.catalog import FigureSpec, Omitted, plan
from .figures.data import figure_data
from .figures.paper import PrintPreset, print_preset, suggested_caption
from ..core.parsing import parse_list
from ..core.paths import new_file, new_folder
from ..store.run_record import RunRecord
from ..store.reproduce import CardRun, card, sweep_command
from ..store.run_store import Run, RunStore, atomic_write_bytes, load_run, safe_file_stem
from ..sweep.grid import SWEEP_DIR

CARD = "REPRODUCE.md"
DEFAULT_FORMATS = ("pdf", "png")
MAX_FILE_NAME = 70  # characters of any file name a bundle or a download holds, its extension included
_LONGEST_EXTENSION = 4  # '.pdf', '.png', '.svg', '.csv', '.npy'


def file_stem(text: str, extension_chars: int = _LONGEST_EXTENSION) -> str:
    """`text` as a file-safe stem that, with an extension of `extension_chars` characters, is at most
    MAX_FILE_NAME long: a longer one keeps its start and its end (the figure it names) around a short hash of
    the whole, so two long names stay apart."""
    safe = safe_file_stem(text, limit=10_000)
    room = MAX_FILE_NAME - extension_chars
    if len(safe) <= room:
        return safe
    digest = hashlib.sha256(safe.encode()).hexdigest()[:6]
    head = (room - len(digest) - 2) // 2
    tail = room - len(digest) - 2 - head
    return f"{safe[:head]}-{digest}-{safe[-tail:]}"


@dataclass(frozen=True)
class ExportOptions:
    """A bundle's options, checked: the print preset, the image formats and the PNG resolution."""

    preset: PrintPreset
    formats: tuple[str, ...] = DEFAULT_FORMATS
    dpi: int = 300


def export_options(preset: PrintPreset | str = "two-column", formats: str | Sequence[str] = DEFAULT_FORMATS,
                   dpi: Any = 300, *, width: float | None = None, height: float | None = None,
                   unit: str = "in") -> ExportOptions:
    """Every option of an export checked before anything is drawn; ConfigError, one sentence, for the first bad
    one. `preset`: a name of figures.paper.PRESETS, 'custom', or a PrintPreset; `width`/`height` in `unit`
    resize it; `formats`: some of export.FORMATS (a list, or one string split on commas or spaces)."""
    if isinstance(preset, PrintPreset):
        if width is not None or height is not None:
            raise ConfigError("export width and height resize a named preset; give a preset's name with them")
        paper = preset
    elif isinstance(preset, str):
        if unit != "in" and width is None and height is None:
            raise ConfigError(f"export unit {unit!r} is the unit of the width and height; give one of them too")
        paper = print_preset(preset, width, height, unit)
    else:
        raise ConfigError(f"export preset must be a preset's name or a PrintPreset, not {preset!r}")
    given = parse_list(formats, "export formats") if isinstance(formats, str) else [str(f) for f in formats]
    chosen = tuple(dict.fromkeys(str(f).strip().lower().lstrip(".") for f in given if str(f).strip()))
    bad = [f for f in chosen if f not in export.FORMATS]
    if bad or not chosen:
        raise ConfigError(f"export formats must be some of {', '.join(export.FORMATS)}, got "
                          f"{','.join(map(str, given)) or 'none'!r}")
    return ExportOptions(paper, chosen, export.check_dpi(dpi))


def check_out(out: str | Path) -> Path:
    """Where a bundle may be written: a .zip file (it may replace one) or a folder that does not exist yet or is
    empty, under a folder this process can write in. ConfigError, one sentence, otherwise; nothing is created."""
    text = str(out or "").strip()
    if not text:
        raise ConfigError("export needs --out: a new folder or a .zip file")
    if Path(text).suffix.lower() == ".zip":
        return new_file(text, "export target")
    return new_folder(text, "export folder")


def same_model_runs(runs: Sequence[Run], candidates: Sequence[Run]) -> list[RunRecord]:
    """The records of `runs`, then of every other complete run among `candidates` of the same model: the runs a
    bundle's perplexity-versus-sparsity line and the Explain page's protection test may draw on."""
    models = {r.record.request.model for r in runs}
    names = {r.name for r in runs}
    return [r.record for r in runs] + [r.record for r in candidates if r.complete and r.name not in names
                                       and r.record.request.model in models]


class ExportCancelled(EngineError):
    """The bundle was cancelled between figures; nothing was written."""


@dataclass(frozen=True)
class FigureRendered(Event):
    """One figure of a bundle drawn and rendered in every format (ok), or failed (error names why)."""

    figure: str  # its file stem inside figures/
    index: int  # 1-based
    total: int
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class SweepSource:
    """A sweep as a bundle needs it: its manifest and its complete runs."""

    name: str
    manifest: Mapping[str, Any]
    runs: tuple[Run, ...]


@dataclass(frozen=True)
class Bundle:
    """A built bundle: `files` (path inside the bundle -> bytes, in order), the figures that failed
    ((stem, why)), the seconds it took, the figures rendered and those left out for want of data.
    `zip_bytes` and `write` turn it into a download or files."""

    files: dict[str, bytes]
    failed: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    rendered: tuple[str, ...] = ()  # the stems of the figures rendered
    omitted: tuple[Omitted, ...] = ()

    def zip_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            for name, data in self.files.items():
                z.writestr(name, data)
        return buffer.getvalue()

    def write(self, out: str | Path) -> Path:
        """Write to `out`: a .zip (a temporary file renamed into place) or a new folder (built beside it,
        renamed into place). ConfigError if the folder exists and is not empty."""
        out = check_out(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".zip":
            atomic_write_bytes(out, self.zip_bytes())  # a temporary name, then renamed: never half a zip
            return out
        tmp_dir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".new"))
        try:
            for name, data in self.files.items():
                (tmp_dir / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp_dir / name).write_bytes(data)
            if out.exists():
                out.rmdir()
            os.rename(tmp_dir, out)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return out


def read_sweep(store: RunStore, name: str) -> SweepSource:
    """The sweep `name` of `store` from its manifest, with its complete runs; EngineError if unreadable."""
    path = store.root / SWEEP_DIR / f"{check_run_name(name)}.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise EngineError(f"no sweep named {name!r} in {store.root}") from None
    except (ValueError, OSError) as e:
        raise EngineError(f"sweep {name!r} has an unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("points"), list):
        raise EngineError(f"sweep {name!r} has an unreadable manifest (no list of points)")
    runs = []
    for point in manifest["points"]:
        try:
            path = store.path_for(point["run"])
        except (ConfigError, KeyError, TypeError):
            continue
        if path.is_dir() and (run := load_run(path)).complete:
            runs.append(run)
    return SweepSource(name, manifest, tuple(runs))


def _windows(run: Run) -> tuple[bytes | None, str]:
    """The run's calibration.npy and a note when it is missing or its checksum disagrees with run.json."""
    c = run.record.calibration
    path = run.path / c.file if c.file else None
    if path is None or not path.is_file():
        return None, "this run kept no calibration windows (recorded before runs kept them)"
    data = path.read_bytes()
    try:
        windows = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        return None, f"this run's calibration.npy is unreadable ({e}); the command re-draws the windows from the text"
    digest = hashlib.sha256(np.ascontiguousarray(windows.astype(np.int64)).tobytes()).hexdigest()
    if c.sha256 and digest != c.sha256:
        return data, f"calibration.npy's sha256 {digest} differs from the {c.sha256} run.json recorded"
    return data, ""


def _unique(stem: str, taken: set[str]) -> str:
    name, n = file_stem(stem), 1
    while name in taken:
        n += 1
        name = file_stem(f"{stem}-{n}")
    taken.add(name)
    return name


Render = Callable[[Any, str], bytes]


def _drawn(spec: FigureSpec) -> tuple[Any, bytes, str]:
    """One figure drawn, the data behind it as CSV, and its suggested caption."""
    fig = spec.build()
    return fig, figure_data(fig).to_csv(index=False).encode(), suggested_caption(fig)


def _render_figures(specs: Sequence[FigureSpec], formats: Sequence[str], render: Render, files: dict[str, bytes],
                    on_event: EventCallback, cancel: threading.Event | None,
                    start: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Draw and render each figure into `files`; returns (its files, what it shows) of those rendered and
    (stem, why) of those that failed. ExportCancelled between figures when `cancel` is set."""
    listed, failed, taken = [], [], set()
    for i, spec in enumerate(specs, 1):
        if cancel is not None and cancel.is_set():
            raise ExportCancelled("the export was cancelled; no bundle was written")
        stem = _unique(spec.stem, taken)
        try:
            fig, data, caption = _drawn(spec)
            images = {f"figures/{stem}.{fmt}": render(fig, fmt) for fmt in formats}
        except Exception as e:  # noqa: BLE001 - a figure that fails is named and the rest kept
            failed.append((stem, f"{type(e).__name__}: {e}".splitlines()[0]))
            on_event(FigureRendered(time.monotonic() - start, stem, i, len(specs), False, failed[-1][1]))
            continue
        files.update(images)
        files[f"data/{stem}.csv"] = data
        listed.append((", ".join(f"`{name}`" for name in images) + f" (data: `data/{stem}.csv`)",
                       f"{spec.title}. Suggested caption: {caption or spec.title}"))
        on_event(FigureRendered(time.monotonic() - start, stem, i, len(specs), True))
    return listed, failed


def _tables(records: Sequence[RunRecord], sweep: SweepSource | None) -> list[tables.Table]:
    out = []
    if any(r.ppl is not None for r in records):
        out.append(tables.sweep_table(records, sweep.name) if sweep else tables.perplexity_table(records))
    if any(r.zeroshot for r in records):
        out.append(tables.zeroshot_table(records))
    if any(r.ppl is not None and (r.structure or r.speed) for r in records):  # what each run bought in speed and size
        out.append(tables.frontier_table(records))
    return out


def _table_files(made: Sequence[tables.Table]) -> dict[str, bytes]:
    files = {}
    for table in made:
        stem = safe_file_stem(table.label.removeprefix("tab:"))
        files[f"tables/{stem}.tex"] = tables.to_latex(table).encode()
        files[f"tables/{stem}.md"] = tables.to_markdown(table).encode()
        files[f"tables/{stem}.csv"] = tables.to_csv(table).encode()
    return files


def _run_files(runs: Sequence[Run]) -> tuple[dict[str, bytes], list[CardRun]]:
    """Each run's run.json and calibration windows, and its entry on the card."""
    files, entries, taken = {}, [], set()
    for run in runs:
        stem = _unique(run.name, taken)  # runs of two stores may share a name
        files[f"runs/{stem}/run.json"] = (run.path / "run.json").read_bytes()
        windows, note = _windows(run)
        calib = f"calibration/{stem}.npy" if windows is not None else None
        if windows is not None:
            files[calib] = windows
        entries.append(CardRun(run.record, calib, note))
    return files, entries


def _checked_runs(runs: Sequence[Run]) -> list[Run]:
    if not runs:
        raise ConfigError("nothing to export: give at least one complete run (or a sweep with one)")
    for run in runs:
        if not run.complete:
            raise ConfigError(f"run {run.name!r} is {run.status}, not complete; only complete runs are exported")
    return list(runs)


def _left_out(omitted: Sequence[Omitted]) -> list[tuple[str, str]]:
    """The figures left out, each named once: (whose and which, why), those of one run and one reason together."""
    groups: dict[tuple[str, str], list[str]] = {}
    for o in omitted:
        groups.setdefault((o.run, o.why), []).append(o.title)
    return [(f"{run}: " * bool(run) + "; ".join(titles), why) for (run, why), titles in groups.items()]


def build_bundle(runs: Sequence[Run] = (), *, sweep: SweepSource | None = None, preset: Any = "two-column",
                 formats: Sequence[str] = DEFAULT_FORMATS, dpi: int = 300, model_runs: Sequence[RunRecord] = (),
                 on_event: EventCallback = ignore_events, cancel: threading.Event | None = None,
                 render: Render | None = None) -> Bundle:
    """The bundle of `runs` (one run, or a comparison) or of `sweep` (its complete runs): figures in `preset`
    (a name of figures.paper.PRESETS or a PrintPreset) and `formats` at `dpi`, their data, the tables, the
    windows, the run.json files and REPRODUCE.md; `model_runs`: every finished run of the model (see
    same_model_runs). Every option is checked first (ConfigError). Emits FigureRendered per figure;
    ExportCancelled when `cancel` is set between figures; EngineError when no figure rendered.
    `render(fig, fmt) -> bytes` replaces kaleido (default: export_figure)."""
    start = time.monotonic()
    options = export_options(preset, formats, dpi)
    runs = _checked_runs(sweep.runs if sweep is not None else runs)
    if render is None:
        with contextlib.suppress(Exception):  # one kept-open browser for every figure; else one each
            export.start_export_server()
        render = lambda fig, fmt: export.export_figure(fig, fmt, preset=options.preset, dpi=options.dpi)  # noqa: E731
    records = [r.record for r in runs]
    drawn = plan(records, {r.name: r.records() for r in runs} if sweep is None else {}, sweep=sweep is not None,
                 model_runs=model_runs)
    files: dict[str, bytes] = {}
    listed, failed = _render_figures(drawn.figures, options.formats, render, files, on_event, cancel, start)
    if failed and not listed:
        raise EngineError(f"no figure rendered ({failed[0][0]}: {failed[0][1]}), so no bundle was written")
    made = _tables(records, sweep)
    files.update(_table_files(made))
    run_files, entries = _run_files(runs)
    files.update(run_files)
    title = f"Sweep {sweep.name}" if sweep else (runs[0].name if len(runs) == 1 else f"Comparison of {len(runs)} runs")
    pinned = entries[0].calib_path if sweep and len({r.request.prune.nsamples for r in records}) == 1 else None
    command = sweep_command(sweep.manifest.get("config") or {}, pinned, name=f"{sweep.name[:30]}-repro") if sweep else None
    text = card(title, entries, figures=listed, failed=failed, omitted=_left_out(drawn.omitted), notes=drawn.notes,
                size=f"{options.preset.describe()}; PNG at {options.dpi} dpi",
                tables=[n for n in files if n.startswith("tables/")], sweep=command)
    files = {CARD: text.encode(), **files}
    rendered = tuple(dict.fromkeys(Path(n).stem for n in files if n.startswith("figures/")))
    return Bundle(files, tuple(failed), time.monotonic() - start, rendered, drawn.omitted)
