"""Issue 19 item 10: every time the app promises is computed from this machine's past runs (the run store's
timings), never written in advance; an evaluation reports its windows, so the dense evaluation has progress and a
time left; the Compare says its total; the Sweep page estimates from what a Compare just measured and counts no
calibration tokens for runs that read none."""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.core.events import StageStarted, WindowsEvaluated
from wanda_engine.store.run_record import RunRecord
from wanda_engine.sweep import cost
from wanda_engine.sweep import grid as sw

REPO = Path(__file__).resolve().parents[1]
EVAL = EvalConfig(seqlen=512, windows=10)


def past_run(method: str, prune_s: float, eval_s: float = 20.0, calibrate: bool = True, name: str = "",
             nsamples: int = 16, model: str = "default", **timings: float) -> RunRecord:
    """A complete run as the app's worker records one: each stage's seconds under its timing key."""
    request = RunRequest(model=model, prune=PruneConfig(method=method, nsamples=nsamples, seqlen=256,
                                                        calibrate=calibrate), eval=EVAL)
    stages = {"load_s": 0.5, "data_s": 1.5, "copy_s": 1.0, "eval_dense_s": 0.01, "prune_s": prune_s,
              "eval_s": eval_s, **timings}
    return RunRecord.from_json({"status": "complete", "name": name or f"{method}-{prune_s}", "created": "2026-12-06T10:00:00",
                                "config": request.to_dict(), "timings": stages, "ppl": 40.0, "ppl_dense": 22.0})


def the_compares_pair(wanda_prune: float = 40.0, magnitude_prune: float = 8.0) -> list[RunRecord]:
    """What one Compare at the app's defaults leaves in the store: magnitude from the weights alone, then Wanda."""
    return [past_run("magnitude", magnitude_prune, calibrate=False, name="mag", eval_dense_s=30.0),
            past_run("wanda", wanda_prune, name="wan")]


# --- the estimate itself -------------------------------------------------------------------------------------
def test_a_runs_cost_by_hand_from_the_runs_alike():
    past = the_compares_pair() + [past_run("wanda", 50.0, eval_s=22.0, name="wan2"),
                                  past_run("wanda", 10.0, name="other-model", model="elsewhere")]
    wanda = cost.run_cost(RunRequest(prune=PruneConfig(nsamples=32, seqlen=256), eval=EVAL), past)
    # pruning scales with the calibration tokens (32 × 256 is twice 16 × 256); the other model's run is no guide
    assert sorted(wanda.prune) == [80.0, 100.0] and sorted(wanda.evaluation) == [20.0, 20.0, 22.0]
    assert wanda.setup == {"load": 0.5, "calibration-data": 1.5, "copy": 1.0} and wanda.dense_cached
    assert wanda.seconds() == pytest.approx(3.0 + 100.0 + 20.0)  # the medians (upper of two): 100 s, 20 s
    assert wanda.span() == pytest.approx((3.0 + 80.0 + 20.0, 3.0 + 100.0 + 22.0))
    # magnitude from the weights alone is costed from the Compare's own magnitude run, tokens or not
    weights = cost.run_cost(RunRequest(prune=PruneConfig(method="magnitude", calibrate=False), eval=EVAL), past)
    assert weights.prune == (8.0,) and cost.calibration_tokens(weights.request.prune) == 0
    # an evaluation at other settings has no time here, and the dense model is not cached for it
    other = cost.run_cost(RunRequest(prune=PruneConfig(), eval=EvalConfig(seqlen=256, windows=4)), past)
    assert not other.known and other.seconds() is None and not other.dense_cached


def test_the_compare_and_its_dense_evaluation_once():
    pair = [RunRequest(prune=PruneConfig(method="magnitude", calibrate=False), eval=EVAL),
            RunRequest(prune=PruneConfig(nsamples=16, seqlen=256), eval=EVAL)]
    assert cost.batch_seconds(pair, []) is None
    assert cost.batch_seconds(pair, the_compares_pair()) == pytest.approx((3.0 + 8.0 + 20.0) + (3.0 + 40.0 + 20.0))
    # evaluated at new settings but both kinds measured before: the dense model's evaluation counts once
    new_eval = EvalConfig(seqlen=256, windows=4)
    past = [past_run("magnitude", 8.0, calibrate=False, eval_s=5.0), past_run("wanda", 40.0, eval_s=5.0)]
    past = [RunRecord.from_json({**r.to_json(), "config": {**r.request.to_dict(), "eval": new_eval.to_dict()}})
            for r in past]
    renamed = [RunRequest(prune=r.prune, eval=new_eval) for r in pair]
    assert cost.batch_seconds(renamed, []) is None
    assert cost.run_cost(renamed[0], past).dense_cached


def test_the_sweep_is_estimated_right_after_a_compare():
    """The issue's case: a Compare at the Prune page's settings, then the Sweep page's default grid (magnitude and
    Wanda at 50, 60 and 70%): every point is costed from the pair, no point 'unknown'."""
    plan = sw.plan_sweep(sw.SweepConfig(methods=["magnitude", "wanda"], sparsities=[0.5, 0.6, 0.7],
                                        base=PruneConfig(nsamples=16, seqlen=256), eval=EVAL))
    before = cost.estimate_work(plan, [])
    assert before["seconds"] is None and sorted(before["unmeasured"]) == [
        f"{method} {p}% (16 × 256 calibration tokens, 10 × 512 evaluation tokens)"
        for method in ("magnitude", "wanda") for p in (50, 60, 70)]
    after = cost.estimate_work(plan, the_compares_pair())
    # a sweep's magnitude points calibrate (their records compare them with Wanda on the same activations): they
    # cost the two passes the Compare's Wanda run measured; the dense evaluation is cached
    assert after["seconds"] == pytest.approx(6 * (3.0 + 40.0 + 20.0)) and after["unmeasured"] == []
    assert after["calibration_tokens"] == 6 * 16 * 256 and after["calibrating_runs"] == 6


def test_runs_that_read_no_calibration_count_no_tokens():
    plan = sw.plan_sweep(sw.SweepConfig(methods=["magnitude"], sparsities=[0.5],
                                        base=PruneConfig(method="magnitude", nsamples=16, seqlen=256, calibrate=False),
                                        eval=EVAL))
    work = cost.estimate_work(plan, the_compares_pair())
    assert work["calibration_tokens"] == 0 and work["calibrating_runs"] == 0 and work["runs"] == 1
    assert work["seconds"] == pytest.approx(3.0 + 8.0 + 20.0)


def test_the_sentences_say_the_numbers_or_that_nothing_is_measured():
    request = RunRequest(prune=PruneConfig(nsamples=16, seqlen=256), eval=EVAL)
    none = cost.run_sentence(cost.run_cost(request, []))
    assert none.startswith("No run like wanda 50% (16 × 256 calibration tokens, 10 × 512 evaluation tokens) has "
                           "finished on this machine yet") and not re.search(r"\d+ s\b|min", none)
    some = cost.run_sentence(cost.run_cost(request, the_compares_pair() + [past_run("wanda", 50.0, name="w2")]))
    assert "takes about 1 min 13 s (1 min 3 s to 1 min 13 s, from the 2 runs pruned and 3 runs evaluated alike " \
           "here)" in some, some
    first = cost.run_sentence(cost.run_cost(RunRequest(prune=PruneConfig(), eval=EvalConfig(seqlen=512, windows=4)),
                                            [past_run("wanda", 40.0, name="w")]))
    assert "No run like" in first  # no evaluation at these settings measured: no promise
    assert cost.duration_text(48.4) == "48 s" and cost.duration_text(72) == "1 min 12 s"
    assert cost.duration_text(600) == "10 min"
    pair = [RunRequest(prune=PruneConfig(method="magnitude", calibrate=False), eval=EVAL),
            RunRequest(prune=PruneConfig(nsamples=16, seqlen=256), eval=EVAL)]
    said = cost.batch_sentence(pair, the_compares_pair(), "The Compare")
    assert said == ("The Compare (magnitude 50% from the weights alone, then wanda 50%) takes about 1 min 34 s on "
                    "this machine, from its past runs alike.")


def test_no_time_is_written_into_the_apps_sentences():
    """The sentences that promised a time ('under a minute on a 2-core laptop CPU', 'about a minute on the embedded
    model') are gone; the app computes what it says."""
    sources = [p.read_text() for p in [*(REPO / "pages").glob("*.py"), *(REPO / "app").glob("*.py")]]
    for phrase in ("a run takes under a minute", "about a minute on", "2-core laptop"):
        assert not any(phrase in text for text in sources), phrase


# --- an evaluation's progress ------------------------------------------------------------------------------
def test_perplexity_reports_its_windows_batch_by_batch():
    from conftest import tiny_model

    from wanda_engine.evaluation.perplexity import perplexity

    model = tiny_model("llama")
    tokens = torch.randint(0, 512, (1, 5 * 32 + 7), generator=torch.Generator().manual_seed(0))
    seen: list[tuple[int, int]] = []
    result = perplexity(model, tokens, 32, "random", windows=5, batch_size=2, on_windows=lambda d, n: seen.append((d, n)))
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)] and result.windows == 5
    assert perplexity(model, tokens, 32, "random", windows=5, batch_size=2).ppl == result.ppl


def test_a_run_reports_the_dense_evaluations_windows_until_it_is_cached(tiny_model_dir, tmp_path, monkeypatch):
    from wanda_engine.inputs.models import load_model
    from wanda_engine.runner.execute import execute_run

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    loaded = load_model(str(tiny_model_dir))
    request = RunRequest(model=str(tiny_model_dir), prune=PruneConfig(nsamples=2, seqlen=32),
                         eval=EvalConfig(seqlen=32, windows=6, batch_size=4))

    def windows_by_stage(run_dir: Path) -> dict[str, list[tuple[int, int]]]:
        stage, seen = None, {}
        def on_event(event):
            nonlocal stage
            if isinstance(event, StageStarted):
                stage = event.stage
            elif isinstance(event, WindowsEvaluated):
                seen.setdefault(stage, []).append((event.done, event.windows))
        execute_run(request, run_dir=run_dir, on_event=on_event, loaded=loaded)
        return seen

    assert windows_by_stage(tmp_path / "first") == {"eval-dense": [(0, 6), (4, 6), (6, 6)],
                                                    "eval": [(0, 6), (4, 6), (6, 6)]}
    assert windows_by_stage(tmp_path / "second") == {"eval": [(0, 6), (4, 6), (6, 6)]}  # the dense result is cached


def _write_run(root: Path, record: RunRecord) -> None:
    path = root / record.name
    path.mkdir(parents=True)
    (path / "records.json").write_text("[]")
    (path / "run.json").write_text(json.dumps(record.to_json()))


def test_the_runner_gives_the_dense_evaluation_progress_and_a_time_left(tmp_path):
    """A first run at new settings: while the dense model is evaluated the job shows its windows and the stage's
    time left from its own pace; with this machine's past runs alike in the store, the run's whole time left."""
    from app.execution import InProcess
    from app.jobs import JobRunner
    from app.progress import time_left_text
    from wanda_engine.store.run_store import RunStore

    reached, go = threading.Event(), threading.Event()

    def execute(request, on_event, **kw):
        on_event(StageStarted(0.0, "eval-dense", "austen:prideprejudice"))
        time.sleep(0.4)
        on_event(WindowsEvaluated(0.4, 2, 10))
        reached.set()
        assert go.wait(30)
        return SimpleNamespace(name=request.name)

    store = tmp_path / "runs"
    runner = JobRunner(InProcess(lambda request: SimpleNamespace(label="fake"), execute),
                       store_factory=lambda: RunStore(store))
    try:
        request = RunRequest(prune=PruneConfig(nsamples=16, seqlen=256), eval=EVAL, name="first")
        runner.submit(request)
        assert reached.wait(30)
        job = runner.current()
        assert (job.stage_done, job.stage_total) == (2, 10)
        assert 1.2 < job.stage_left_s < 2.5, job  # 0.4 s for 2 of 10 windows: about 1.6 s for the other 8
        assert job.time_left_s is None and time_left_text(job)[0] == "Time left in this stage"
        go.set()
        assert runner.wait_idle(30)
        # this machine's past runs alike (another evaluation setting: the dense model is not cached for this one)
        store.mkdir(exist_ok=True)
        for record in the_compares_pair():
            _write_run(store, RunRecord.from_json({**record.to_json(), "config": {
                **record.request.to_dict(), "eval": EvalConfig(seqlen=512, windows=10, batch_size=8).to_dict()}}))
        _write_run(store, past_run("wanda", 40.0, name="wanda-here"))
        reached.clear()
        go.clear()
        runner.submit(RunRequest(prune=PruneConfig(nsamples=16, seqlen=256), eval=EVAL, name="second"))
        assert reached.wait(30)
        job = runner.current()
        # the dense evaluation's own time left, then pruning and the evaluation as the past run took them
        assert job.expected_s == pytest.approx(3.0 + 40.0 + 20.0)
        assert job.time_left_s == pytest.approx(job.stage_left_s + 40.0 + 20.0, abs=0.3), job
        assert not job.time_left_partial
    finally:
        go.set()
        runner.close()


# --- the pages say it --------------------------------------------------------------------------------------
def _captions(at) -> str:
    return " ".join(c.value for c in at.caption) + " " + " ".join(i.value for i in at.info)


def test_the_pages_say_what_runs_alike_took_here_or_that_none_has(app_env):
    from test_app import goto, new_app, no_exceptions

    at = new_app()
    no_exceptions(at)
    said = _captions(at)
    assert "No run like wanda 50% (16 × 256 calibration tokens, 10 × 512 evaluation tokens) has finished on this " \
           "machine yet" in said
    assert "The Compare (magnitude 50% from the weights alone, then wanda 50%) has no time on this machine yet: " \
           "magnitude 50% and wanda 50% at these settings not measured here." in said
    assert "Estimated time" in [m.label for m in goto(at, "sweep").metric]
    assert next(m.value for m in at.metric if m.label == "Estimated time") == "unknown"
    at = goto(at, "explain")  # no comparison yet: the page offers the Compare and says what it is known to take
    no_exceptions(at)
    assert "The Compare (magnitude 50% from the weights alone, then wanda 50%) has no time on this machine yet" \
        in _captions(at)

    for record in the_compares_pair():  # a Compare at the defaults, as the worker records it
        _write_run(app_env.runs, record)
    at = new_app()
    said = _captions(at)
    assert "On this machine a run like wanda 50% (16 × 256 calibration tokens, 10 × 512 evaluation tokens) takes " \
           "about 1 min 3 s (from the 1 run pruned and 2 runs evaluated alike here)" in said, said
    assert "The Compare (magnitude 50% from the weights alone, then wanda 50%) takes about 1 min 34 s on this " \
           "machine" in said, said
    at = goto(at, "sweep")
    no_exceptions(at)
    assert next(m.value for m in at.metric if m.label == "Estimated time") == "~6:18"  # 6 points × 63 s
    tokens = next(m for m in at.metric if m.label == "Calibration tokens")
    assert tokens.value == f"{6 * 16 * 256:,}" and "every point calibrates" in tokens.proto.help
