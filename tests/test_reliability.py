"""Fault injection: a long run is never silently wrong or lost.

Each test injects one fault and checks what survives it:
- SIGKILL of the CLI mid-prune, and SIGKILL in the middle of writing each file of a run directory;
- Ctrl-C of the CLI, and Cancel in the app, mid-prune;
- two browser sessions at once;
- out of memory during calibration, evaluation and model loading;
- corrupt inputs: damaged run directories, broken model folders, files that only claim to be GGUF,
  out-of-vocabulary token files, NaN/Inf weights and activations.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_model

from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.core.errors import EngineError, NumericalError, OutOfMemory
from wanda_engine.core.events import BlockStarted
from wanda_engine.runner.execute import execute_run
from wanda_engine.store.run_store import RunStore, load_run

FAST = ["--nsamples", "4", "--seqlen", "32", "--quiet"]


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def tiny_request(model: str, method: str = "wanda", eval_windows: int | None = None, **kw) -> RunRequest:
    ev = EvalConfig(seqlen=32, windows=eval_windows) if eval_windows else None
    return RunRequest(model=model, prune=PruneConfig(method=method, nsamples=4, seqlen=32), eval=ev, **kw)


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory, tiny_model_dir) -> Path:
    """A store holding two real complete runs of the tiny model: 'wanda-a' and 'magnitude-b'."""
    root = tmp_path_factory.mktemp("finished") / "runs"
    saved = os.environ.get("WANDA_CACHE")
    os.environ["WANDA_CACHE"] = str(root.parent / "cache")
    try:
        for name, method in (("wanda-a", "wanda"), ("magnitude-b", "magnitude")):
            execute_run(tiny_request(str(tiny_model_dir), method, eval_windows=1, name=name), store=RunStore(root))
    finally:
        if saved is None:
            os.environ.pop("WANDA_CACHE", None)
        else:
            os.environ["WANDA_CACHE"] = saved
    return root


def store_with_earlier_run(finished_runs: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "runs"
    shutil.copytree(finished_runs / "wanda-a", root / "earlier")
    return root, tree_digest(root / "earlier")


# --- the CLI as a child process, with a fault injected ---------------------------------------------

CHILD = r'''
import os, signal, sys, time
sys.path.insert(0, os.environ["REPO"])
import wanda_engine.runner.execute as runner
from wanda_engine.core.events import BlockStarted

pause_at, pause_s = os.environ.get("PAUSE_AT", ""), float(os.environ.get("PAUSE_S", "0"))
real_prune = runner.prune_model

def prune_model(model, windows, config, on_event=None, **kw):
    def spy(event):
        if isinstance(event, BlockStarted):
            print(f"BLOCK {event.block}", flush=True)
            if pause_at == "all" or pause_at == str(event.block):
                time.sleep(pause_s)  # a slow block: the parent acts meanwhile
        on_event(event)
    return real_prune(model, windows, config, on_event=spy, **kw)

runner.prune_model = prune_model

kill_file, kill_nth = os.environ.get("KILL_AT_FSYNC", ""), int(os.environ.get("KILL_NTH", "1"))
if kill_file:  # SIGKILL this process while it writes `kill_file`: written to its temporary name, not renamed yet
    real_fsync, seen = os.fsync, [0]
    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(f".{kill_file}."):
            seen[0] += 1
            if seen[0] == kill_nth:
                print(f"KILLING in {name}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        return real_fsync(fd)
    os.fsync = fsync

from wanda_engine.cli.main import main
sys.exit(main(sys.argv[1:]))
'''


class Child:
    """`python -c CHILD prune ...` with its stdout lines readable as they come."""

    def __init__(self, args: list[str], tmp_path: Path, **env: str):
        full_env = {**os.environ, "REPO": str(REPO), "HF_HUB_OFFLINE": "1", "WANDA_CACHE": str(tmp_path / "cache"),
                    "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1", **env}
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, "prune", *args], cwd=REPO, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if line == text:
                return
        self.proc.kill()
        raise AssertionError(f"the child never printed {text!r}; stdout {self.seen}, stderr {self.proc.stderr.read()[-2000:]}")

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        rc = self.proc.wait(timeout)
        return rc, self.proc.stderr.read()


@pytest.mark.slow  # a CLI child process, killed or interrupted
def test_sigkill_mid_prune_leaves_the_store_readable_and_the_run_interrupted(finished_runs, tiny_model_dir, tmp_path):
    root, earlier = store_with_earlier_run(finished_runs, tmp_path)
    child = Child(["--model", str(tiny_model_dir), *FAST, "--eval", "none", "--out", str(root / "killed")], tmp_path,
                  PAUSE_AT="1", PAUSE_S="120")
    try:
        child.wait_for("BLOCK 1")  # block 0 is pruned, block 1 has started
        live = load_run(root / "killed")
        assert live.status == "running" and not live.complete  # its writer is alive: shown as running
        with pytest.raises(EngineError, match="still being written"):
            RunStore(root).delete("killed")
        os.kill(child.proc.pid, signal.SIGKILL)
        rc, _ = child.finish()
    finally:
        child.proc.kill()
    assert rc == -signal.SIGKILL
    store = RunStore(root)
    runs = {r.name: r for r in store.list()}  # the store stays readable
    assert set(runs) == {"earlier", "killed"}
    killed = runs["killed"]
    assert killed.status == "interrupted" and not killed.complete, killed.error
    assert f"pid {child.proc.pid}" in killed.error
    assert killed.record.sparsity is None and not (root / "killed" / "records.json").exists()
    assert tree_digest(root / "earlier") == earlier and runs["earlier"].complete  # nothing else was touched
    from app.runs_table import runs_table

    table = runs_table(store.list()).set_index("name")
    assert table.loc["killed", "status"] == "✘ interrupted" and table.isna().loc["killed", "perplexity"]
    store.delete("killed")  # an interrupted run can be cleaned up
    assert [r.name for r in store.list()] == ["earlier"]


def test_the_runner_writes_complete_last(tiny_model_dir, tmp_path, monkeypatch):
    """The write order the kill tests below rely on: the folder appears with run.json 'running', then the
    records, and the 'complete' run.json last; every file goes to a temporary name first, then is renamed."""
    import wanda_engine.store.run_store as runs_module

    writes: list[tuple[str, str, str | None]] = []
    real_replace = os.replace

    def replace(src, dst):
        status = json.loads(Path(src).read_text()).get("status") if Path(dst).name == "run.json" else None
        writes.append((Path(src).name, Path(dst).name, status))
        return real_replace(src, dst)

    monkeypatch.setattr(runs_module.os, "replace", replace)
    execute_run(tiny_request(str(tiny_model_dir)), run_dir=tmp_path / "run")
    assert [(dst, status) for _src, dst, status in writes] == [
        ("run.json", "running"), ("records.json", None), ("arrays.npz", None), ("calibration.npy", None),
        ("run.json", "complete")]
    assert all(src.startswith(f".{dst}.") and src.endswith(".tmp") for src, dst, _ in writes)


WRITER = r'''
import os, signal, sys
sys.path.insert(0, os.environ["REPO"])
from pathlib import Path
import numpy as np
from wanda_engine.store.matrix_records import MatrixRecord
from wanda_engine.store.run_store import atomic_write_json, create_run_dir, write_records, writer_identity

kill_file, kill_nth = sys.argv[2], int(sys.argv[3])
real_fsync, seen = os.fsync, [0]
def fsync(fd):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{kill_file}."):
        seen[0] += 1
        if seen[0] == kill_nth:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_fsync(fd)
os.fsync = fsync

run_dir = Path(sys.argv[1])
meta = {"format": 1, "status": "running", "name": run_dir.name, "created": "2026-01-01T00:00:00",
        "config": {"method": "wanda"}, "writer": writer_identity()}
create_run_dir(run_dir, meta)
records = [MatrixRecord(block=b, name="mlp.up_proj", full_name=f"model.layers.{b}.mlp.up_proj", shape=(8, 8),
                        method="wanda", group="row", sparsity=0.5, row_sparsity={}, proxy_error=0.1,
                        arrays={"density": np.full((4, 4), 0.5)}) for b in range(3)]
meta["files"] = write_records(run_dir, records)
meta.update(status="complete", sparsity=0.5)
atomic_write_json(run_dir / "run.json", meta)
print("DONE")
'''


@pytest.mark.slow  # a CLI child process, killed or interrupted
@pytest.mark.parametrize("kill_file, nth, leaves", [
    ("run.json", 1, "nothing"),  # while creating the run directory: no folder appears at all
    ("records.json", 1, "interrupted"),
    ("arrays.npz", 1, "interrupted"),
    ("run.json", 2, "interrupted"),  # the final 'complete' status
])
def test_sigkill_mid_write_of_each_run_file(kill_file, nth, leaves, finished_runs, tmp_path):
    root, earlier = store_with_earlier_run(finished_runs, tmp_path)
    env = {**os.environ, "REPO": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", WRITER, str(root / "new"), kill_file, str(nth)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    runs = {r.name: r for r in RunStore(root).list()}
    if leaves == "nothing":
        assert set(runs) == {"earlier"} and not (root / "new").exists()
    else:
        assert set(runs) == {"earlier", "new"}
        assert runs["new"].status == "interrupted" and not runs["new"].complete
    assert tree_digest(root / "earlier") == earlier
    # the store still takes new runs under the same name once the broken one is deleted
    if leaves != "nothing":
        RunStore(root).delete("new")
    ok = subprocess.run([sys.executable, "-c", WRITER, str(root / "new"), "none", "1"], env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "DONE" in ok.stdout, ok.stderr
    new = load_run(root / "new")
    assert new.complete and len(new.records()) == 3


# --- cancelling --------------------------------------------------------------------------------------

@pytest.mark.slow  # a CLI child process, killed or interrupted
def test_ctrl_c_stops_the_cli_between_blocks_within_seconds(finished_runs, tiny_model_dir, tmp_path):
    weights = tree_digest(tiny_model_dir)
    root = tmp_path / "runs"
    child = Child(["--model", str(tiny_model_dir), *FAST, "--eval", "none", "--out", str(root / "stopped")], tmp_path,
                  PAUSE_AT="all", PAUSE_S="1.0")
    try:
        child.wait_for("BLOCK 0")
        t0 = time.monotonic()
        child.proc.send_signal(signal.SIGINT)
        rc, err = child.finish(60)
        took = time.monotonic() - t0
    finally:
        child.proc.kill()
    assert rc == 130, err
    assert took < 10, took
    assert "cancelled: pruning was cancelled after 1 of 2 blocks" in err
    assert "BLOCK 1" not in child.seen + list(child.lines.queue)  # stopped between blocks
    run = load_run(root / "stopped")
    assert run.status == "cancelled" and "after 1 of 2 blocks" in run.error and not run.complete
    assert tree_digest(tiny_model_dir) == weights  # the dense model on disk is untouched


def new_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=60).run()


def no_exceptions(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def wait_until(predicate, timeout: float = 60, at=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if at is not None:
            at.run()
            no_exceptions(at)
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
def test_cancel_in_the_app_mid_prune_keeps_the_cached_model_and_the_next_run_works(app_env, monkeypatch):
    import wanda_engine.runner.execute as runner_module
    from app import ui
    from app.execution import InProcess, ModelCache
    from app.jobs import JobRunner
    from app.messages import JobStatus
    from helpers.checks import parameter_checksum
    from wanda_engine.inputs.models import load_model

    real_prune = runner_module.prune_model

    def slow_prune(model, windows, config, on_event=None, **kw):  # 1.5 s per block: time to press Cancel
        def spy(event):
            on_event(event)
            if isinstance(event, BlockStarted):
                time.sleep(1.5)
        return real_prune(model, windows, config, on_event=spy, **kw)

    monkeypatch.setattr(runner_module, "prune_model", slow_prune)
    source = str(Path(app_env.model).resolve())
    fresh = parameter_checksum(load_model(source).model)
    # the app's job runner with its jobs on a thread of this process, so that the slowed pruning applies
    # (tests/test_worker.py cancels and kills jobs in the real worker process)
    models = ModelCache()
    in_process = JobRunner(InProcess(models.get))
    monkeypatch.setattr(ui, "job_runner", lambda: in_process)
    cached = lambda: models.get(RunRequest(model=source)).model  # noqa: E731 - the dense model jobs copy

    at = new_app()
    at.radio(key="f_model_kind").set_value("folder").run()
    at.text_input(key="f_model_text").set_value(source)
    at.number_input(key="f_nsamples").set_value(4)
    at.number_input(key="f_seqlen").set_value(32)
    at.selectbox(key="f_eval_dataset").set_value("none")
    at.run()
    at.button(key="b_run").click().run()
    no_exceptions(at)
    runner = ui.job_runner()
    wait_until(lambda: getattr(runner.current(), "stage", None) == "prune" and runner.current().num_blocks == 2)
    job = runner.current()
    at.run()
    t0 = time.monotonic()
    at.button(key=f"cancel_{job.id}").click().run()
    no_exceptions(at)
    assert runner.wait_idle(30)
    assert time.monotonic() - t0 < 10
    done = runner.job(job.id)
    assert done.status == JobStatus.CANCELLED and "after 1 of 2 blocks" in done.error, done
    assert parameter_checksum(cached()) == fresh  # the shared dense model is bit-identical
    assert RunStore().get(done.run_name).status == "cancelled"

    # the app is still usable: the next run starts and completes
    monkeypatch.setattr(runner_module, "prune_model", real_prune)
    at.run()
    at.button(key="b_run").click().run()
    no_exceptions(at)
    assert runner.wait_idle(60)
    last = runner.history()[0]
    assert last.status == JobStatus.COMPLETE, last
    assert RunStore().get(last.run_name).complete
    assert parameter_checksum(cached()) == fresh


# --- two sessions ------------------------------------------------------------------------------------

def test_two_sessions_view_and_export_their_own_runs(app_env, finished_runs):
    """Each browser session keeps its own selection and export state; the shared run cache is read-only."""
    from app import ui

    for name in ("wanda-a", "magnitude-b"):
        shutil.copytree(finished_runs / name, app_env.runs / name)
    one, two = new_app(), new_app()
    one.session_state["current_run"] = "wanda-a"
    two.session_state["current_run"] = "magnitude-b"
    for at in (one, two, one):  # interleaved, as two browsers would
        at.switch_page("../pages/runs.py").run()
        no_exceptions(at)
    for at, mine, other in ((one, "wanda-a", "magnitude-b"), (two, "magnitude-b", "wanda-a")):
        assert at.session_state["current_run"] == mine
        captions = " ".join(c.value for c in at.caption)
        assert f"Run **{mine}**" in captions and f"Run **{other}**" not in captions
        at.selectbox(key="export_figure").set_value("blocks").run()
        no_exceptions(at)
    assert one.selectbox(key="export_figure").value == "blocks" and two.selectbox(key="export_figure").value == "blocks"
    one.selectbox(key="export_figure").set_value("sparsity_heatmap").run()
    two.run()
    assert two.selectbox(key="export_figure").value == "blocks"  # one session's choice never reaches the other
    # the run objects the sessions share are read-only
    shared = ui.get_run("wanda-a")
    arr = next(a for r in shared.records() for a in r.arrays.values())
    with pytest.raises(ValueError, match="read-only"):
        arr[...] = 0


def test_sessions_submitting_at_once_each_queue_exactly_once_and_run_one_at_a_time():
    from app.execution import InProcess
    from app.jobs import JobRunner
    from app.messages import JobStatus

    running, overlap, lock = [0], [0], threading.Lock()

    def execute(request, **kw):
        with lock:
            running[0] += 1
            overlap[0] = max(overlap[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return SimpleNamespace(name=request.name)

    runner = JobRunner(InProcess(lambda request: SimpleNamespace(label="fake"), execute),
                       store_factory=lambda: SimpleNamespace(new_name=lambda stem: f"r{time.monotonic_ns()}"))
    try:
        ids: dict[str, list[int]] = {f"session-{i}": [] for i in range(6)}

        def submit(owner):
            for _ in range(4):
                ids[owner].append(runner.submit(tiny_request("x"), owner=owner).id)

        threads = [threading.Thread(target=submit, args=(o,)) for o in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert runner.wait_idle(30)
        history = runner.history()
        assert len(history) == 24 and len({j.id for j in history}) == 24
        assert overlap[0] == 1  # never two runs at once
        for owner, mine in ids.items():
            assert sorted(j.id for j in history if j.owner == owner) == sorted(mine)
        assert all(j.status == JobStatus.COMPLETE for j in history)
    finally:
        runner.close()


# --- out of memory -----------------------------------------------------------------------------------

def _oom_in_block(loaded, block: int, error: BaseException) -> None:
    """Make decoder block `block` fail to allocate on its calibration forward pass."""
    from wanda_engine.inputs.layers import find_blocks

    def forward(*args, **kwargs):
        raise error

    find_blocks(loaded.model)[1][block].forward = forward


def test_oom_during_calibration_fails_the_run_with_advice(tiny_model_dir, tmp_path, monkeypatch):
    from helpers.checks import parameter_checksum
    from wanda_engine.inputs.models import load_model

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    loaded = load_model(str(tiny_model_dir))
    before = parameter_checksum(loaded.model)
    _oom_in_block(loaded, 1, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    with pytest.raises(OutOfMemory) as info:
        execute_run(tiny_request(str(tiny_model_dir)), run_dir=tmp_path / "run", loaded=loaded)
    msg = str(info.value)
    assert msg.startswith("out of GPU memory while pruning (CUDA out of memory. Tried to allocate 20.00 GiB)")
    for advice in ("--nsamples", "--seqlen", "--batch-size", "--device"):
        assert advice in msg
    run = load_run(tmp_path / "run")
    assert run.status == "failed" and run.error == msg and not run.complete
    assert parameter_checksum(loaded.model) == before


def test_oom_during_evaluation_fails_the_run_with_advice(tiny_model_dir, tmp_path, monkeypatch):
    import wanda_engine.evaluation.perplexity as perplexity_module  # the dense and the pruned model's, alike

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    real, calls = perplexity_module.perplexity, []

    def perplexity(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the dense model fits, the pruned evaluation does not
            raise MemoryError()
        return real(*args, **kwargs)

    monkeypatch.setattr(perplexity_module, "perplexity", perplexity)
    with pytest.raises(OutOfMemory, match="out of host memory while evaluating the pruned model"):
        execute_run(tiny_request(str(tiny_model_dir), eval_windows=1), run_dir=tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.status == "failed" and "evaluation windows" in run.error and run.record.ppl is None


def test_oom_in_the_cli_is_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import wanda_engine.runner.execute as runner_module
    from wanda_engine.cli.main import main

    def prune_model(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(runner_module, "prune_model", prune_model)
    rc = main(["prune", "--model", str(tiny_model_dir), *FAST, "--eval", "none", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: out of GPU memory while pruning"), err
    assert load_run(tmp_path / "run").status == "failed"


def test_the_app_keeps_serving_after_out_of_memory(runs_dir, tiny_model_dir, tmp_path, monkeypatch):
    import wanda_engine.runner.execute as runner_module
    from app.execution import InProcess
    from app.jobs import JobRunner
    from app.messages import JobStatus
    from wanda_engine.inputs.models import load_model

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    cached = load_model(str(tiny_model_dir))
    real, calls = runner_module.prune_model, []

    def prune_model(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(*args, **kwargs)

    def loader(request):
        if request.model == "huge":
            raise MemoryError()
        return cached

    monkeypatch.setattr(runner_module, "prune_model", prune_model)
    runner = JobRunner(InProcess(loader))
    try:
        oom = runner.submit(tiny_request(str(tiny_model_dir)), owner="a")
        oom_load = runner.submit(tiny_request("huge"), owner="a")
        ok = runner.submit(tiny_request(str(tiny_model_dir)), owner="b")
        assert runner.wait_idle(120)
        first, second, third = (runner.job(j.id) for j in (oom, oom_load, ok))
        assert first.status == JobStatus.FAILED and first.error.startswith("out of GPU memory while pruning")
        assert second.status == JobStatus.FAILED and second.error.startswith("out of host memory while loading the model")
        assert third.status == JobStatus.COMPLETE, third
        statuses = {r.name: r.status for r in RunStore().list()}
        assert statuses == {first.run_name: "failed", third.run_name: "complete"}
    finally:
        runner.close()


# --- corrupt run directories ---------------------------------------------------------------------------

def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _rewrite_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "run.json").read_text())
    meta.update(changes)
    (path / "run.json").write_text(json.dumps(meta))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


RUN_DAMAGE = {  # name: (damage, expected status, words in the problem)
    "run.json truncated": (lambda p: _truncate(p / "run.json"), "corrupt", "unreadable run.json"),
    "run.json empty": (lambda p: (p / "run.json").write_text(""), "corrupt", "unreadable run.json"),
    "run.json not an object": (lambda p: (p / "run.json").write_text("[1, 2]"), "corrupt", "not an object"),
    "run.json missing": (lambda p: (p / "run.json").unlink(), "interrupted", "no run.json"),
    "run.json field of the wrong type": (lambda p: _rewrite_meta(p, config=["x"]), "corrupt", "'config'"),
    "run.json unknown status": (lambda p: _rewrite_meta(p, status="done?"), "corrupt", "unknown status"),
    "records.json truncated": (lambda p: _truncate(p / "records.json"), "corrupt", "records.json is truncated"),
    "records.json missing": (lambda p: (p / "records.json").unlink(), "corrupt", "records.json is missing"),
    "arrays.npz truncated": (lambda p: _truncate(p / "arrays.npz"), "corrupt", "arrays.npz is truncated"),
    "arrays.npz missing": (lambda p: (p / "arrays.npz").unlink(), "corrupt", "arrays.npz is missing"),
    "records.json damaged in place": (lambda p: _flip_byte(p / "records.json"), "complete", "checksum"),
}


@pytest.mark.parametrize("case", list(RUN_DAMAGE))
def test_a_damaged_run_directory_is_never_shown_as_complete(case, finished_runs, tmp_path):
    damage, status, words = RUN_DAMAGE[case]
    root, earlier = store_with_earlier_run(finished_runs, tmp_path)
    shutil.copytree(finished_runs / "magnitude-b", root / "damaged")
    damage(root / "damaged")
    runs = {r.name: r for r in RunStore(root).list()}  # listing never raises
    run = runs["damaged"]
    assert run.status == status, (run.status, run.error)
    if status == "complete":  # same size, other bytes: caught when the records are read, as one sentence
        with pytest.raises(EngineError, match=words):
            run.records()
    else:
        assert not run.complete and words in run.error, run.error
    assert runs["earlier"].complete and len(runs["earlier"].records()) == 14
    assert tree_digest(root / "earlier") == earlier


def test_every_page_renders_with_damaged_runs_in_the_store(app_env, finished_runs):
    shutil.copytree(finished_runs / "wanda-a", app_env.runs / "good")
    for i, (damage, _status, _words) in enumerate(v for k, v in RUN_DAMAGE.items() if k != "records.json damaged in place"):
        shutil.copytree(finished_runs / "magnitude-b", app_env.runs / f"bad-{i}")
        damage(app_env.runs / f"bad-{i}")
    at = new_app()
    no_exceptions(at)
    assert at.selectbox(key="current_run").options == ["good"] or at.session_state["current_run"] == "good"
    for page in ("layers", "sparsity", "masks", "perplexity", "runs"):
        at.switch_page(f"../pages/{page}.py").run()
        no_exceptions(at)
    table = at.dataframe[0].value.set_index("name")
    assert table.loc["good", "status"] == "✔ complete"
    bad = table.drop(index="good")
    assert len(bad) == 10 and not bad["status"].str.contains("complete").any()
    assert bad["perplexity"].isna().all() and (bad["error"] != "").all()


# --- corrupt inputs to a run: one sentence, nothing written -------------------------------------------

def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _set(state, key, index, value):
    state[key][index] = value


def bad_model_inputs(tiny: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    m = lambda name: _copy_model(tiny, tmp / name)  # noqa: E731
    no_weights, truncated, partial, bad_config, nan, inf = (m(n) for n in ("nw", "tr", "pa", "bc", "nan", "inf"))
    (no_weights / "model.safetensors").unlink()
    _truncate(truncated / "model.safetensors", 0.6)
    _edit_weights(partial, lambda s: s.pop("model.layers.1.mlp.down_proj.weight"))
    (bad_config / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    _edit_weights(nan, lambda s: _set(s, "model.layers.1.self_attn.q_proj.weight", (3, 5), float("nan")))
    _edit_weights(inf, lambda s: _set(s, "model.layers.0.mlp.up_proj.weight", (0, 0), float("-inf")))
    (tmp / "random.gguf").write_bytes(os.urandom(4096))
    (tmp / "empty.gguf").write_bytes(b"")
    shutil.copy(tiny / "model.safetensors", tmp / "renamed.gguf")
    (tmp / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(64))
    np.save(tmp / "oov.npy", np.full((4, 32), 10**7, dtype=np.int64))
    np.save(tmp / "negative.npy", np.full((4, 32), -3, dtype=np.int64))
    return {
        "model folder without weights": (["--model", str(no_weights)], "could not load a causal LM"),
        "truncated safetensors": (["--model", str(truncated)], "could not load a causal LM"),
        "weights missing a tensor": (["--model", str(partial)], "lack 1 of the model's tensors"),
        "corrupt config.json": (["--model", str(bad_config)], "could not load a causal LM"),
        "NaN weight": (["--model", str(nan)], "block 1 self_attn.q_proj: weight contains 1 NaN"),
        "Inf weight": (["--model", str(inf)], "block 0 mlp.up_proj: weight contains 1 Inf"),
        "random bytes named .gguf": (["--model", str(tmp / "random.gguf")], "is not a GGUF file"),
        "empty .gguf": (["--model", str(tmp / "empty.gguf")], "is not a GGUF file"),
        "safetensors named .gguf": (["--model", str(tmp / "renamed.gguf")], "is not a GGUF file"),
        "GGUF header, then garbage": (["--model", str(tmp / "cut.gguf")], "as a GGUF model"),
        "token ids beyond the vocabulary": (["--calib", str(tmp / "oov.npy")], "outside the tokenizer's vocabulary"),
        "negative token ids": (["--calib", str(tmp / "negative.npy")], "outside the tokenizer's vocabulary"),
    }


BAD_MODEL_CASES = [
    "model folder without weights", "truncated safetensors", "weights missing a tensor", "corrupt config.json",
    "NaN weight", "Inf weight", "random bytes named .gguf", "empty .gguf", "safetensors named .gguf",
    "GGUF header, then garbage", "token ids beyond the vocabulary", "negative token ids"]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, tiny_model_dir):
    return bad_model_inputs(tiny_model_dir, tmp_path_factory.mktemp("bad-inputs"))


@pytest.mark.parametrize("case", BAD_MODEL_CASES)
def test_corrupt_input_gets_one_clear_line_and_writes_nothing(case, bad_inputs, tiny_model_dir, tmp_path, capsys):
    from wanda_engine.cli.main import main

    args, expected = bad_inputs[case]
    base = {"--model": str(tiny_model_dir)}
    for flag in args[::2]:
        base.pop(flag, None)
    argv = ["prune", *[x for kv in base.items() for x in kv], *args, *FAST, "--eval", "none",
            "--out", str(tmp_path / "run"), "--save-model", str(tmp_path / "saved")]
    rc = main(argv)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "run").exists() and not (tmp_path / "saved").exists()


def test_bad_model_cases_are_all_listed(bad_inputs, tiny_model_dir, tmp_path):
    """Every bad input built above is run by the CLI test (listed for it), and each is refused by the
    engine itself, in `prepare`, before a run directory exists."""
    from wanda_engine.runner.execute import prepare

    assert sorted(bad_inputs) == sorted(BAD_MODEL_CASES)
    for case, (args, expected) in bad_inputs.items():
        given = dict(zip(args[::2], args[1::2]))
        request = RunRequest(model=given.get("--model", str(tiny_model_dir)), eval=None,
                             prune=PruneConfig(nsamples=4, seqlen=32, calib=given.get("--calib", "default")))
        with pytest.raises(EngineError) as refused:
            prepare(request)
        assert expected in str(refused.value), (case, str(refused.value))


# --- NaN / Inf: reported per layer, never propagated into masks or perplexities ---------------------------
# Contract (wanda_engine/pruning/pipeline.py and evaluate.py, owned by the lead): prune_model raises NumericalError
# naming the block index and the layer when a layer's weights or its calibration input statistics are not
# finite; perplexity raises NumericalError when the loss is not finite.

def _windows(n: int = 4, seqlen: int = 16) -> torch.Tensor:
    return torch.randint(0, 512, (n, seqlen), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["wanda", "magnitude"])
def test_nan_weight_stops_pruning_at_its_layer(method):
    from wanda_engine.pruning.pipeline import prune_model

    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.gate_proj.weight[2, 7] = float("nan")
    with pytest.raises(NumericalError, match=r"block 1 mlp\.gate_proj.*NaN"):
        prune_model(model, _windows(), PruneConfig(method=method, nsamples=4, seqlen=16))


def test_inf_activations_are_reported_with_their_layer():
    """A finite model whose activations overflow: block 1's MLP input norm scaled to 1e30 squares to Inf."""
    from wanda_engine.pruning.pipeline import prune_model

    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight.fill_(1e30)
    with pytest.raises(NumericalError, match=r"block 1 mlp\.(gate|up)_proj"):
        prune_model(model, _windows(), PruneConfig(method="wanda", nsamples=4, seqlen=16))


def test_nonfinite_perplexity_is_an_error_not_a_number():
    from wanda_engine.evaluation.perplexity import perplexity

    model = tiny_model("llama")
    with torch.no_grad():
        model.lm_head.weight[5, 0] = float("inf")
    with pytest.raises(NumericalError):
        perplexity(model, _windows(1, 64).view(1, -1), 32, "test")


def test_a_run_on_nan_weights_is_refused_before_anything_is_written(tiny_model_dir, tmp_path):
    from wanda_engine.inputs.models import load_model

    loaded = load_model(str(tiny_model_dir))
    with torch.no_grad():
        loaded.model.model.layers[0].self_attn.v_proj.weight[0, 0] = float("nan")
    with pytest.raises(NumericalError, match=r"block 0 self_attn\.v_proj: weight contains 1 NaN"):
        execute_run(tiny_request(str(tiny_model_dir), eval_windows=1), run_dir=tmp_path / "run", loaded=loaded)
    assert not (tmp_path / "run").exists()
