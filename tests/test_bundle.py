"""Export all: a bundle of real runs holds every figure of the catalog in each format with the data behind
it, the tables, each run's calibration windows and run.json, and REPRODUCE.md; a failed render is named and
the rest kept; a cancel writes nothing; the zip appears whole or not at all; the export CLI imports no torch."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from wanda_engine.outputs import bundle as bundles
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.outputs.figures import catalog, figure_data
from wanda_engine.store.run_store import RunStore, load_run

SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def fake_render(fig, fmt: str) -> bytes:
    """Stands in for kaleido where only the bundle's assembly is under test: names the figure and format."""
    return f"{fmt}:{len(fig.data)}".encode()


def tiny_runs(root: Path, model: Path, methods=("wanda", "magnitude")) -> list[Path]:
    """Complete runs of the tiny model in store `root`, one per method, named after it."""
    from wanda_engine.runner.execute import execute_run

    for method in methods:
        request = RunRequest(model=str(model), prune=PruneConfig(method=method, nsamples=4, seqlen=32, device="cpu"),
                             eval=EvalConfig(seqlen=32, windows=2), name=method)
        execute_run(request, store=RunStore(root))
    return [root / m for m in methods]


def make_store(tmp_path_factory, tiny_model_dir) -> Path:
    """A run store holding complete runs 'wanda' and 'magnitude' of the tiny model."""
    root = tmp_path_factory.mktemp("bundle") / "runs"
    saved = os.environ.get("WANDA_CACHE")
    os.environ["WANDA_CACHE"] = str(root.parent / "cache")
    try:
        tiny_runs(root, tiny_model_dir)
    finally:
        if saved is None:
            os.environ.pop("WANDA_CACHE")
        else:
            os.environ["WANDA_CACHE"] = saved
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir) -> Path:
    return make_store(tmp_path_factory, tiny_model_dir)


def runs_of(store: Path, *names: str):
    return [load_run(store / n) for n in names]


def test_a_comparison_bundle_holds_every_figure_its_data_the_tables_and_the_windows(store):
    runs = runs_of(store, "wanda", "magnitude")
    events = []
    built = bundles.build_bundle(runs, formats=("pdf", "png"), render=fake_render, on_event=events.append)
    specs = catalog.catalog([r.record for r in runs], {r.name: r.records() for r in runs})
    assert len(specs) >= 15 and not built.failed
    for spec in specs:
        fig = spec.build()
        assert built.files[f"figures/{spec.stem}.pdf"] == fake_render(fig, "pdf")
        assert built.files[f"figures/{spec.stem}.png"] == fake_render(fig, "png")
        shipped = pd.read_csv(io.BytesIO(built.files[f"data/{spec.stem}.csv"]))
        expected = pd.read_csv(io.StringIO(figure_data(fig).to_csv(index=False)))
        pd.testing.assert_frame_equal(shipped, expected)
    assert [e.figure for e in events] == [s.stem for s in specs]
    assert [e.index for e in events] == list(range(1, len(specs) + 1)) and all(e.total == len(specs) for e in events)
    for run in runs:
        assert built.files[f"calibration/{run.name}.npy"] == (run.path / "calibration.npy").read_bytes()
        assert json.loads(built.files[f"runs/{run.name}/run.json"]) == json.loads((run.path / "run.json").read_text())
    for ext in ("tex", "md", "csv"):
        assert f"tables/perplexity.{ext}" in built.files
    card = built.files["REPRODUCE.md"].decode()
    assert all(f"`figures/{s.stem}.pdf`" in card for s in specs)
    assert all(SAFE_NAME.match(name) for name in built.files)


def test_a_failed_render_is_named_and_the_rest_is_kept(store):
    runs = runs_of(store, "wanda")
    density = next(s for s in catalog.catalog([runs[0].record], {"wanda": runs[0].records()})
                   if s.stem.startswith("density"))
    doomed = density.build().layout.title.text

    def render(fig, fmt):
        if fig.layout.title.text == doomed:
            raise RuntimeError("chromium went away\nsecond line")
        return fake_render(fig, fmt)

    built = bundles.build_bundle(runs, formats=("svg",), render=render)
    failed = dict(built.failed)
    assert len(failed) == 1
    stem = next(iter(failed))
    assert stem == density.stem and failed[stem] == "RuntimeError: chromium went away"
    assert f"figures/{stem}.svg" not in built.files and f"data/{stem}.csv" not in built.files
    assert len([n for n in built.files if n.startswith("figures/")]) == len(built.rendered) >= 6
    card = built.files["REPRODUCE.md"].decode()
    assert "failed to render" in card and f"- {stem}: RuntimeError: chromium went away" in card


def test_a_cancel_between_figures_writes_nothing(store, tmp_path):
    cancel = threading.Event()
    out = tmp_path / "b.zip"

    def on_event(event):
        if event.index == 2:
            cancel.set()

    with pytest.raises(bundles.ExportCancelled):
        bundles.build_bundle(runs_of(store, "wanda"), render=fake_render, on_event=on_event, cancel=cancel).write(out)
    assert list(tmp_path.iterdir()) == []


def test_the_zip_is_renamed_into_place_and_a_folder_is_never_merged(store, tmp_path):
    built = bundles.build_bundle(runs_of(store, "wanda"), render=fake_render)
    path = built.write(tmp_path / "out" / "bundle.zip")
    assert sorted(p.name for p in path.parent.iterdir()) == ["bundle.zip"]  # no temporary file left
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(built.files)
        assert z.read("REPRODUCE.md") == built.files["REPRODUCE.md"]
    folder = built.write(tmp_path / "unzipped")
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(built.files)
    with pytest.raises(bundles.ConfigError, match="not empty"):
        built.write(folder)


def test_bad_formats_and_runs_that_did_not_finish_are_refused(store, tmp_path):
    with pytest.raises(bundles.ConfigError, match="formats"):
        bundles.build_bundle(runs_of(store, "wanda"), formats=("jpg",), render=fake_render)
    with pytest.raises(bundles.ConfigError, match="at least one"):
        bundles.build_bundle([], render=fake_render)
    broken = tmp_path / "broken"
    broken.mkdir()
    meta = json.loads((store / "wanda" / "run.json").read_text())
    (broken / "run.json").write_text(json.dumps({**meta, "status": "failed", "error": "x"}))
    with pytest.raises(bundles.ConfigError, match="not complete"):
        bundles.build_bundle([load_run(broken)], render=fake_render)


def test_a_run_recorded_before_runs_kept_their_windows_still_bundles(store, tmp_path):
    old = tmp_path / "runs" / "old"
    old.mkdir(parents=True)
    meta = json.loads((store / "wanda" / "run.json").read_text())
    for key in ("sha256", "starts", "file"):
        meta["calibration"].pop(key)
    meta.pop("mask_sha256")
    (old / "run.json").write_text(json.dumps(meta))
    for name in ("records.json", "arrays.npz"):
        (old / name).write_bytes((store / "wanda" / name).read_bytes())
    built = bundles.build_bundle([load_run(old)], render=fake_render)
    assert not any(n.startswith("calibration/") for n in built.files)
    card = built.files["REPRODUCE.md"].decode()
    assert card.count("not recorded") >= 3 and "--calib default" in card


def write_sweep(root: Path, store: Path) -> None:
    """Sweep 'sw' in store `root`: the two tiny runs copied as its points, and a point that never ran."""
    for name in ("wanda", "magnitude"):
        (root / f"sw-{name}").mkdir(parents=True)
        for f in (store / name).iterdir():
            (root / f"sw-{name}" / f.name).write_bytes(f.read_bytes())
    config = {"methods": ["wanda", "magnitude"], "sparsities": [0.5], "patterns": ["unstructured"], "nsamples": None,
              "layerwise": ["uniform"], "protect_channels": [0.0], "base": PruneConfig(nsamples=4, seqlen=32).to_dict(),
              "eval": EvalConfig(seqlen=32, windows=2).to_dict(), "model": "tiny", "dtype": "float32", "name": "sw",
              "trust_remote_code": False}
    (root / ".sweeps").mkdir(exist_ok=True)
    points = [{"index": i, "run": run, "label": run, "nsamples": 4, "status": "planned"}
              for i, run in enumerate(("sw-wanda", "sw-magnitude", "sw-never-ran"))]
    (root / ".sweeps" / "sw.json").write_text(json.dumps({"name": "sw", "created": "2026-12-01T00:00:00",
                                                          "config": config, "points": points, "model": "tiny"}))


def test_a_sweep_bundle_reads_its_manifest_without_the_sweep_module(store, tmp_path):
    root = tmp_path / "runs"
    write_sweep(root, store)
    source = bundles.read_sweep(RunStore(root), "sw")
    assert [r.name for r in source.runs] == ["sw-wanda", "sw-magnitude"]
    built = bundles.build_bundle(sweep=source, render=fake_render, formats=("svg",))
    assert "figures/sweep_sparsity.svg" in built.files and "tables/sweep.tex" in built.files
    assert not any("histograms" in n for n in built.files)  # a grid is not drawn run by run
    card = built.files["REPRODUCE.md"].decode()
    assert "python -m wanda_engine sweep" in card and "--calib calibration/sw-wanda.npy" in card
    with pytest.raises(bundles.EngineError, match="no sweep named"):
        bundles.read_sweep(RunStore(root), "other")


@pytest.mark.slow
def test_the_export_command_runs_without_torch(store, tmp_path):
    """On a laptop with a copied run store: no torch, no model code; kaleido stands in for speed here."""
    out = tmp_path / "b.zip"
    code = (
        "import sys, argparse\n"
        "from wanda_engine.outputs import export\n"
        "export.export_figure = lambda fig, fmt, **kw: fmt.encode()\n"
        "from wanda_engine.cli.export import add_export_parser, run_export\n"
        "p = argparse.ArgumentParser(); sub = p.add_subparsers(dest='command'); add_export_parser(sub)\n"
        f"rc = run_export(p.parse_args(['export', {str(store / 'wanda')!r}, 'magnitude', '--runs', {str(store)!r},"
        f" '--formats', 'pdf,svg', '--preset', 'one-column', '--out', {str(out)!r}]))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch was imported'\n"
        "sys.exit(rc)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["bundle"] == str(out) and summary["failed"] == []
    assert "figure 1/" in done.stderr  # progress, from the events
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
    assert "REPRODUCE.md" in names and "figures/perplexity.pdf" in names and "figures/wanda-blocks.svg" in names
    assert np.load(io.BytesIO(zipfile.ZipFile(out).read("calibration/wanda.npy"))).shape == (4, 32)


@pytest.mark.slow
def test_a_real_bundle_renders_at_the_print_size(store, tmp_path):
    """Kaleido and Chromium for real: every figure of a comparison as PDF and PNG at two-column width."""
    from wanda_engine.outputs.figures.paper import print_preset

    built = bundles.build_bundle(runs_of(store, "wanda", "magnitude"), preset="two-column", formats=("pdf", "png"),
                                 dpi=150)
    assert not built.failed, built.failed
    from PIL import Image

    width = round(print_preset("two-column").width_in * 150)
    png = next(n for n in built.files if n.endswith(".png"))
    assert Image.open(io.BytesIO(built.files[png])).size[0] == width
    assert all(built.files[n].startswith(b"%PDF") for n in built.files if n.endswith(".pdf"))


def test_export_all_on_the_runs_page_offers_the_bundle_as_a_zip(app_env, store, monkeypatch):
    """AppTest: Export all on a tiny run, then the download button's bytes (as handed to Streamlit's media
    storage) are a zip with REPRODUCE.md and the figures. Kaleido is stood in for: the page is under test."""
    pytest.importorskip("streamlit")
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from test_app import goto, new_app, no_exceptions

    from wanda_engine.outputs import export

    shutil.copytree(store / "wanda", app_env.runs / "wanda")
    monkeypatch.setattr(export, "export_figure", lambda fig, fmt, **kw: fake_render(fig, fmt))
    monkeypatch.setattr(export, "start_export_server", lambda: None)
    handed: list[tuple[bytes, str | None]] = []
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, data, mimetype, kind, filename=None):
        handed.append((data, filename))
        return original(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    at = new_app()
    at.session_state["current_run"] = "wanda"
    goto(at, "runs")
    no_exceptions(at)
    at.selectbox(key="export_all_preset").set_value("one-column")
    at.multiselect(key="export_all_formats").set_value(["pdf", "svg"])
    at.button(key="export_all_all").click().run()
    no_exceptions(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert any(label.startswith("Download bundle") for label in labels), labels
    data = next(d for d, name in handed if name == "wanda-bundle.zip")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
    assert "REPRODUCE.md" in names and "figures/perplexity.pdf" in names and "figures/blocks.svg" in names
    assert "calibration/wanda.npy" in names and "tables/perplexity.tex" in names


def test_export_all_on_the_sweep_page_offers_the_sweeps_bundle(app_env, store, monkeypatch):
    """AppTest: the Sweep page's Export all bundles the sweep's complete runs (kaleido stood in for)."""
    pytest.importorskip("streamlit")
    from test_app import goto, new_app, no_exceptions

    from wanda_engine.outputs import export

    write_sweep(app_env.runs, store)
    monkeypatch.setattr(export, "export_figure", lambda fig, fmt, **kw: fake_render(fig, fmt))
    monkeypatch.setattr(export, "start_export_server", lambda: None)
    at = goto(new_app(), "sweep")
    no_exceptions(at)
    at.button(key="sw_all_all").click().run()
    no_exceptions(at)
    assert any(b.proto.label.startswith("Download bundle") for b in at.get("download_button"))
    spec, data, failed, *_ = at.session_state["_sw_all_bundle"]
    assert spec[0] == "sw" and failed == ()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
    assert "REPRODUCE.md" in names and "figures/sweep_sparsity.pdf" in names and "tables/sweep.md" in names


def test_the_export_command_names_every_preset_and_refuses_a_bad_one_before_rendering(store, tmp_path):
    import argparse

    from wanda_engine.cli.export import add_export_parser, run_export
    from wanda_engine.outputs.figures.paper import PRESETS, UNITS

    parser = argparse.ArgumentParser()
    export_parser = add_export_parser(parser.add_subparsers(dest="command"))
    help_text = export_parser.format_help()
    assert all(name in help_text for name in [*PRESETS, *UNITS])
    for bad, words in ((["--preset", "A4"], "print preset"), (["--preset", "custom", "--width", "3", "--unit", "mm"],
                                                               "print unit"),
                       (["--sweep", "sw"], "not both")):
        with pytest.raises(bundles.ConfigError, match=words):
            run_export(parser.parse_args(["export", str(store / "wanda"), *bad, "--out", str(tmp_path / "b.zip")]))
    assert not (tmp_path / "b.zip").exists()
