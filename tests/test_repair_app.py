"""The app's side of repairs (issue 14): the figures drawn from repair records, repair jobs in the shared job
runner (queued behind a prune, cancelled between steps, progress from their events), and the Repair page under
AppTest on a tiny model."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.core.errors import PruneCancelled
from wanda_engine.outputs.figures import figure_data, repair_bars, repair_loss, repair_summary
from wanda_engine.outputs.figures.repair import NO_REFERENCE, NOT_MEASURED
from wanda_engine.store.run_record import CalibrationInfo, EvalInfo, ModelInfo, RunRecord
from wanda_engine.repair.config import RepairConfig, RepairRequest
from wanda_engine.repair.events import RepairEval, RepairStep
from wanda_engine.repair.record import EVALUATED, RepairRecord

WINDOWS = EvalInfo("austen:prideprejudice", 32, 2, 64)


def pruned_record(name: str = "pruned", ppl: float = 40.0, dense: float = 20.0, weight_update: str = "none",
                  method: str = "wanda") -> RunRecord:
    request = RunRequest(model="tiny", prune=PruneConfig(method=method, weight_update=weight_update, nsamples=4,
                                                         seqlen=32), eval=EvalConfig(seqlen=32, windows=2))
    return RunRecord(name=name, status="complete", created="2026-12-02T00:00:00", request=request,
                     model=ModelInfo("tiny", "tiny"), calibration=CalibrationInfo("default", "austen:emma", 4, 32, 0),
                     eval=WINDOWS, ppl=ppl, ppl_dense=dense, sparsity=0.5)


def repair_record(method: str = "lora", ppl_after: float = 30.0, dense: bool = False, evaluate: str = "merged",
                  steps: int = 3, created: str = "2026-12-02T01:00:00", eval_info: EvalInfo = WINDOWS) -> RepairRecord:
    config = RepairConfig(method=method, steps=steps, batch_size=2, seqlen=16, eval_every=1, dense=dense,
                          evaluate=evaluate)
    tokens = config.batch_size * config.seqlen
    evals = tuple((s, s * tokens, 40.0 - (40.0 - ppl_after) * s / steps) for s in range(steps + 1))
    losses = tuple((s, 5.0 - 0.3 * s, 1e-4, 0.5 * s) for s in range(1, steps + 1))
    return RepairRecord(name=config.stem(), status="complete", created=created, run="pruned",
                        request=RepairRequest(run="/runs/pruned", config=config),
                        start="dense model" if dense else "re-created from the record",
                        evaluated=EVALUATED["finetune" if method == "finetune" else evaluate],
                        mask_sha256_before="a", mask_sha256_after="b" if dense else "a", sparsity_before=0.5,
                        sparsity_after=0.0 if dense else 0.5, losses=losses, evals=evals, eval=eval_info,
                        ppl_before=40.0, ppl_after=ppl_after, train={"text": "austen:emma"})


def titles(fig) -> str:
    """The title and subtitle as read (layout wraps them with '<br>')."""
    title = fig.layout.title
    return f"{title.text} {title.subtitle.text if title.subtitle else ''}".replace("<br>", " ")


def bar_values(fig) -> dict[str, float | None]:
    bars = next(t for t in fig.data if t.type == "bar")
    return dict(zip(bars.y, bars.x))  # horizontal bars: the names down the side


def by_prefix(values: dict, prefix: str) -> list:
    return [v for k, v in values.items() if k.startswith(prefix)]


# --- figures --------------------------------------------------------------------------------------------------

def test_the_bars_show_each_records_perplexity_and_the_dense_reference():
    run, obs = pruned_record(), pruned_record("obs", ppl=33.0, weight_update="obs")
    lora, ft = repair_record("lora", 27.5), repair_record("finetune", 29.25)
    reference = repair_record("finetune", 18.0, dense=True)
    fig = repair_bars(run, [ft, lora, reference], obs)
    values = bar_values(fig)
    assert values["dense"] == run.ppl_dense and by_prefix(values, "pruned") == [run.ppl]
    assert by_prefix(values, "+weight update") == [obs.ppl]
    assert by_prefix(values, "+fine-tune") == [ft.ppl_after] and by_prefix(values, "+LoRA") == [lora.ppl_after]
    # each repair says its budget: the tokens it trained on
    lora_label = next(k for k in values if k.startswith("+LoRA"))
    assert f"{lora.tokens_seen:,} tokens" in lora_label and lora.tokens_seen == 3 * 2 * 16
    line = next(t for t in fig.data if t.type == "scatter")
    assert set(line.x) == {reference.ppl_after} and "dense fine-tuned" in line.name
    title = titles(fig)
    assert "50.00% sparsity" in title and WINDOWS.describe() in title and NO_REFERENCE not in title
    table = figure_data(fig)  # exports like every figure
    assert set(table["x"].dropna()) == {run.ppl_dense, run.ppl, obs.ppl, ft.ppl_after, lora.ppl_after,
                                        reference.ppl_after}


def test_missing_bars_and_a_missing_reference_are_said():
    run = pruned_record()
    fig = repair_bars(run, [repair_record("lora", 30.0)], None)
    values = bar_values(fig)
    assert by_prefix(values, "+weight update") == [None] and by_prefix(values, "+fine-tune") == [None]
    bars = next(t for t in fig.data if t.type == "bar")
    assert list(bars.text).count(NOT_MEASURED) == 2
    assert NO_REFERENCE in titles(fig)
    assert not [t for t in fig.data if t.type == "scatter"]
    assert NO_REFERENCE in repair_summary(run, [repair_record("lora", 30.0)], None)
    # SparseGPT updates its kept weights already: no '+weight update' bar, and no repair run: nothing to say
    sparsegpt = pruned_record(method="sparsegpt")
    assert not by_prefix(bar_values(repair_bars(sparsegpt, [], None)), "+weight update")
    assert repair_summary(sparsegpt, [], None) == ""


def test_only_complete_repairs_evaluated_on_the_runs_windows_are_drawn():
    run = pruned_record()
    elsewhere = repair_record("lora", 10.0, eval_info=EvalInfo("wikitext2", 32, 2, 64))
    cancelled = replace(repair_record("finetune", 12.0), status="cancelled")
    values = bar_values(repair_bars(run, [elsewhere, cancelled], None))
    assert 10.0 not in values.values() and 12.0 not in values.values()


def test_the_summary_computes_the_share_of_the_gap_closed():
    run, lora, reference = pruned_record(ppl=40.0, dense=20.0), repair_record("lora", 30.0), repair_record(
        "finetune", 15.0, dense=True)
    text = repair_summary(run, [lora, reference], None)
    share = (run.ppl - lora.ppl_after) / (run.ppl - run.ppl_dense)
    assert f"closes {share:.0%} of the gap" in text and "at exactly the pruned sparsity 50.00%" in text
    assert WINDOWS.describe() in text and f"{lora.tokens_seen:,} training tokens of Emma (Austen)" in text
    assert f"reaches {reference.ppl_after:.2f}" in text and NO_REFERENCE not in text
    below = repair_summary(run, [repair_record("finetune", 18.0)], None)
    assert "below the dense model" in below and "style" in below


def test_the_loss_figure_draws_every_step_and_evaluation():
    lora, ft = repair_record("lora", 30.0), repair_record("finetune", 29.0)
    fig = repair_loss(lora)
    loss, ppl = fig.data
    assert list(loss.x) == [s for s, *_ in lora.losses] and list(loss.y) == [v for _, v, *_ in lora.losses]
    assert list(ppl.x) == [s for s, *_ in lora.evals] and list(ppl.y) == [p for *_, p in lora.evals]
    title = titles(fig)
    assert "Emma (Austen)" in title and f"{lora.request.config.tokens():,} tokens" in title
    assert WINDOWS.describe() in title
    assert len(repair_loss([lora, ft]).data) == 4
    assert "no repair yet" in repair_loss([]).layout.annotations[0].text


# --- the job runner --------------------------------------------------------------------------------------------

def _prune_request() -> RunRequest:
    return RunRequest(model="tiny", prune=PruneConfig(nsamples=4, seqlen=32), eval=EvalConfig(seqlen=32, windows=1))


def _repair_request(tmp_path, steps: int = 4) -> RepairRequest:
    return RepairRequest(run=str(tmp_path / "pruned"), config=RepairConfig(steps=steps, batch_size=2, seqlen=16,
                                                                           eval_every=2))


def _fake_runner(repairer, execute=lambda request, **kw: SimpleNamespace(name=request.name)):
    from app.execution import InProcess
    from app.jobs import JobRunner

    return JobRunner(InProcess(lambda request: SimpleNamespace(label="fake"), execute, repairer),
                     store_factory=lambda: SimpleNamespace(new_name=lambda stem: f"r{time.monotonic_ns()}"))


def fake_repair(step_s: float = 0.0, pause: threading.Event | None = None, reached: threading.Event | None = None):
    """A stand-in for execute_repair: RepairSteps and RepairEvals, cancel honoured between steps."""
    def repair(request, on_event, cancel, loaded):
        config = request.config
        on_event(RepairEval(0.0, 0, 50.0))
        for step in range(1, config.steps + 1):
            if cancel.is_set():
                raise PruneCancelled(f"the repair was cancelled after {step - 1} of {config.steps} steps")
            time.sleep(step_s)
            on_event(RepairStep(0.1 * step, step, config.steps, 4.0 - 0.1 * step, 1e-4,
                                step * config.batch_size * config.seqlen))
            if step % config.eval_every == 0:
                on_event(RepairEval(0.1 * step, step, 50.0 - step))
            if reached is not None and step == 2:
                reached.set()
                pause.wait(10)
        return SimpleNamespace(status="complete", run="pruned", name=config.stem(), error=None)
    return repair


def test_a_repair_waits_behind_a_prune_and_runs_after_it(tmp_path):
    from app.messages import JobStatus

    release, pruning = threading.Event(), threading.Event()

    def slow_prune(request, **kw):
        pruning.set()
        assert release.wait(10)
        return SimpleNamespace(name=request.name)

    runner = _fake_runner(fake_repair(), slow_prune)
    try:
        prune = runner.submit(_prune_request(), owner="s")
        repair = runner.submit(_repair_request(tmp_path), owner="s")
        assert pruning.wait(10)
        queued = runner.job(repair.id)
        assert queued.status == JobStatus.QUEUED and queued.kind == "repair" and queued.run_name == "pruned"
        assert queued.label == "lora r8 · 4 steps of pruned"
        release.set()
        assert runner.wait_idle(10)
        first, second = runner.job(prune.id), runner.job(repair.id)
        assert first.status == second.status == JobStatus.COMPLETE, (first, second)
        assert second.started >= first.finished  # one job at a time: never beside the prune
        assert second.repair_name == "lora-r8-4steps" and second.run_name == "pruned"
    finally:
        release.set()
        runner.close()


def test_repair_events_fill_the_snapshot_and_its_time_left(tmp_path):
    pause, reached = threading.Event(), threading.Event()
    runner = _fake_runner(fake_repair(step_s=0.1, pause=pause, reached=reached))
    try:
        job = runner.submit(_repair_request(tmp_path, steps=6), owner="s")
        assert reached.wait(10)
        cur = runner.current()
        assert cur.id == job.id and (cur.step, cur.steps) == (2, 6)
        assert [s for s, *_ in cur.losses] == [1, 2] and cur.losses[-1][1] == pytest.approx(3.8)
        tokens = 2 * 2 * 16
        assert cur.tokens_seen == tokens and list(cur.evals) == [(0, 0, 50.0), (2, tokens, 48.0)]
        # one step ~0.1 s after the first: four steps ahead, about 0.4 s, the final evaluation not in it
        assert 0.1 < cur.time_left_s < 2.0 and cur.time_left_partial, cur
        pause.set()
        assert runner.wait_idle(10)
        done = runner.job(job.id)
        assert done.status == "complete" and done.step == 6 and len(done.evals) == 4
    finally:
        pause.set()
        runner.close()


def test_cancel_of_a_running_repair_marks_it_cancelled_and_the_next_job_runs(tmp_path):
    from app.messages import JobStatus

    pause, reached = threading.Event(), threading.Event()
    runner = _fake_runner(fake_repair(pause=pause, reached=reached))
    try:
        cancelled = runner.submit(_repair_request(tmp_path), owner="s")
        after = runner.submit(_prune_request(), owner="s")
        assert reached.wait(10)
        assert runner.cancel(cancelled.id)
        pause.set()
        assert runner.wait_idle(10)
        job = runner.job(cancelled.id)
        assert job.status == JobStatus.CANCELLED and "after 2 of 4 steps" in job.error, job
        assert runner.job(after.id).status == JobStatus.COMPLETE
    finally:
        pause.set()
        runner.close()


def test_a_failing_repair_is_one_sentence_and_the_runner_keeps_serving(tmp_path):
    from app.messages import JobStatus
    from wanda_engine.core.errors import ConfigError

    def refuse(request, **kw):
        raise ConfigError("repair steps must be a positive integer, got 0")

    runner = _fake_runner(refuse)
    try:
        bad = runner.submit(_repair_request(tmp_path), owner="s")
        good = runner.submit(_prune_request(), owner="s")
        assert runner.wait_idle(10)
        assert runner.job(bad.id).status == JobStatus.FAILED
        assert runner.job(bad.id).error == "repair steps must be a positive integer, got 0"
        assert runner.job(good.id).status == JobStatus.COMPLETE
    finally:
        runner.close()


# --- the Repair page ---------------------------------------------------------------------------------------------

def write_run(root, record: RunRecord):
    """A finished run directory as the runner leaves one (no matrix records needed by the Repair page)."""
    path = root / record.name
    path.mkdir(parents=True)
    (path / "records.json").write_text("[]")
    (path / "run.json").write_text(json.dumps(record.to_json()))
    return path


def write_repair(run_path, record: RepairRecord) -> None:
    folder = run_path / "repairs" / record.name
    folder.mkdir(parents=True)
    record = replace(record, request=replace(record.request, run=str(run_path)))
    (folder / "repair.json").write_text(json.dumps(record.to_json()))


def test_the_page_without_a_pruned_run_says_where_to_make_one(app_env):
    from test_app import goto, new_app, no_exceptions

    at = goto(new_app(), "repair")
    no_exceptions(at)
    assert at.title[0].value == "Repair a pruned model"
    assert any("No finished, evaluated pruned run yet" in i.value for i in at.info)


def test_the_page_draws_the_stores_repairs_and_refuses_bad_input(app_env):
    from test_app import charts, errors, goto, new_app, no_exceptions

    from app import ui

    run = pruned_record("pruned", ppl=40.0, dense=20.0)
    path = write_run(app_env.runs, run)
    lora = repair_record("lora", 30.0)
    write_repair(path, lora)
    at = goto(new_app(), "repair")
    no_exceptions(at)
    assert at.selectbox(key="rp_run").value == "pruned"  # the session's current run
    bars = next(c for c in charts(at) if "after repair" in c["layout"]["title"]["text"])
    values = dict(zip(bars["data"][0]["y"], bars["data"][0]["x"]))  # horizontal bars
    assert values["dense"] == run.ppl_dense and by_prefix(values, "+LoRA") == [lora.ppl_after]
    text = " ".join(m.value for m in at.markdown)
    share = (run.ppl - lora.ppl_after) / (run.ppl - run.ppl_dense)
    assert f"closes {share:.0%} of the gap" in text
    assert any("No dense model fine-tuned with this budget yet" in c.value for c in at.caption)
    assert any(b.label.startswith("Queue wanda+obs 50%") for b in at.button)
    assert any("repair loss" in c["layout"]["title"]["text"].lower() or "training loss" in c["layout"]["title"]["text"]
               for c in charts(at))
    assert any("Data as CSV" in b.proto.label for b in at.get("download_button"))
    # the time estimate and the budget in tokens, before anything runs
    budget = RepairConfig()  # the page's default budget is the engine's
    tokens = f"{budget.steps * budget.batch_size * budget.seqlen:,} tokens"
    assert any("Estimated" in c.value and tokens in c.value for c in at.caption), [c.value for c in at.caption]
    # bad input: one sentence, nothing queued
    at.text_input(key="rp_train_text").set_value("/no/such/notes.txt").run()
    at.button(key="rp_start").click().run()
    no_exceptions(at)
    assert errors(at) == ["training text '/no/such/notes.txt' is not a .txt file on this machine; leave it empty to "
                          "train on the run's calibration text"], errors(at)
    assert not ui.job_runner().busy


@pytest.fixture
def tiny_pruned_run(app_env):
    """A Wanda 50% run of the tiny model in the test's store, and the dense model it was pruned from."""
    from wanda_engine.inputs.models import load_model
    from wanda_engine.runner.execute import execute_run
    from wanda_engine.store.run_store import RunStore

    dense = load_model(str(app_env.model))
    run = execute_run(RunRequest(model=str(app_env.model), prune=PruneConfig(nsamples=4, seqlen=32),
                                 eval=EvalConfig(seqlen=32, windows=2)), store=RunStore(), loaded=dense)
    return SimpleNamespace(run=run, dense=dense)


def paused_repair(reached: threading.Event, go: threading.Event):
    """The real execute_repair, held after its first step until `go` (the page is looked at mid-run)."""
    from wanda_engine.repair.run import execute_repair

    def repair(request, on_event, cancel, loaded):
        def spy(event):
            on_event(event)
            if isinstance(event, RepairStep) and event.step == 1:
                reached.set()
                assert go.wait(30)
        return execute_repair(request, on_event=spy, cancel=cancel, loaded=loaded)
    return repair


@pytest.mark.slow  # a real repair behind the page: about 7 s
def test_the_page_runs_a_short_repair_live_and_then_shows_the_bars(app_env, tiny_pruned_run, monkeypatch):
    from test_app import charts, errors, goto, new_app, no_exceptions

    from app import ui
    from app.execution import InProcess
    from app.jobs import JobRunner
    from helpers.checks import parameter_checksum
    from wanda_engine.repair.record import load_repairs

    reached, go = threading.Event(), threading.Event()
    dense, before = tiny_pruned_run.dense, parameter_checksum(tiny_pruned_run.dense.model)
    runner = JobRunner(InProcess(lambda request: dense, repairer=paused_repair(reached, go)))
    monkeypatch.setattr(ui, "job_runner", lambda: runner)
    try:
        at = goto(new_app(), "repair")
        no_exceptions(at)
        assert at.selectbox(key="rp_run").value == tiny_pruned_run.run.name
        for key, value in (("rp_steps", 3), ("rp_batch", 1), ("rp_seqlen", 32), ("rp_eval_every", 1)):
            at.number_input(key=key).set_value(value)
        at.run()
        assert any("3 steps × 1 × 32 tokens = 96 tokens" in c.value for c in at.caption)
        at.button(key="rp_start").click().run()
        no_exceptions(at)
        assert not errors(at), errors(at)
        assert reached.wait(60)
        at.run()
        live = next(c for c in charts(at) if c["layout"]["title"]["text"].startswith("Repairing"))
        assert [p for p in live["data"][0]["x"]] == [1]  # the first step's loss, the curve filling in
        assert any("step 1/3" in p.proto.text for p in at.get("progress"))
        go.set()
        assert runner.wait_idle(120)
        at.run()
        no_exceptions(at)
        (record,) = load_repairs(tiny_pruned_run.run.path)
        assert record.complete and [s for s, *_ in record.losses] == [1, 2, 3]
        bars = next(c for c in charts(at) if "after repair" in c["layout"]["title"]["text"])
        values = dict(zip(bars["data"][0]["y"], bars["data"][0]["x"]))  # horizontal bars
        assert by_prefix(values, "+LoRA") == [record.ppl_after]
        assert by_prefix(values, "pruned") == [tiny_pruned_run.run.record.ppl]
        assert any("training loss" in c["layout"]["title"]["text"] for c in charts(at))
        assert parameter_checksum(dense.model) == before  # the cached dense model was copied, never trained

        # a second repair, cancelled from the page between its steps: marked cancelled, the pruned run untouched
        run_json = (tiny_pruned_run.run.path / "run.json").read_bytes()
        reached.clear()
        go.clear()
        at.radio(key="rp_kind").set_value("finetune").run()
        at.button(key="rp_start").click().run()
        assert reached.wait(60)
        at.run()
        job = runner.current()
        at.button(key=f"rp_cancel_{job.id}").click().run()
        assert any("Cancelling" in c.value for c in at.caption)
        go.set()
        assert runner.wait_idle(120)
        at.run()
        assert runner.job(job.id).status == "cancelled"
        assert any("cancelled" in w.value for w in at.warning), [w.value for w in at.warning]
        statuses = {r.request.config.method: r.status for r in load_repairs(tiny_pruned_run.run.path)}
        assert statuses == {"lora": "complete", "finetune": "cancelled"}
        assert (tiny_pruned_run.run.path / "run.json").read_bytes() == run_json
    finally:
        go.set()
        runner.wait_idle(60)


def test_a_repair_is_handed_the_cached_dense_model_of_its_runs_spec(tmp_path, monkeypatch):
    """The worker's cache gives a repair the dense model its run was pruned from, if loaded already; never loads."""
    from app import execution

    loads = []
    monkeypatch.setattr(execution, "load_model", lambda source, **kw: loads.append((source, kw)) or object())
    cache = execution.ModelCache()
    path = write_run(tmp_path, pruned_record("pruned"))
    request = RepairRequest(run=str(path), config=RepairConfig(steps=2))
    assert execution.dense_model_for(request, cache.cached) is None and not loads
    run_request = RunRequest.from_dict(pruned_record().request.to_dict())
    dense = cache.get(run_request)
    assert execution.dense_model_for(request, cache.cached) is dense and len(loads) == 1
    cache.get(replace(run_request, dtype="bfloat16"))  # another spec: the run's model is not it
    assert cache.cached(replace(run_request, dtype="bfloat16")) is not dense
    assert execution.dense_model_for(RepairRequest(run=str(tmp_path / "gone")), cache.cached) is None


def test_the_repair_page_and_its_jobs_keep_the_server_free_of_torch():
    """What the Repair page and the job runner import for repairs stays torch-free (the worker process trains)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import app.jobs, app.repairs, wanda_engine.outputs.figures.repair, wanda_engine.repair.estimate, "
            "wanda_engine.repair.record, wanda_engine.repair.events; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_an_unmerged_adapter_is_never_said_to_keep_the_sparsity():
    run, adapter = pruned_record(), repair_record("lora", 30.0, evaluate="adapter")
    text = repair_summary(run, [adapter], None)
    assert "LoRA (unmerged adapter)" in text and "dense low-rank update unmerged" in text
    assert "at exactly the pruned sparsity" not in text
    assert by_prefix(bar_values(repair_bars(run, [adapter], None)), "+LoRA (unmerged adapter)") == [30.0]


def test_the_obs_bar_comes_from_the_run_pruned_alike_with_the_weight_update(tmp_path):
    from app import repairs
    from wanda_engine.store.run_store import Run

    run = pruned_record("pruned")
    obs = pruned_record("obs", ppl=33.0, weight_update="obs")
    other_sparsity = replace(obs, name="obs-60", request=replace(obs.request, prune=replace(
        obs.request.prune, sparsity=0.6)))
    other_windows = replace(obs, name="obs-wiki", eval=EvalInfo("wikitext2", 32, 2, 64))
    store = [Run(tmp_path / r.name, r) for r in (other_sparsity, other_windows, run)]
    assert repairs.obs_twin(run, store) is None
    assert repairs.obs_twin(run, [Run(tmp_path / "obs", obs), *store]) is obs
    request = repairs.obs_request(run)
    assert request.prune.label == "wanda+obs 50%" and request.prune.weight_update == "obs"
    assert replace(request.prune, weight_update="none") == run.request.prune and request.eval == run.request.eval
