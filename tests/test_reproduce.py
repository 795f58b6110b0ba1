"""The reproducibility card: its prune command, parsed by the CLI, rebuilds the run's own request (with the
bundle's windows as --calib) for every kind of run; its sweep command rebuilds the sweep; and, run from the
unzipped bundle, the command gives the original's masks bit for bit (mask_sha256)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from test_bundle import fake_render, make_store
from wanda_engine.outputs import bundle as bundles
from wanda_engine.cli import main as cli
from wanda_engine.core.names import emphasize
from wanda_engine.store import reproduce
from wanda_engine.core.errors import ConfigError
from wanda_engine.config import EvalConfig, OffloadConfig, PruneConfig, RunRequest, ZeroShotConfig
from wanda_engine.store.run_record import RunRecord
from wanda_engine.store.run_store import load_run

CALIB = "calibration/run.npy"
REQUESTS = {
    "default": RunRequest(),
    "2:4": RunRequest(prune=PruneConfig(pattern="2:4")),
    "owl": RunRequest(prune=PruneConfig(layerwise="owl", sparsity=0.7, owl_m=7.0, owl_lambda=0.04)),
    "protect": RunRequest(prune=PruneConfig(method="magnitude", protect_channels=0.01, group="row")),
    "sparsegpt, eval off": RunRequest(prune=PruneConfig(method="sparsegpt", sparsity=0.6), eval=None),
    "ria, variant-free": RunRequest(prune=PruneConfig(method="ria", seed=3, batch_size=2), dtype="bfloat16"),
    "wanda variant, small windows": RunRequest(prune=PruneConfig(variant=True, nsamples=16, seqlen=256, device="cpu"),
                                               eval=EvalConfig(dataset="wikitext2", seqlen=512, windows=10)),
    "obs update": RunRequest(prune=PruneConfig(method="magnitude", weight_update="obs")),
    "weights alone": RunRequest(prune=PruneConfig(method="magnitude", calibrate=False)),
    "zero-shot, offload, hub model": RunRequest(
        model="org/model", trust_remote_code=True, zeroshot=ZeroShotConfig(tasks=("rte", "boolq"), limit=20,
                                                                           task_dir="/tasks"),
        offload=OffloadConfig({"0": "4GiB", "cpu": "16GiB"}, "/tmp/offload")),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir) -> Path:
    return make_store(tmp_path_factory, tiny_model_dir)


def as_recorded(request: RunRequest) -> RunRecord:
    """The record a run.json of `request` reads back as."""
    return RunRecord.from_json({"name": "run", "status": "complete", "config": request.to_dict()})


@pytest.mark.parametrize("kind", list(REQUESTS))
def test_the_prune_command_rebuilds_the_same_request(kind):
    record = as_recorded(REQUESTS[kind])
    command = reproduce.prune_command(record, CALIB)
    assert command[:4] == ["python", "-m", "wanda_engine", "prune"]
    rebuilt = cli._request(cli.build_parser().parse_args(command[3:]))
    assert rebuilt == dataclasses.replace(record.request, prune=dataclasses.replace(record.request.prune, calib=CALIB))
    assert reproduce.unexpressed(record) == []


def _changed(field: dataclasses.Field) -> PruneConfig:
    """A valid PruneConfig whose `field` differs from its default (a number moved a little, a switch flipped)."""
    default = field.default
    value = (not default if isinstance(default, bool) else default + 1 if isinstance(default, int)
             else round(default + 0.01, 6) if isinstance(default, float) else default)
    # some switches belong to one method (the variant, no calibration, a structure remover's bias compensation)
    for method in ("wanda", "magnitude", "flap"):
        try:
            return dataclasses.replace(PruneConfig(method=method), **{field.name: value})
        except ConfigError:
            continue
    raise AssertionError(f"no valid PruneConfig with {field.name}={value!r}")


def test_every_setting_has_an_option_or_is_listed_as_having_none():
    """A new PruneConfig field gets an option by its name (or NO_OPTION says it has none): changed from its
    default, it comes back through the CLI's parser."""
    parser = cli.build_parser()
    for field in dataclasses.fields(PruneConfig):
        if field.name in reproduce.NO_OPTION["prune"] or field.name == "calib":
            continue
        prune = _changed(field)
        record = as_recorded(RunRequest(prune=prune))
        rebuilt = cli._request(parser.parse_args(reproduce.prune_command(record, CALIB)[3:])).prune
        assert getattr(rebuilt, field.name) == getattr(prune, field.name), field.name


def test_settings_no_option_reaches_are_listed_for_the_card():
    record = as_recorded(RunRequest(prune=PruneConfig(percdamp=0.05), eval=EvalConfig(batch_size=1),
                                    save_model="/models/x"))
    missing = reproduce.unexpressed(record)
    assert any(m.startswith("prune.percdamp = 0.05") for m in missing)
    assert any(m.startswith("eval.batch_size = 1") for m in missing)
    assert any(m.startswith("run.save_model = '/models/x'") for m in missing)
    assert "--save-model" not in reproduce.prune_command(record, CALIB)


@pytest.mark.parametrize("argv", [
    ["sweep"],
    ["sweep", "--methods", "magnitude,wanda-variant,ria", "--sparsities", "0.5,0.6", "--patterns", "unstructured,2:4",
     "--layerwise", "uniform,owl", "--nsamples", "8,16", "--seqlen", "128", "--eval-windows", "4", "--owl-m", "7"],
    ["sweep", "--methods", "magnitude", "--protect-channels", "0,0.01", "--eval", "none", "--name", "abc",
     "--group", "row", "--seed", "2"],
    ["sweep", "--methods", "flap,block-influence,wanda", "--ratios", "0.1,0.2", "--allocation", "global",
     "--bias-compensation", "--speed-repeats", "3"],
    ["sweep", "--methods", "wanda-sp", "--no-speed", "--target", "per-block"],
])
def test_the_sweep_command_rebuilds_the_same_sweep(argv):
    config = cli._sweep_config(cli.build_parser().parse_args(argv)).to_dict()
    pinned = CALIB if "--nsamples" not in argv else None
    command = reproduce.sweep_command(config, pinned, name="again")
    rebuilt = cli._sweep_config(cli.build_parser().parse_args(command[3:])).to_dict()
    expected = {**config, "name": "again", "base": {**config["base"], **({"calib": CALIB} if pinned else {})}}
    assert rebuilt == expected


def test_the_card_states_what_the_run_recorded(store):
    run = load_run(store / "wanda")
    built = bundles.build_bundle([run], render=fake_render, formats=("svg",))
    card = built.files["REPRODUCE.md"].decode()
    record = run.record
    assert record.calibration.sha256 in card and record.mask_sha256 in card
    assert ", ".join(str(s) for s in record.calibration.starts) in card
    assert emphasize(record.eval.describe(), "markdown") in card and json.dumps(record.timings) in card
    assert all(f"{k} {v}" in card for k, v in record.versions.items())
    assert f"{record.model.params} parameters" in card
    command = reproduce.shell_line(reproduce.prune_command(record, "calibration/wanda.npy", out="reproduced/wanda"))
    assert command in card


def _fresh_cache(tmp_path: Path) -> Path:
    """A cache with no cached results that shares the embedded model's fp32 copy (no second GGUF conversion)."""
    from wanda_engine.core.paths import cache_dir

    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    for model in cache_dir().glob("*-fp32"):
        if not (cache / model.name).exists():
            (cache / model.name).symlink_to(model.resolve(), target_is_directory=True)
    return cache


def _reproduce_from_bundle(run_dir: Path, tmp_path: Path, in_process: bool, monkeypatch) -> dict:
    """Bundle the run, unzip it, run the card's command from the unzipped folder; the reproduction's run.json."""
    run = load_run(run_dir)
    zipped = bundles.build_bundle([run], render=fake_render, formats=("svg",)).write(tmp_path / "bundle.zip")
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(zipped) as z:
        z.extractall(folder)
    command = reproduce.prune_command(run.record, f"calibration/{run.name}.npy", out=f"reproduced/{run.name}")
    assert reproduce.shell_line(command) in (folder / "REPRODUCE.md").read_text()
    monkeypatch.setenv("WANDA_CACHE", str(_fresh_cache(tmp_path)))
    monkeypatch.setenv("WANDA_RUNS", str(tmp_path / "runs"))
    if in_process:
        monkeypatch.chdir(folder)
        assert cli.main(command[3:] + ["--quiet"]) == 0
    else:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, *command[1:], "--quiet"], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((folder / "reproduced" / run.name / "run.json").read_text())


@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_the_cards_command_from_the_unzipped_bundle_gives_the_same_masks(store, tmp_path, monkeypatch, method):
    original = json.loads((store / method / "run.json").read_text())
    again = _reproduce_from_bundle(store / method, tmp_path, True, monkeypatch)
    assert again["status"] == "complete" and original["mask_sha256"]
    assert again["mask_sha256"] == original["mask_sha256"]
    assert again["calibration"]["sha256"] == original["calibration"]["sha256"]
    assert again["ppl"] == original["ppl"]


@pytest.mark.slow
def test_the_cards_command_in_a_new_process_gives_the_same_masks(store, tmp_path, monkeypatch):
    original = json.loads((store / "wanda" / "run.json").read_text())
    again = _reproduce_from_bundle(store / "wanda", tmp_path, False, monkeypatch)
    assert again["mask_sha256"] == original["mask_sha256"]


@pytest.mark.slow
def test_the_embedded_models_masks_come_back_from_the_bundle(embedded, tmp_path, monkeypatch):
    """The issue's check: the card's command, on the embedded model against the bundle's .npy."""
    from wanda_engine.runner.execute import execute_run

    monkeypatch.setenv("WANDA_CACHE", str(_fresh_cache(tmp_path)))
    request = RunRequest(prune=PruneConfig(nsamples=4, seqlen=64, device="cpu"), eval=EvalConfig(seqlen=64, windows=2))
    run = execute_run(request, run_dir=tmp_path / "store" / "embedded-wanda", loaded=embedded)
    again = _reproduce_from_bundle(run.path, tmp_path, False, monkeypatch)
    assert again["mask_sha256"] == run.record.mask_sha256 and again["ppl"] == run.record.ppl
