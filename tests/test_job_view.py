"""The pages read a job as a typed, frozen `JobView` (the request object itself included, nothing parsed back),
and no page or app module reads a job's fields by string key."""
from __future__ import annotations

import ast
import dataclasses
import threading
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.execution import InProcess
from app.jobs import PRUNE, REPAIR, JobRunner, JobView
from app.messages import JobRequest, JobStatus
from wanda_engine.config import PruneConfig, RunRequest
from wanda_engine.core.events import BlockFinished, BlockStarted, StageStarted
from wanda_engine.repair.config import RepairConfig, RepairRequest

ROOT = Path(__file__).resolve().parents[1]


def test_a_job_view_is_a_frozen_typed_copy_carrying_the_request_itself(tmp_path):
    release, started = threading.Event(), threading.Event()
    block = BlockFinished(0.2, 0, 2, 0.5, 0.01, 0.5)

    def fake_execute(request, **kw):
        for event in (StageStarted(0.0, "prune", "x"), BlockStarted(0.1, 0, 2), block):
            kw["on_event"](event)
        started.set()
        assert release.wait(10)
        return SimpleNamespace(name=request.name)

    def fake_repair(request, **kw):
        return SimpleNamespace(status="complete", run="pruned", name="lora-r8", error=None)

    runner = JobRunner(InProcess(lambda request: SimpleNamespace(label="fake"), fake_execute, fake_repair),
                       store_factory=lambda: SimpleNamespace(new_name=lambda stem: "run-1"))
    prune = RunRequest(model="tiny", prune=PruneConfig(method="magnitude"))
    repair = RepairRequest(run=str(tmp_path / "pruned"), config=RepairConfig(steps=3))
    try:
        submitted = runner.submit(prune, owner="s")
        waiting = runner.submit(repair, owner="s")
        assert started.wait(10)
        view = runner.current()
        assert isinstance(view, JobView) and view.request is prune and view.request.prune.method == "magnitude"
        assert view.kind == PRUNE and view.status is JobStatus.RUNNING and view.blocks == (block,)
        with pytest.raises(dataclasses.FrozenInstanceError):
            view.status = JobStatus.FAILED  # type: ignore[misc]
        with pytest.raises(TypeError):
            view.stage_seconds["prune"] = 1.0  # type: ignore[index]
        with pytest.raises(TypeError):
            view["status"]  # type: ignore[index]
        queued = runner.job(waiting.id)
        assert queued.request is repair and queued.kind == REPAIR and queued.request.config.steps == 3
        assert queued.status is JobStatus.QUEUED and queued.time_left_s is None and queued.elapsed_s == 0.0
        release.set()
        assert runner.wait_idle(10)
        # a copy: the runner moved on, the views taken before did not
        assert submitted.status is JobStatus.QUEUED and view.status is JobStatus.RUNNING
        assert runner.job(view.id).status is JobStatus.COMPLETE and runner.job(queued.id).repair_name == "lora-r8"
    finally:
        release.set()
        runner.close()

    hints = typing.get_type_hints(JobView)
    assert hints["request"] == JobRequest and hints["status"] is JobStatus
    assert hints["blocks"] == tuple[BlockFinished, ...] and hints["losses"].__origin__ is tuple
    assert not any("dict" in str(h) or "list" in str(h) or h is typing.Any for h in hints.values())


# --- no job read by string key ------------------------------------------------------------------------------------

RUNNER_READS = {"current", "queued", "history", "job", "repair_jobs", "last_repair_job"}  # calls that return jobs
JOB_FIELDS = {f.name for f in dataclasses.fields(JobView)} | {"kind", "config", "eta_s", "eta_partial"}


def _holds_jobs(expr: ast.AST, jobs: set[str]) -> bool:
    """Whether `expr` is, or gathers, jobs: a runner read, a name bound to jobs, a list or loop over them (a field of
    a job, `job.label`, is not a job)."""
    if isinstance(expr, ast.Attribute):
        return False
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr in RUNNER_READS:
        return True
    if isinstance(expr, ast.Name):
        return expr.id in jobs
    return any(_holds_jobs(child, jobs) for child in ast.iter_child_nodes(expr))


def _job_names(tree: ast.AST) -> set[str]:
    """Names bound to jobs anywhere in a module: assigned from runner reads, looped over them, parameters annotated
    JobView or passed a job by a call in the module (a fixpoint, ignoring scopes: a stricter check, never a looser one)."""
    functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    jobs = {a.arg for f in functions.values() for a in f.args.args if a.annotation is not None
            and "JobView" in ast.unparse(a.annotation)}
    while True:
        found = set(jobs)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None \
                    and _holds_jobs(node.value, jobs):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            elif isinstance(node, (ast.For, ast.comprehension)) and _holds_jobs(node.iter, jobs):
                found |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
                params = functions[node.func.id].args.args
                found |= {p.arg for p, arg in zip(params, node.args) if _holds_jobs(arg, jobs)}
        if found == jobs:
            return jobs
        jobs = found


def job_reads_by_key(source: str) -> list[str]:
    """Every `job["field"]` in `source`: a string subscript naming a job field, on something that holds jobs."""
    tree = ast.parse(source)
    jobs = _job_names(tree)
    return [f"line {node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree)
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
            and node.slice.value in JOB_FIELDS and _holds_jobs(node.value, jobs)]


def test_the_key_read_check_finds_the_old_dict_reads():
    old = '''
def _recent(history):
    for job in history:
        st.write(job["label"])
def _show(job: JobView):
    return job["eta_s"]
runner = ui.job_runner()
active = runner.current()
name = active["run_name"] if active else None
jobs = [j for j in (runner.job(i) for i in info["jobs"]) if j is not None]
done = [j for j in jobs if j["status"] == "complete" and j["kind"] == "prune"]
_recent(runner.history())
first = runner.queued()[0]["owner"]
st.session_state["label"] = values["kind"]
'''
    found = job_reads_by_key(old)
    assert len(found) == 6, found  # label, eta_s, run_name, status, kind, owner; not the session state or a form
    assert not any("session_state" in f or "values" in f for f in found)


def test_no_page_or_app_module_reads_a_job_by_string_key():
    offenders = [f"{path.relative_to(ROOT)} {read}" for folder in ("app", "pages")
                 for path in sorted((ROOT / folder).glob("*.py")) for read in job_reads_by_key(path.read_text())]
    assert not offenders, "job fields read by string key: " + "; ".join(offenders)
