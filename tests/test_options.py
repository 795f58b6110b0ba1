"""Every option of every command (prune, sweep, export, repair) refused, when it is bad, before anything is loaded,
drawn or written: status 1, one line `error: ...` naming what is wrong, nothing on disk where the command would
write. One case per refusal; the tiny model stands in for the embedded one."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_bundle import make_store
from wanda_engine.cli.main import main


def command(name: str, positional: list[str], defaults: dict[str, str], args: list[str]) -> list[str]:
    """`name positional... --option value... args... --quiet`, the options of `args` replacing the defaults."""
    kept = {flag: value for flag, value in defaults.items() if flag not in args[::2]}
    return [name, *positional, *[x for kv in kept.items() for x in kv], *args, "--quiet"]


def refused(capsys, argv: list[str], words: str, *written: Path) -> None:
    """`argv` ends with status 1 and one `error:` line holding `words`, and none of `written` exists."""
    rc = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert not [p for p in written if p.exists()], [p for p in written if p.exists()]


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir) -> Path:
    """Complete runs 'wanda' and 'magnitude' of the tiny model."""
    return make_store(tmp_path_factory, tiny_model_dir)


@pytest.fixture
def places(tmp_path) -> dict[str, Path]:
    """A file, a folder with a file in it, and a folder holding a run's run.json."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "old-run").mkdir()
    (tmp_path / "old-run" / "run.json").write_text("{}")
    return {"file": tmp_path / "a-file", "full": tmp_path / "full", "run": tmp_path / "old-run"}


# ---------------------------------------------------------------- export

EXPORT = {  # case: (arguments, words in the one line)
    "dpi zero": (["--dpi", "0"], "dpi"),
    "dpi past the range": (["--dpi", "100000"], "dpi"),
    "an unknown format": (["--formats", "jpg"], "formats"),
    "no format": (["--formats", ", ,"], "formats"),
    "an unknown preset": (["--preset", "A4"], "print preset"),
    "custom without a size": (["--preset", "custom"], "needs a width"),
    "a negative width": (["--width", "-2"], "width"),
    "a height past the range": (["--height", "100"], "height"),
    "an unknown unit": (["--unit", "mm", "--width", "3"], "print unit"),
    "a unit without a size": (["--unit", "cm"], "unit"),
}


@pytest.fixture
def no_rendering(monkeypatch):
    from wanda_engine.outputs import export

    def render(*args, **kwargs):
        raise AssertionError("a figure was rendered before the options were checked")

    monkeypatch.setattr(export, "export_figure", render)
    monkeypatch.setattr(export, "start_export_server", lambda: None)


@pytest.mark.parametrize("case", list(EXPORT))
def test_export_refuses_a_bad_option_before_drawing_anything(case, capsys, store, tmp_path, no_rendering):
    args, words = EXPORT[case]
    for out in (tmp_path / "bundle.zip", tmp_path / "bundle"):
        refused(capsys, command("export", [str(store / "wanda")], {"--out": str(out)}, args), words, out)


def test_export_refuses_a_target_it_cannot_write_or_would_merge_into(capsys, store, tmp_path, places, no_rendering):
    run = str(store / "wanda")
    (tmp_path / "folder.zip").mkdir()
    refused(capsys, ["export", run, "--out", str(places["full"])], "not empty")
    assert sorted(p.name for p in places["full"].iterdir()) == ["notes.txt"]
    refused(capsys, ["export", run, "--out", str(tmp_path / "folder.zip")], "is a folder")
    refused(capsys, ["export", run, "--out", str(places["file"] / "b.zip")], "cannot be written",
            places["file"] / "b.zip")


def test_export_refuses_runs_it_cannot_bundle(capsys, store, tmp_path, places, no_rendering):
    out = tmp_path / "b.zip"
    run = str(store / "wanda")
    refused(capsys, ["export", str(tmp_path / "nowhere"), "--out", str(out)], "not a run directory", out)
    refused(capsys, ["export", run, run, "--out", str(out)], "given twice", out)
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / "run.json").write_text((store / "wanda" / "run.json").read_text()
                                                    .replace('"status": "complete"', '"status": "failed"'))
    refused(capsys, ["export", str(tmp_path / "running"), "--out", str(out)], "not complete", out)
    refused(capsys, ["export", "--out", str(out)], "either run directories or --sweep", out)
    refused(capsys, ["export", run, "--sweep", "sw", "--out", str(out)], "not both", out)
    refused(capsys, ["export", "--sweep", "sw", "--runs", str(store), "--out", str(out)], "no sweep named", out)
    refused(capsys, ["export", "wanda", "--runs", str(places["file"]), "--out", str(out)], "is a file", out)


# ---------------------------------------------------------------- prune

PRUNE = {
    "an unknown dtype": (["--dtype", "int8"], "dtype"),
    "an unknown method": (["--method", "nope"], "method 'nope'"),
    "an unknown group": (["--group", "column"], "group"),
    "an unknown layerwise": (["--layerwise", "x"], "layerwise"),
    "a negative owl-m": (["--owl-m", "-1"], "owl_m"),
    "owl-lambda not a number": (["--owl-lambda", "nan"], "owl_lambda"),
    "nsamples zero": (["--nsamples", "0"], "nsamples"),
    "seqlen zero": (["--seqlen", "0"], "seqlen"),
    "batch size zero": (["--batch-size", "0"], "batch_size"),
    "eval windows zero": (["--eval-windows", "0"], "eval windows"),
    "eval seqlen one": (["--eval-seqlen", "1"], "eval seqlen"),
    "an unknown eval text": (["--eval", "nosuch"], "unknown data source"),
    "a missing calibration file": (["--calib", "/nonexistent/x.txt"], "does not exist"),
    "protect a whole": (["--protect-channels", "1.5"], "protect_channels"),
    "the variant of magnitude": (["--method", "magnitude", "--variant"], "variant"),
    "wanda from the weights alone": (["--no-calibration"], "calibrate false"),
    "a zero-shot limit of zero": (["--tasks", "rte", "--zeroshot-limit", "0"], "limit"),
    "an unknown device": (["--device", "tpu"], "device"),
    "a cuda device index that is no number": (["--device", "cuda:x"], "device"),
    "a memory budget without a size": (["--max-memory", "cpu"], "DEVICE=SIZE"),
    "a memory size without a unit": (["--max-memory", "cpu=lots"], "memory size"),
}


def _prune(tiny_model_dir: Path, tmp_path: Path, args: list[str]) -> list[str]:
    return command("prune", [], {"--model": str(tiny_model_dir), "--nsamples": "4", "--seqlen": "32",
                                 "--eval-windows": "2", "--out": str(tmp_path / "run"),
                                 "--save-model": str(tmp_path / "saved")}, args)


@pytest.mark.parametrize("case", list(PRUNE))
def test_prune_refuses_a_bad_option_and_writes_nothing(case, capsys, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    args, words = PRUNE[case]
    refused(capsys, _prune(tiny_model_dir, tmp_path, args), words, tmp_path / "run", tmp_path / "saved")


def test_prune_refuses_outputs_it_would_lose_or_merge_before_loading(capsys, tiny_model_dir, tmp_path, places):
    run, saved = tmp_path / "run", tmp_path / "saved"
    for args, words in ((["--out", str(places["file"])], "is a file"), (["--out", str(places["run"])], "holds a run"),
                        (["--save-model", str(places["full"])], "not empty"),
                        (["--save-model", str(places["file"])], "is a file")):
        refused(capsys, _prune(tiny_model_dir, tmp_path, args), words, run, saved)
    assert sorted(p.name for p in places["full"].iterdir()) == ["notes.txt"]
    assert (places["run"] / "run.json").read_text() == "{}"


# ---------------------------------------------------------------- sweep

SWEEP = {
    "an unknown method": (["--methods", "nope"], "sweep methods"),
    "no method": (["--methods", ","], "at least one value"),
    "a bare 50": (["--sparsities", "50"], "0.5 or 50%"),
    "an N:M pattern with N >= M": (["--patterns", "3:2"], "0 < N < M"),
    "an unknown layerwise": (["--layerwise", "x"], "layerwise"),
    "protect a double": (["--protect-channels", "2"], "protect_channels"),
    "an unknown weight update": (["--weight-update", "x"], "weight_update"),
    "an unknown group": (["--group", "col"], "group"),
    "nsamples zero": (["--nsamples", "0"], "nsamples"),
    "nsamples not a number": (["--nsamples", "a"], "sweep nsamples"),
    "seqlen zero": (["--seqlen", "0"], "seqlen"),
    "a name with a folder": (["--name", "../x"], "not allowed"),
    "a figure of an unknown kind": (["--figure", "f.jpg"], "--figure must end in"),
    "an unknown device": (["--device", "tpu"], "device"),
    "eval windows zero": (["--eval-windows", "0"], "eval windows"),
    "a missing calibration file": (["--calib", "/nonexistent.txt"], "does not exist"),
}


def _sweep(tiny_model_dir: Path, tmp_path: Path, args: list[str]) -> list[str]:
    return command("sweep", [], {"--model": str(tiny_model_dir), "--nsamples": "4", "--seqlen": "32",
                                 "--eval-windows": "2", "--runs-dir": str(tmp_path / "store"),
                                 "--methods": "magnitude"}, args)


@pytest.mark.parametrize("case", list(SWEEP))
def test_sweep_refuses_a_bad_option_and_writes_nothing(case, capsys, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    args, words = SWEEP[case]
    refused(capsys, _sweep(tiny_model_dir, tmp_path, args), words, tmp_path / "store", tmp_path / "f.jpg")


def test_sweep_refuses_a_figure_or_store_it_cannot_write_before_any_run(capsys, tiny_model_dir, tmp_path, places):
    store = tmp_path / "store"
    refused(capsys, _sweep(tiny_model_dir, tmp_path, ["--figure", str(places["file"] / "f.png")]), "cannot be written",
            store)
    refused(capsys, _sweep(tiny_model_dir, tmp_path, ["--runs-dir", str(places["file"])]), "is a file", store)


# ---------------------------------------------------------------- repair

REPAIR = {
    "steps zero": (["--steps", "0"], "steps"),
    "batch size zero": (["--batch-size", "0"], "batch_size"),
    "seqlen past the context": (["--seqlen", "100000"], "context"),
    "a negative learning rate": (["--lr", "-1"], "lr"),
    "a learning rate that is no number": (["--lr", "nan"], "lr"),
    "an unknown schedule": (["--schedule", "x"], "schedule"),
    "negative warmup": (["--warmup-steps", "-1"], "warmup_steps"),
    "negative weight decay": (["--weight-decay", "-1"], "weight_decay"),
    "rank zero": (["--rank", "0"], "lora_rank"),
    "alpha zero": (["--alpha", "0"], "lora_alpha"),
    "an unknown target": (["--targets", "nope"], "lora_targets"),
    "the adapter of a full fine-tune": (["--method", "finetune", "--evaluate", "adapter"], "needs method 'lora'"),
    "a missing training text": (["--train-text", "/nonexistent.txt"], "does not exist"),
    "evaluate every zero steps": (["--eval-every", "0"], "eval_every"),
    "an unknown device": (["--device", "tpu"], "device"),
    "a name with a folder": (["--name", "../x"], "not allowed"),
}


@pytest.fixture(scope="module")
def pruned(store) -> Path:
    return store / "wanda"


def _repair(run: str, args: list[str]) -> list[str]:
    return command("repair", [run], {"--steps": "2", "--batch-size": "2", "--seqlen": "32", "--eval-every": "1"},
                   args)


@pytest.mark.parametrize("case", list(REPAIR))
def test_repair_refuses_a_bad_option_and_writes_nothing(case, capsys, pruned, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    args, words = REPAIR[case]
    before = sorted(os.listdir(pruned))
    refused(capsys, _repair(str(pruned), args), words)
    assert sorted(os.listdir(pruned)) == before  # no repairs/ folder begun


def test_repair_refuses_a_run_or_model_folder_it_cannot_use(capsys, pruned, tmp_path, places):
    before = sorted(os.listdir(pruned))
    refused(capsys, _repair(str(tmp_path / "nowhere" / "run"), []), "not a run directory")
    refused(capsys, _repair("no-such-run", ["--runs-dir", str(places["file"])]), "is a file")
    refused(capsys, _repair(str(pruned), ["--save-model", str(places["file"])]), "is a file")
    refused(capsys, _repair(str(pruned), ["--save-model", str(places["full"])]), "not empty")
    assert sorted(os.listdir(pruned)) == before
