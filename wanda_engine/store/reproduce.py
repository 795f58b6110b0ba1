"""The reproducibility card (REPRODUCE.md) of a bundle, and the command lines that reproduce its runs.

Torch-free. `prune_command` writes a run's settings back as `python -m wanda_engine prune ...` arguments,
field by field (every field of RunRequest, PruneConfig, EvalConfig, ZeroShotConfig and OffloadConfig that
has an option), with `--calib` pointing at the run's calibration windows inside the bundle: run from the unzipped folder it draws no windows of its own, so the masks come out the same
bit for bit (compare `mask_sha256`). Settings that no option reaches are listed by `unexpressed`.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import EvalConfig, OffloadConfig, PruneConfig, SpeedConfig, ZeroShotConfig
from ..core.names import emphasize
from .run_record import RunRecord

PROGRAM = ["python", "-m", "wanda_engine"]
# The CLI's option of each setting: '--' and the field's name with dashes, unless named here. (cli.py is not
# imported: it imports the export command, which imports this module.) tests/test_reproduce.py parses the
# commands with cli.build_parser, so a setting whose option is missing or named otherwise fails there.
_OPTIONS = {"eval": {"dataset": "--eval", "seqlen": "--eval-seqlen", "windows": "--eval-windows"},
            "zeroshot": {"limit": "--zeroshot-limit"}, "offload": {"folder": "--offload-folder"},
            "speed": {"decode_tokens": "--speed-decode-tokens", "repeats": "--speed-repeats"}}
_NEGATED = {"calibrate": "--no-calibration"}  # a setting that is on by default, and the flag that turns it off
NO_OPTION = {"prune": {"blocksize", "percdamp", "ria_power"}, "eval": {"batch_size"},
             "zeroshot": {"num_fewshot", "batch_size"}, "run": {"save_model"}}
SWEEP_BASE = ("group", "owl_m", "owl_lambda", "seqlen", "seed", "batch_size", "device", "calib")  # the rest: axes
_EXPORT_PACKAGES = ("numpy", "pandas", "plotly", "kaleido")
_NOT_RECORDED = "not recorded (a run made before this was kept)"


def _settings(record: RunRecord, calib_path: str) -> Iterator[tuple[str, str, Any, Any]]:
    """(section, field, value, default) of every setting of the run, calib replaced by `calib_path`."""
    request = record.request
    yield from (("run", name, getattr(request, name), None)
                for name in ("model", "dtype", "trust_remote_code", "save_model"))
    prune = dataclasses.replace(request.prune, calib=calib_path)
    yield from (("prune", f.name, getattr(prune, f.name), f.default) for f in dataclasses.fields(PruneConfig))
    for section, config, cls in (("eval", request.eval, EvalConfig), ("zeroshot", request.zeroshot, ZeroShotConfig),
                                 ("offload", request.offload, OffloadConfig), ("speed", request.speed, SpeedConfig)):
        if config is not None:
            yield from ((section, f.name, getattr(config, f.name), f.default) for f in dataclasses.fields(cls))


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):  # offload budgets: 0=20GiB,cpu=64GiB
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _option(flag: str, value: Any) -> list[str]:
    """The arguments that set `flag`'s setting to `value`: a bool is a switch, None is the option left out."""
    if isinstance(value, bool):
        return [flag] if value else []
    return [] if value is None else [flag, _text(value)]


def _arguments(record: RunRecord, calib_path: str) -> tuple[list[str], list[str]]:
    """The prune arguments of `record`, and the settings no option sets that differ from their default."""
    args, missing = [], []
    for section, name, value, default in _settings(record, calib_path):
        if name in NO_OPTION.get(section, ()):
            if value != default:
                missing.append(f"{section}.{name} = {value!r} (the command runs with {default!r})")
        elif name in _NEGATED:
            args += [] if value else [_NEGATED[name]]
        else:
            args += _option(_OPTIONS.get(section, {}).get(name, "--" + name.replace("_", "-")), value)
    if record.request.eval is None:
        args += ["--eval", "none"]
    if (record.request.speed is not None) != (record.request.prune.structure is not None):  # the CLI's default
        args += ["--speed" if record.request.speed is not None else "--no-speed"]
    return args, missing


def prune_command(record: RunRecord, calib_path: str, *, out: str | None = None) -> list[str]:
    """`python -m wanda_engine prune ...` that re-runs `record` on the windows of `calib_path` (a .npy of
    int64 token ids [nsamples, seqlen]); `out`: the run directory it writes."""
    args, _ = _arguments(record, calib_path)
    return PROGRAM + ["prune", *args, *(["--out", out] if out else [])]


def unexpressed(record: RunRecord) -> list[str]:
    """The run's settings that no CLI option sets and that differ from their default (the command can't
    repeat them), each as 'section.field = value (the command runs with default)'."""
    return _arguments(record, record.request.prune.calib)[1]


def sweep_command(config: Mapping[str, Any], calib_path: str | None = None, *, name: str | None = None) -> list[str]:
    """`python -m wanda_engine sweep ...` from a sweep manifest's `config` (SweepConfig.to_dict): every axis,
    the base settings of SWEEP_BASE, the model and the evaluation; `calib_path` pins the windows (one
    calibration size only); `name`: the new sweep's name."""
    base = {**(config.get("base") or {}), **({"calib": calib_path} if calib_path else {})}
    axes = {k: v for k, v in config.items() if k not in ("base", "eval", "name", "speed") and v is not None}
    settings = {**{k: base.get(k) for k in (*SWEEP_BASE, "nsamples") if k not in axes}, **axes}
    args = [arg for field, value in settings.items() for arg in _option("--" + field.replace("_", "-"), value)]
    speed = config.get("speed")  # every point measured its speed, or none did (the CLI's default depends on the grid)
    args += ["--no-speed"] if speed is None else ["--speed", *(arg for field, flag in _OPTIONS["speed"].items()
                                                              for arg in _option(flag, speed.get(field)))]
    evaluation = config.get("eval")
    if evaluation is None:
        args += ["--eval", "none"]
    else:
        args += [arg for field, flag in _OPTIONS["eval"].items() for arg in _option(flag, evaluation.get(field))]
    return PROGRAM + ["sweep", *args, *(["--name", name] if name else [])]


def shell_line(command: Sequence[str]) -> str:
    """The command as one line to paste into a POSIX shell."""
    return shlex.join(command)


@dataclass(frozen=True)
class CardRun:
    """One run in a card: its record and where its calibration windows lie in the bundle (None: not kept)."""

    record: RunRecord
    calib_path: str | None
    calib_note: str = ""  # e.g. a checksum that did not match


def _fingerprint(record: RunRecord) -> str:
    m = record.model
    return f"{m.source}|{m.label}|{m.params}|{m.dtype}"


def _calibration_lines(entry: CardRun) -> list[str]:
    c, prune = entry.record.calibration, entry.record.request.prune
    starts = ", ".join(str(s) for s in c.starts) if c.starts is not None else (
        "none (a token file gives the windows themselves)" if prune.calib.lower().endswith(".npy") else _NOT_RECORDED)
    drawn = f"{c.text_name(prune.calib)}, {prune.nsamples} × {prune.seqlen} tokens, seed {prune.seed}"
    if not prune.calibrate:
        head = f"none: pruned from the weights alone (windows of {drawn} drawn, never run through the model)"
    elif not prune.needs_calibration:
        head = f"{drawn} (run through the model for the records only: the masks need no activations)"
    else:
        head = drawn
    return [f"- calibration: {head}",
            f"- calibration windows' sha256 (int64 token ids): `{c.sha256 or _NOT_RECORDED}`",
            f"- window starts (token offsets in the text): {starts}",
            f"- windows in this bundle: `{entry.calib_path}`" if entry.calib_path else
            f"- windows in this bundle: none ({_NOT_RECORDED}; the command re-draws them from the text and seed)",
            *([f"- note: {entry.calib_note}"] if entry.calib_note else [])]


def _evaluation_lines(record: RunRecord) -> list[str]:
    ev, zs = record.eval, record.zeroshot
    lines = [f"- perplexity: {ev.describe()}; non-overlapping windows" if ev else "- perplexity: not evaluated",
             f"- perplexity dense / pruned: {record.ppl_dense} / {record.ppl}"]
    if zs is not None:
        lines.append(f"- zero-shot: lm-eval {zs.harness}, tasks {', '.join(zs.config.tasks)}, "
                     f"{zs.config.num_fewshot}-shot, limit {zs.config.limit or 'none'}")
    return lines


def run_section(entry: CardRun) -> list[str]:
    """The card's section on one run: settings, versions, model, windows, protocol, timings, masks, command."""
    record = entry.record
    command = (prune_command(record, entry.calib_path, out=f"reproduced/{record.name}") if entry.calib_path else
               prune_command(record, record.request.prune.calib, out=f"reproduced/{record.name}"))
    versions = ", ".join(f"{k} {v}" for k, v in record.versions.items()) or _NOT_RECORDED
    lines = [f"## {record.name}: {record.label()}", "",
             f"- status: {record.status}; created {record.created}, finished {record.finished or '?'} on {record.device or '?'}",
             f"- package versions at run time: {versions}",
             f"- model: {record.model.describe(record.request.model)} ({record.model.architecture or '?'}, "
             f"{record.model.num_blocks or '?'} blocks, {record.model.params or '?'} parameters, {record.model.dtype or '?'})",
             f"- model fingerprint (source|label|params|dtype): `{_fingerprint(record)}`",
             *_calibration_lines(entry), *_evaluation_lines(record),
             f"- achieved sparsity: {record.sparsity}",
             f"- timings (s): {json.dumps(record.timings)}",
             f"- mask checksum (checks.mask_checksum): `{record.mask_sha256 or _NOT_RECORDED}`", "",
             "Exact settings (run.json's config):", "", "```json", json.dumps(record.request.to_dict(), indent=1), "```",
             "", "Reproduce (from this folder; compare `mask_sha256` in `reproduced/" f"{record.name}/run.json`):", "",
             "```sh", shell_line(command), "```"]
    missing = unexpressed(record)
    if missing:
        lines += ["", "Settings the command line cannot repeat: " + "; ".join(missing) + "."]
    return lines + [""]


def exporter_versions() -> dict[str, str]:
    """The versions of the packages that drew this bundle's figures and tables."""
    out = {}
    for package in _EXPORT_PACKAGES:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _install_lines() -> list[str]:
    """How a reader gets the command that the card's commands run."""
    return ["Every command below runs from the folder holding this file, with the project installed: from a copy "
            "of its source, `pip install -e /path/to/wanda` (its `scripts/setup.sh` does that into `.venv`, "
            "with the embedded model and the Debian packages it reads), then `source /path/to/wanda/.venv/bin/"
            "activate`. `wanda-engine` is the same command as `python -m wanda_engine`. A command whose model is "
            "a local path needs that model there too.", ""]


def card(title: str, entries: Sequence[CardRun], *, figures: Sequence[tuple[str, str]] = (),
         failed: Sequence[tuple[str, str]] = (), omitted: Sequence[tuple[str, str]] = (),
         notes: Sequence[str] = (), size: str = "", tables: Sequence[str] = (),
         sweep: list[str] | None = None) -> str:
    """REPRODUCE.md: what the bundle holds (`figures`: (its files, what it shows) at print `size`; `notes` on
    them; `omitted`: (figures left out for want of data, why), each named once; `failed`: (figure, why);
    `tables`: files), then one section per run; `sweep`: the command that re-runs the whole sweep."""
    lines = [f"# {title}: how to reproduce", "", *_install_lines(),
             "Drawn with " + ", ".join(f"{k} {v}" for k, v in exporter_versions().items()) + ".", ""]
    if sweep:
        lines += ["The whole sweep:", "", "```sh", shell_line(sweep), "```", ""]
    if figures:
        lines += ["## Figures", "", *([f"At {size}.", ""] if size else []), *(f"{note}" for note in notes),
                  *([""] if notes else []), *(f"- {files}: {caption}" for files, caption in figures), ""]
    if omitted:
        lines += ["## Figures left out: these runs have no data for them", "",
                  *(f"- {what}: {why}." for what, why in omitted), ""]
    if failed:
        lines += ["## Figures that failed to render", "", *(f"- {name}: {why}" for name, why in failed), ""]
    if tables:
        lines += ["## Tables", "", *(f"- `{file}`" for file in tables), ""]
    for entry in entries:
        lines += run_section(entry)
    return emphasize("\n".join(lines), "markdown")  # the novels' titles in italics
