"""Sweeps: a grid planned, run on one loaded tiny model, recorded run by run with a manifest, and drawn."""
from __future__ import annotations

import json
import threading
from dataclasses import replace

import pytest
from test_app import charts, goto, new_app, no_exceptions, use_tiny_model, wait_jobs

from wanda_engine.outputs import figures as F
from wanda_engine.sweep import grid as sw
from wanda_engine.cli.main import main
from wanda_engine.config import EvalConfig, PruneConfig, SpeedConfig
from wanda_engine.core.errors import ConfigError, EngineError
from wanda_engine.outputs.figures.catalog import sweep_figures
from wanda_engine.store.run_record import RunRecord
from wanda_engine.store.run_store import RunStore
from wanda_engine.sweep.cost import estimate_work

FAST_BASE = PruneConfig(nsamples=4, seqlen=32, device="cpu")
FAST_EVAL = EvalConfig(seqlen=32, windows=2)


@pytest.fixture
def env(runs_dir, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    return RunStore(runs_dir), tiny_model_dir


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir):
    from wanda_engine.inputs.models import load_model

    return load_model(str(tiny_model_dir))


def _cfg(model, **kw) -> sw.SweepConfig:
    args = dict(methods=["magnitude", "wanda"], sparsities=[0.5, 0.6], base=FAST_BASE, eval=FAST_EVAL, model=str(model))
    return sw.SweepConfig(**{**args, **kw})


def test_two_by_two_sweep_records_runs_manifest_and_figure(env, monkeypatch):
    store, model = env
    import wanda_engine.inputs.models as models
    import wanda_engine.runner.execute as runner

    loads = []
    real_load = models.load_model
    for module in (models, runner):  # wherever a sweep could load a model
        monkeypatch.setattr(module, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    seen = []
    result = sw.run_sweep(_cfg(model, name="grid"), store=store, on_point=seen.append)
    assert len(loads) == 1  # the model is loaded once for the whole grid
    assert result.status == "complete" and [p["index"] for p in seen] == [0, 1, 2, 3]
    runs = result.runs(store)
    assert len(runs) == 4 and all(r.complete and r.records() for r in runs)
    got = sorted((r.record.request.prune.method, r.record.request.prune.sparsity) for r in runs)
    assert got == [("magnitude", 0.5), ("magnitude", 0.6), ("wanda", 0.5), ("wanda", 0.6)]
    assert all(r.name.startswith("grid-") for r in runs)
    assert all(r.record.sparsity == pytest.approx(r.record.request.prune.sparsity, abs=0.01) for r in runs)

    manifest = json.loads((store.root / ".sweeps" / "grid.json").read_text())
    assert manifest["status"] == "complete" and [p["run"] for p in manifest["points"]] == [p["run"] for p in result.points]
    assert [s.name for s in sw.list_sweeps(store)] == ["grid"]
    assert all(r.name != ".sweeps" for r in store.list())  # the manifest folder is never listed as a run
    loaded = sw.load_sweep(store, "grid")
    assert loaded.status == "complete" and [p["ppl"] for p in loaded.points()] == [p["ppl"] for p in result.points]

    records = [r.record for r in runs]
    figs = sweep_figures(records)
    assert list(figs) == ["sparsity"]  # one calibration size: no calibration-size figure
    fig = figs["sparsity"]
    lines = {t.name: t for t in fig.data}
    assert set(lines) == {"magnitude", "wanda", f"dense ({records[0].ppl_dense:.2f})"}
    for method in ("magnitude", "wanda"):
        mine = sorted((r.request.prune.sparsity, r.ppl) for r in records if r.request.prune.method == method)
        assert list(lines[method].x) == [s for s, _ in mine] and list(lines[method].y) == [p for _, p in mine]
    dense = next(t for n, t in lines.items() if n.startswith("dense"))
    assert set(dense.y) == {records[0].ppl_dense} and dense.line.dash == "dash"
    subtitle = fig.layout.title.subtitle.text
    assert "2 windows × 32 tokens" in subtitle and "calibration 4 × 32 tokens" in subtitle and "seed\u00a00" in subtitle
    with pytest.raises(EngineError, match="already exists"):
        sw.run_sweep(_cfg(model, name="grid"), store=store)


def test_plan_dedupes_nm_over_sparsities_and_skips_invalid_combinations():
    cfg = sw.SweepConfig(methods=["magnitude", "wanda", "wanda-variant"], sparsities=[0.7, 0.5, 0.6, 0.5],
                         patterns=["unstructured", "2:4", "2:4"], layerwise=["uniform", "owl"], base=FAST_BASE,
                         name="s")
    plan = sw.plan_sweep(cfg)
    assert cfg.sparsities == (0.5, 0.6, 0.7) and cfg.patterns == ("unstructured", "2:4")
    nm = [r.prune for r in plan if r.prune.pattern == "2:4"]
    assert sorted(p.method for p in nm) == ["magnitude", "wanda"]  # once each, whatever the sparsities
    assert all(p.sparsity == 0.5 and p.layerwise == "uniform" and not p.variant for p in nm)
    assert len(plan) == 3 * 3 * 2 + 2
    reasons = dict(plan.skipped)
    assert "variant" in reasons["wanda-variant 2:4"] and "owl" in reasons["owl-wanda 2:4"]
    names = [r.name for r in plan]
    assert len(set(names)) == len(names) and names[0] == "s-01-magnitude-unstructured-0.50"
    # a calibration-size axis multiplies the grid and names its points
    plan_n = sw.plan_sweep(sw.SweepConfig(methods=["wanda"], sparsities=[0.5], nsamples=[8, 32], base=FAST_BASE, name="n"))
    assert [r.prune.nsamples for r in plan_n] == [8, 32] and plan_n.labels == ["wanda 50% · n=8", "wanda 50% · n=32"]
    assert plan_n.requests[1].name.endswith("-n32")
    work = estimate_work(plan_n)
    assert work["runs"] == 2 and work["calibration_tokens"] == 40 * 32 and work["seconds"] is None


@pytest.mark.parametrize("kw, field", [
    ({"methods": []}, "methods"), ({"methods": ["pruneit"]}, "methods"), ({"methods": ["magnitude-variant"]}, "methods"),
    ({"sparsities": [0.5, 1.2]}, "sparsities"), ({"sparsities": []}, "sparsities"), ({"patterns": ["4:2"]}, "patterns"),
    ({"nsamples": [0]}, "nsamples"), ({"nsamples": []}, "nsamples"), ({"layerwise": ["blockwise"]}, "layerwise"),
    ({"dtype": "int3"}, "dtype"), ({"name": "../x"}, "name"), ({"model": ""}, "model"),
])
def test_bad_sweep_config_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        sw.SweepConfig(**kw)


def test_a_failed_point_is_recorded_and_the_sweep_goes_on_until_cancelled(env, tiny_loaded, monkeypatch):
    store, model = env
    import wanda_engine.runner.execute as runner

    real = runner.execute_run
    cancel = threading.Event()

    def flaky(request, **kw):
        if request.prune.method == "magnitude" and request.prune.sparsity == 0.5:
            raise RuntimeError("boom")
        return real(request, **kw)

    monkeypatch.setattr(runner, "execute_run", flaky)
    result = sw.run_sweep(_cfg(model, name="flaky", sparsities=[0.5]), store=store, loaded=tiny_loaded)
    assert [p["status"] for p in result.points] == ["failed", "complete"] and result.status == "failed"
    assert result.points[0]["error"] == "RuntimeError: boom"
    assert sw.load_sweep(store, "flaky").status == "failed"

    stop_after_first = lambda point: cancel.set()  # noqa: E731
    result = sw.run_sweep(_cfg(model, name="stop", methods=["wanda"]), store=store, loaded=tiny_loaded,
                          cancel=cancel, on_point=stop_after_first)
    assert [p["status"] for p in result.points] == ["complete", "planned"] and result.status == "cancelled"
    # bad input fails before any run or manifest is written
    with pytest.raises(ConfigError, match="does not divide"):
        sw.run_sweep(_cfg(model, name="bad", patterns=["3:7"]), store=store, loaded=tiny_loaded)
    assert not (store.root / ".sweeps" / "bad.json").exists() and not list(store.root.glob("bad-*"))


def test_perplexity_vs_nsamples_one_line_per_method_and_dense():
    def meta(name, method, n, ppl):
        return RunRecord.from_json({"name": name, "status": "complete", "ppl": ppl, "ppl_dense": 10.0,
                "config": {"method": method, "variant": False, "pattern": "unstructured", "target_sparsity": 0.5,
                           "sparsity": 0.5, "nsamples": n, "seqlen": 128, "seed": 0},
                "calibration": {"label": "austen:emma"},
                "eval": {"dataset": "austen:prideprejudice", "seqlen": 64, "windows": 2, "tokens": 128}})

    runs = [meta("a", "wanda", 32, 14.0), meta("b", "wanda", 8, 15.0), meta("c", "sparsegpt", 8, 30.0),
            meta("d", "sparsegpt", 32, 16.0)]
    fig = F.perplexity_vs_nsamples(runs)
    lines = {t.name: t for t in fig.data}
    assert list(lines["wanda 50%"].x) == [8, 32] and list(lines["wanda 50%"].y) == [15.0, 14.0]
    assert list(lines["sparsegpt 50%"].y) == [30.0, 16.0] and "dense (10.00)" in lines
    assert fig.layout.xaxis.type == "log" and "Emma (Austen)" in fig.layout.title.subtitle.text.replace("<br>", " ")
    # versus sparsity with several calibration sizes: one line per method and size, never mixed
    names = {t.name for t in F.perplexity_vs_sparsity(runs).data}
    assert {"wanda (n=8)", "wanda (n=32)", "sparsegpt (n=8)"} <= names
    assert len(F.perplexity_vs_nsamples([]).data) == 0
    owl = replace(runs[0], request=replace(runs[0].request, prune=replace(runs[0].request.prune, layerwise="owl")))
    assert owl.label() == "owl-wanda 50%" and "owl-wanda 50%" in {t.name for t in F.perplexity_vs_nsamples([owl]).data}


def test_cli_sweep_end_to_end_with_figures(env, capsys, tmp_path):
    store, model = env
    figure = tmp_path / "figs" / "sweep.html"
    rc = main(["sweep", "--model", str(model), "--methods", "magnitude,wanda", "--sparsities", "0.5",
               "--nsamples", "4,8", "--seqlen", "32", "--eval-windows", "2", "--quiet", "--name", "cli",
               "--runs-dir", str(store.root), "--figure", str(figure)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert [p["status"] for p in lines[:-1]] == ["complete"] * 4 and all(p["ppl"] > 0 for p in lines[:-1])
    summary = lines[-1]
    assert summary["sweep"] == "cli" and summary["complete"] == 4 and summary["status"] == "complete"
    assert summary["figures"] == [str(figure), str(figure.with_name("sweep-nsamples.html"))]
    html = figure.read_text()
    assert "plotly" in html.lower() and "Perplexity versus sparsity" in html
    assert "calibration samples" in figure.with_name("sweep-nsamples.html").read_text()

    for bad, needle in ((["--sparsities", "1.5"], "sparsities"), (["--methods", ""], "methods"),
                        (["--figure", str(tmp_path / "x.jpg")], "--figure"), (["--nsamples", "4,x"], "nsamples")):
        rc = main(["sweep", "--model", str(model), "--runs-dir", str(store.root), "--quiet", "--name", "bad", *bad])
        _, err = capsys.readouterr()
        assert rc == 1 and err.strip().startswith("error: ") and needle in err, (bad, err)
    assert not (store.root / ".sweeps" / "bad.json").exists()


@pytest.mark.slow  # AppTest runs jobs in the worker process
def test_sweep_page_queues_a_batch_and_draws_its_figure(app_env):
    at = use_tiny_model(new_app(), app_env.model)
    goto(at, "sweep")
    no_exceptions(at)
    at.multiselect(key="sw_methods").set_value(["magnitude", "wanda"])
    at.text_input(key="sw_sparsities").set_value("0.5").run()
    assert at.metric[0].value == "2"  # runs planned, shown before queuing
    at.multiselect(key="sw_patterns").set_value(["unstructured", "2:4"])
    at.text_input(key="sw_name").set_value("page").run()
    assert at.metric[0].value == "4"
    at.multiselect(key="sw_patterns").set_value(["unstructured"]).run()
    at.button(key="b_sweep").click().run()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    from app import ui

    batches = {j.batch for j in ui.job_runner().queued() + [ui.job_runner().current()] if j}
    assert batches <= {"page"}
    at = wait_jobs(at)
    no_exceptions(at)
    sweep = sw.load_sweep(RunStore(app_env.runs), "page")
    assert sweep.status == "complete" and len(sweep.complete_runs()) == 2
    figs = charts(at)
    assert any("Perplexity versus sparsity" in str(f["layout"]["title"]) for f in figs)
    line = next(t for f in figs for t in f["data"] if t.get("name") == "wanda")
    assert line["y"] == [r.record.ppl for r in sweep.complete_runs() if r.record.request.prune.method == "wanda"]
    # a bad list is one sentence and nothing is queued
    at.text_input(key="sw_sparsities").set_value("lots").run()
    assert any("sparsity 'lots' is not a number" in w.value for w in at.warning) and at.button(key="b_sweep").disabled


# ---------------------------------------------------------------- the structure removers' ratio axis

def test_the_removers_take_their_ratios_and_the_masks_their_sparsities():
    cfg = sw.SweepConfig(methods=["flap", "block-influence", "wanda"], sparsities=[0.5], ratios=[0.3, 0.1],
                         bias_compensation=True, speed=SpeedConfig(decode_tokens=4, repeats=3), base=FAST_BASE)
    plan = sw.plan_sweep(cfg)
    points = sorted((r.prune.method, r.prune.sparsity) for r in plan)
    assert points == [("block-influence", 0.1), ("block-influence", 0.3), ("flap", 0.1), ("flap", 0.3), ("wanda", 0.5)]
    by_method = {r.prune.method: r for r in plan}
    assert by_method["flap"].prune.bias_compensation and not by_method["block-influence"].prune.bias_compensation
    assert all(r.speed == SpeedConfig(4, 3) for r in plan)  # every point: the masks' ~1.0× belongs on the frontier
    assert cfg.to_dict()["ratios"] == [0.1, 0.3] and cfg.to_dict()["speed"] == {"decode_tokens": 4, "repeats": 3}
    # without ratios the removers take the sparsities, as before the axis existed
    assert sorted(r.prune.sparsity for r in sw.plan_sweep(sw.SweepConfig(methods=["flap"], sparsities=[0.2, 0.4]))) \
        == [0.2, 0.4]


@pytest.mark.parametrize("kw, needle", [(dict(ratios=[1.2]), "sweep ratios"), (dict(ratios=[0.0]), "sweep ratios"),
                                        (dict(allocation="both"), "allocation"),
                                        (dict(target="per-block", allocation="global"), "per-block"),
                                        (dict(speed={"repeats": 3}), "SpeedConfig")])
def test_bad_structure_settings_of_a_sweep_are_one_sentence(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        sw.SweepConfig(methods=["flap"], **kw)


def test_the_cli_measures_speed_when_it_sweeps_a_remover(tmp_path):
    from wanda_engine.cli.main import _sweep_config, build_parser

    def config(*args: str) -> sw.SweepConfig:
        return _sweep_config(build_parser().parse_args(["sweep", *args]))

    assert config("--methods", "flap,wanda", "--ratios", "0.1,0.2").speed == SpeedConfig()
    assert config("--methods", "magnitude,wanda").speed is None
    assert config("--methods", "flap", "--no-speed").speed is None
    assert config("--methods", "wanda", "--speed", "--speed-repeats", "3").speed == SpeedConfig(repeats=3)


def test_a_ratio_sweep_draws_the_frontier_in_one_command(env, capsys, tmp_path):
    store, model = env
    figure = tmp_path / "figs" / "sweep.html"
    rc = main(["sweep", "--model", str(model), "--methods", "flap,wanda-sp,wanda", "--ratios", "0.2,0.4",
               "--sparsities", "0.5", "--bias-compensation", "--nsamples", "4", "--seqlen", "32", "--eval-windows", "2",
               "--speed-decode-tokens", "2", "--speed-repeats", "1", "--quiet", "--name", "front",
               "--runs-dir", str(store.root), "--figure", str(figure)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["complete"] == 5 and summary["figures"] == [
        str(figure), str(figure.with_name("sweep-frontier.html")), str(figure.with_name("sweep-frontier_params.html"))]
    runs = {r.record.label(): r.record for r in sw.load_sweep(store, "front").complete_runs()}
    assert set(runs) == {"flap+bias 20%", "flap+bias 40%", "wanda-sp+bias 20%", "wanda-sp+bias 40%", "wanda 50%"}
    assert all(r.speed is not None and r.speed.dense.pid == r.speed.pruned.pid for r in runs.values())
    assert runs["flap+bias 40%"].structure.removed_fraction > runs["flap+bias 20%"].structure.removed_fraction
    html = figure.with_name("sweep-frontier.html").read_text()
    assert "Perplexity against measured prefill speed-up" in html
    fig = sweep_figures(list(runs.values()))["frontier_params"]
    line = next(t for t in fig.data if t.name == "flap+bias")
    assert list(line.x) == [pytest.approx(1 - runs[f"flap+bias {p}%"].structure.removed_fraction) for p in (20, 40)]
