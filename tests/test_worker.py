"""The app's worker process: jobs run in a child interpreter that keeps its models, relays the engine's
events, honours cancel, and a dead child fails its job with one sentence while the next job gets a new one."""
from __future__ import annotations

import os
import signal
import time

import pytest

from app.jobs import JobRunner
from app.messages import JobStatus
from app.worker import WorkerProcess
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.store.run_store import RunStore

pytestmark = pytest.mark.slow  # each test starts a Python process that imports torch


@pytest.fixture
def runner(runs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))  # the child inherits the environment
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    jobs = JobRunner(executor=WorkerProcess())
    yield jobs
    jobs.cancel_all()
    jobs.wait_idle(60)
    jobs.close()


def request(model: str, **kw) -> RunRequest:
    return RunRequest(model=model, prune=PruneConfig(nsamples=4, seqlen=32), eval=EvalConfig(seqlen=32, windows=2), **kw)


def worker_pid(jobs: JobRunner) -> int:
    return jobs._executor._process.pid


def wait_running(jobs: JobRunner, timeout: float = 60) -> None:
    """Until the runner has handed its first job to the worker."""
    deadline = time.monotonic() + timeout
    while getattr(jobs.current(), "status", None) != JobStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.02)


def test_jobs_run_in_a_child_process_that_keeps_its_model(runner, tiny_model_dir):
    first = runner.submit(request(str(tiny_model_dir)), owner="s")
    second = runner.submit(request(str(tiny_model_dir)), owner="s")
    assert runner.wait_idle(180)
    one, two = runner.job(first.id), runner.job(second.id)
    assert one.status == two.status == JobStatus.COMPLETE, (one.error, two.error)
    assert worker_pid(runner) != os.getpid()
    # the engine's events crossed the process boundary: both blocks, the run's name, its stages
    assert [b.block for b in one.blocks] == [0, 1] and one.matrices_per_block == 7
    assert {"load-model", "prune", "eval"} <= set(one.stage_seconds)
    runs = {r.name: r for r in RunStore().list()}
    a, b = runs[one.run_name].record, runs[two.run_name].record
    # the second job started from the same cached dense model, untouched by the first job's pruning
    assert a.ppl == b.ppl and a.ppl_dense == b.ppl_dense and a.sparsity == b.sparsity
    assert b.timings["load_s"] < 0.5 and two.stage_seconds["load-model"] < one.stage_seconds["load-model"]


def test_the_worker_loads_the_dtype_the_request_asks_for(runner, tiny_model_dir):
    job = runner.submit(request(str(tiny_model_dir), dtype="bfloat16"), owner="s")
    assert runner.wait_idle(180)
    done = runner.job(job.id)
    assert done.status == JobStatus.COMPLETE, done.error
    record = RunStore().get(done.run_name).record
    assert record.request.dtype == "bfloat16" and record.model.dtype == "bfloat16"


def test_cancel_reaches_the_worker_and_the_next_job_runs(runner, tiny_model_dir):
    cancelled = runner.submit(request(str(tiny_model_dir)), owner="s")
    wait_running(runner)
    assert runner.cancel(cancelled.id)  # while the child is still starting: it stops at the first boundary
    finished = runner.submit(request(str(tiny_model_dir)), owner="s")
    assert runner.wait_idle(180)
    assert runner.job(cancelled.id).status == JobStatus.CANCELLED, runner.job(cancelled.id)
    assert "cancelled" in runner.job(cancelled.id).error
    assert runner.job(finished.id).status == JobStatus.COMPLETE, runner.job(finished.id).error


def test_a_killed_worker_fails_its_job_and_the_next_job_gets_a_new_one(runner, tiny_model_dir):
    doomed = runner.submit(request(str(tiny_model_dir)), owner="s")
    wait_running(runner)
    first_pid = worker_pid(runner)
    os.kill(first_pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    assert runner.wait_idle(60)
    failed = runner.job(doomed.id)
    assert failed.status == JobStatus.FAILED and "worker process stopped unexpectedly" in failed.error, failed
    again = runner.submit(request(str(tiny_model_dir)), owner="s")
    assert runner.wait_idle(180)
    assert runner.job(again.id).status == JobStatus.COMPLETE, runner.job(again.id).error
    assert worker_pid(runner) != first_pid


def test_zero_shot_tasks_run_inside_the_worker_process(runner, tiny_model_dir, tmp_path):
    """lm-eval and `datasets` run in the worker (a daemon process, which may not start processes of its own)."""
    pytest.importorskip("lm_eval")
    from test_zeroshot import QUESTIONS, TASK, WORDS, write_task

    from wanda_engine.config import ZeroShotConfig

    rows = [{"question": q, "choices": [WORDS[i % len(WORDS)], WORDS[(i + 1) % len(WORDS)]], "label": 0}
            for i, q in enumerate(QUESTIONS[:4])]
    folder = write_task(tmp_path / "tasks", rows)
    job = runner.submit(request(str(tiny_model_dir), zeroshot=ZeroShotConfig(tasks=(TASK,), task_dir=str(folder))),
                        owner="s")
    assert runner.wait_idle(300)
    done = runner.job(job.id)
    assert done.status == JobStatus.COMPLETE, done.error
    zeroshot = RunStore().get(done.run_name).record.zeroshot
    assert set(zeroshot.dense.results) == set(zeroshot.pruned.results) == {TASK}


def test_a_repair_runs_in_the_worker_after_a_prune_and_relays_its_steps(runner, tiny_model_dir):
    from wanda_engine.repair.config import RepairConfig, RepairRequest
    from wanda_engine.repair.record import load_repairs

    prune = runner.submit(request(str(tiny_model_dir)), owner="s")
    assert runner.wait_idle(180)
    run = RunStore().get(runner.job(prune.id).run_name)
    repair = runner.submit(RepairRequest(run=str(run.path), config=RepairConfig(steps=2, batch_size=1, seqlen=32,
                                                                              eval_every=1)), owner="s")
    assert runner.wait_idle(180)
    done = runner.job(repair.id)
    assert done.status == JobStatus.COMPLETE, done.error
    (record,) = load_repairs(run.path)
    assert done.repair_name == record.name and done.run_name == run.name
    # the repair's events crossed the process boundary: every step's loss, every evaluation
    assert [tuple(x[:2]) for x in done.losses] == [tuple(x[:2]) for x in record.losses]
    assert list(done.evals) == [tuple(e) for e in record.evals] and done.step == done.steps == 2
    assert {"repair-load", "repair-train", "repair-eval"} <= set(done.stage_seconds)
    assert record.sparsity_after == record.sparsity_before == run.record.sparsity
