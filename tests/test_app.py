"""The Streamlit app: every page renders, a comparison runs end to end on a tiny model, bad input shows one
sentence, and the background job runner queues, cancels and never mutates the cached dense model."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from wanda_engine.config import EvalConfig, PruneConfig, RunRequest  # noqa: E402
from wanda_engine.core.events import BlockFinished  # noqa: E402
from wanda_engine.runner.execute import execute_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "app" / "main.py"
PAGES = ["prune", "shrink", "explain", "layers", "sparsity", "masks", "perplexity", "sweep", "zeroshot", "generate",
         "runs"]


def new_app() -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    return at.run()


def goto(at: AppTest, page: str) -> AppTest:
    return at.switch_page(f"../pages/{page}.py").run()


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def charts(at: AppTest) -> list[dict]:
    """The figure JSON of every plotly chart on the page."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def chart_titles(at: AppTest) -> list[str]:
    out = []
    for spec in charts(at):
        title = spec.get("layout", {}).get("title", {})
        out.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return out


def use_tiny_model(at: AppTest, model_dir: Path) -> AppTest:
    at.radio(key="f_model_kind").set_value("folder").run()
    at.text_input(key="f_model_text").set_value(str(model_dir))
    at.number_input(key="f_nsamples").set_value(4)
    at.number_input(key="f_seqlen").set_value(64)
    at.number_input(key="f_eval_seqlen").set_value(64)
    at.number_input(key="f_eval_windows").set_value(2)
    return at.run()


def wait_jobs(at: AppTest, timeout: float = 120) -> AppTest:
    """Rerun the app (as the polling fragment would) until the shared runner is idle."""
    from app import ui

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        no_exceptions(at)
        if not ui.job_runner().busy:
            return at.run().run()  # the finished batch selects its runs, then the page reloads
        time.sleep(0.5)
    raise AssertionError("jobs did not finish in time")


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


# --- pages ------------------------------------------------------------------------------------------

def test_every_page_renders_with_no_runs(app_env):
    at = new_app()
    no_exceptions(at)
    assert "Prune" in at.title[0].value
    assert any("Compare magnitude vs Wanda" in b.label for b in at.button)
    for page in PAGES:
        goto(at, page)
        no_exceptions(at)
        assert at.title, page


@pytest.mark.slow
def test_compare_preset_runs_both_and_every_page_shows_them(app_env):
    at = use_tiny_model(new_app(), app_env.model)
    at.button(key="b_compare").click().run()
    no_exceptions(at)
    from app import ui

    runner = ui.job_runner()
    assert runner.busy
    (batch,) = at.session_state["_batches"].values()  # the two runs the click submitted, magnitude first
    assert [runner.job(i).request.prune.method for i in batch["jobs"]] == ["magnitude", "wanda"]
    # one at a time: right after the click the second job waits in the queue behind the first
    assert runner.job(batch["jobs"][1]).status == "queued"
    at = wait_jobs(at)
    assert not errors(at), errors(at)
    first, second = (runner.job(i) for i in batch["jobs"])
    assert first.status == second.status == "complete", (first, second)
    assert second.started >= first.finished  # it ran after the first, never beside it

    # the finished comparison is selected: Wanda current, magnitude compare
    cur, cmp = at.session_state["current_run"], at.session_state["compare_run"]
    assert "wanda" in cur and "magnitude" in cmp
    assert any("Magnitude vs Wanda" in h.value for h in at.header)
    assert any(m.label == "Dense model perplexity" for m in at.metric)
    titles = chart_titles(at)
    assert any("Perplexity" in t for t in titles) and any("activation norms" in t for t in titles), titles
    bars = next(s for s in charts(at) if "Perplexity" in s["layout"]["title"]["text"])
    assert "dense" in bars["data"][0]["x"]
    assert any("windows" in c.value for c in at.caption)  # numbers say what they were measured on

    for page, expect in [("layers", ["activation norms"]), ("sparsity", ["parsity"]),
                         ("masks", ["activation norms"]), ("perplexity", ["Perplexity", "Perplexity versus"]),
                         ("runs", [])]:
        goto(at, page)
        no_exceptions(at)
        titles = chart_titles(at)
        for needle in expect:
            assert any(needle in t for t in titles), (page, needle, titles)
        if page in ("layers", "sparsity", "masks"):
            assert len(titles) >= 2, (page, titles)

    df = at.dataframe[0].value
    assert set(df["name"]) == {cur, cmp}
    assert all(s == "✔ complete" for s in df["status"])
    assert set(df["method"]) == {"magnitude", "wanda"}
    assert (df["perplexity"] > 0).all()
    # export: the data behind the figure is offered as CSV and JSON
    labels = [b.proto.label for b in at.get("download_button")]
    assert any("CSV" in lab for lab in labels) and any("JSON" in lab for lab in labels), labels

    # save the pruned model: re-runs the current run with a folder to save into
    target = app_env.runs / ".saved-models" / "saved-model"  # only inside the store's saved-models folder
    at.text_input(key="save_folder").set_value(str(target))
    next(b for b in at.button if b.label == "Re-run and save").click().run()
    no_exceptions(at)
    assert any("Queued" in s.value for s in at.success), errors(at)
    at = wait_jobs(at)
    assert (target / "config.json").is_file() and any(target.glob("*.safetensors"))
    saved = [r for r in ui.all_runs() if r.record and r.record.saved_model]
    assert len(saved) == 1 and saved[0].complete and saved[0].record.request.prune.method == "wanda"
    at.session_state["current_run"] = cur  # back to the comparison for the steps below
    at.session_state["compare_run"] = cmp
    goto(at, "runs")
    # rename (a bad name is refused with one sentence), then delete
    at.selectbox(key="manage_run").set_value(cmp).run()
    at.text_input(key="manage_new_name").set_value("../evil").run()
    at.button(key="b_rename").click().run()
    assert any("is not allowed" in e for e in errors(at)), errors(at)
    at.text_input(key="manage_new_name").set_value("magnitude-renamed").run()
    at.button(key="b_rename").click().run()
    no_exceptions(at)
    assert {cur, "magnitude-renamed"} <= set(at.dataframe[0].value["name"]) and cmp not in set(at.dataframe[0].value["name"])
    assert at.session_state["compare_run"] == "magnitude-renamed"
    at.selectbox(key="manage_run").set_value("magnitude-renamed").run()
    at.checkbox(key="manage_confirm").check().run()
    at.button(key="b_delete").click().run()
    no_exceptions(at)
    assert "magnitude-renamed" not in set(at.dataframe[0].value["name"]) and cur in set(at.dataframe[0].value["name"])
    assert at.session_state["compare_run"] != "magnitude-renamed"  # a deleted run is never selected

    # switching pages kept the selection and the Prune settings
    goto(at, "prune")
    assert at.session_state["current_run"] == cur
    assert at.radio(key="f_model_kind").value == "folder"
    assert at.number_input(key="f_nsamples").value == 4


# --- bad input: one sentence, app still usable ---------------------------------------------------

@pytest.mark.slow  # AppTest runs jobs in the worker process
def test_impossible_nm_pattern_is_refused_at_once(app_env):
    at = use_tiny_model(new_app(), app_env.model)
    at.selectbox(key="f_pattern").set_value("custom").run()
    at.text_input(key="f_custom_nm").set_value("4:2").run()
    at.button(key="b_run").click().run()
    no_exceptions(at)
    assert any("N:M needs 0 < N < M" in e for e in errors(at)), errors(at)
    from app import ui

    assert not ui.job_runner().busy
    # still usable: a valid pattern that does not divide the width fails in the job with one sentence
    at.text_input(key="f_custom_nm").set_value("3:7").run()
    at.button(key="b_run").click().run()
    at = wait_jobs(at, 60)
    assert any("does not divide" in e for e in errors(at)), errors(at)
    assert any(t.value == "Prune a language model" for t in at.title)


@pytest.mark.slow
def test_unknown_hub_model_offline_fails_with_one_sentence(app_env):
    at = new_app()
    at.radio(key="f_model_kind").set_value("hf").run()
    at.text_input(key="f_model_text").set_value("nobody-here/no-such-model-xyz")
    at.button(key="b_run").click().run()
    at = wait_jobs(at, 60)
    errs = errors(at)
    assert any("no-such-model-xyz" in e and "local Hugging Face cache" in e for e in errs), errs
    # an empty id is caught before anything is queued
    at.text_input(key="f_model_text").set_value("")
    at.button(key="b_run").click().run()
    assert any("enter a Hugging Face model id" in e for e in errors(at)), errors(at)


@pytest.mark.parametrize("content, needle", [(b"", "is empty"), (b"\x89PNG\r\n\x1a\n\x00\x00\x00binary", "binary")])
def test_bad_calibration_upload_is_refused(app_env, content, needle):
    at = use_tiny_model(new_app(), app_env.model)
    at.selectbox(key="f_calib").set_value("upload").run()
    at.file_uploader[0].upload("notes.txt", content, "text/plain").run()
    at.button(key="b_run").click().run()
    no_exceptions(at)
    assert any(needle in e for e in errors(at)), errors(at)
    from app import ui

    assert not ui.job_runner().busy


def test_text_upload_is_saved_sanitised_under_uploads(app_env):
    from app import forms
    from wanda_engine.store.run_store import RunStore

    store = RunStore()
    path = forms.save_upload(forms.Upload("../../etc/my notes?.txt", b"Some calibration text.\n" * 10), store)
    assert path.parent == store.root / ".uploads" and path.is_file()
    assert ".." not in path.name and " " not in path.name and path.name.endswith("my_notes.txt")
    with pytest.raises(Exception, match="limit is 50 MB"):
        forms.save_upload(forms.Upload("big.txt", b"a" * (forms.MAX_UPLOAD_BYTES + 1)), store)
    # the run store does not list the uploads folder as a run
    assert store.list() == []


# --- the job runner (no browser, no Streamlit) -------------------------------------------------------

def _tiny_request(method: str = "wanda", model: str = "tiny", **kw) -> RunRequest:
    return RunRequest(model=model, prune=PruneConfig(method=method, nsamples=4, seqlen=32, **kw),
                      eval=EvalConfig(seqlen=32, windows=1))


def test_runner_cancel_leaves_cached_model_unchanged(runs_dir, tiny_model_dir, tmp_path, monkeypatch):
    from app.execution import InProcess
    from app.jobs import JobRunner
    from app.messages import JobStatus
    from helpers.checks import parameter_checksum
    from wanda_engine.inputs.models import load_model
    from wanda_engine.store.run_store import RunStore

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    cached = load_model(str(tiny_model_dir))
    before = parameter_checksum(cached.model)

    def execute_then_cancel(request, **kw):  # cancel as soon as the first block is pruned
        on_event, cancel = kw["on_event"], kw["cancel"]

        def spy(event):
            on_event(event)
            if isinstance(event, BlockFinished) and request.prune.method == "wanda":
                cancel.set()
        return execute_run(request, **{**kw, "on_event": spy})

    runner = JobRunner(InProcess(lambda request: cached, execute_then_cancel))
    try:
        cancelled = runner.submit(_tiny_request("wanda", str(tiny_model_dir)), owner="a")
        finished = runner.submit(_tiny_request("magnitude", str(tiny_model_dir)), owner="b")
        assert runner.wait_idle(120)
        assert runner.job(cancelled.id).status == JobStatus.CANCELLED
        assert "cancelled after 1 of 2 blocks" in runner.job(cancelled.id).error
        assert runner.job(finished.id).status == JobStatus.COMPLETE, runner.job(finished.id).error
        assert parameter_checksum(cached.model) == before  # pruned copies only
        runs = {r.name: r for r in RunStore().list()}
        assert runs[runner.job(cancelled.id).run_name].status == "cancelled"
        assert runs[runner.job(finished.id).run_name].complete
        blocks = runner.job(finished.id).blocks
        assert [b.block for b in blocks] == [0, 1]
    finally:
        runner.close()


def test_runner_queues_a_second_job_and_reports_progress():
    from app.execution import InProcess
    from app.jobs import JobRunner
    from app.messages import JobStatus
    from wanda_engine.core.events import BlockStarted, MatrixPruned, StageStarted

    release = threading.Event()
    started = threading.Event()

    def fake_execute(request, **kw):
        on_event = kw["on_event"]
        on_event(StageStarted(0.0, "prune", "x"))
        on_event(BlockStarted(0.1, 0, 4))
        on_event(MatrixPruned(0.2, 0, 4, "self_attn.q_proj", 0.5))
        started.set()
        assert release.wait(10)
        on_event(BlockFinished(0.3, 0, 4, 0.5, 0.01, 0.5))
        return SimpleNamespace(name=request.name)

    runner = JobRunner(InProcess(lambda request: SimpleNamespace(label="fake model"), fake_execute),
                       store_factory=lambda: SimpleNamespace(new_name=lambda stem: f"run-{time.monotonic_ns()}"))
    try:
        first = runner.submit(_tiny_request("wanda"), owner="session-a")
        second = runner.submit(_tiny_request("magnitude"), owner="session-b")
        third = runner.submit(_tiny_request("magnitude"), owner="session-b")
        assert started.wait(10)
        cur = runner.current()
        assert cur.id == first.id and cur.status == JobStatus.RUNNING and cur.owner == "session-a"
        assert cur.stage == "prune" and cur.block == 0 and cur.num_blocks == 4
        assert cur.matrix == "self_attn.q_proj" and 0 <= cur.prune_fraction < 0.25
        assert [j.id for j in runner.queued()] == [second.id, third.id]
        assert all(j.status == JobStatus.QUEUED for j in runner.queued())
        assert runner.cancel(third.id)  # a queued job is removed at once
        assert [j.id for j in runner.queued()] == [second.id]
        release.set()
        assert runner.wait_idle(20)
        assert runner.job(first.id).status == JobStatus.COMPLETE
        assert runner.job(second.id).status == JobStatus.COMPLETE
        assert runner.job(third.id).status == JobStatus.CANCELLED
        assert runner.job(first.id).blocks[0].block_error == 0.01
    finally:
        release.set()
        runner.close()


def test_runner_survives_a_failing_job():
    from app.execution import InProcess
    from app.jobs import JobRunner
    from app.messages import JobStatus
    from wanda_engine.core.errors import ModelLoadError

    def loader(request):
        if request.model == "broken":
            raise ModelLoadError("model 'broken' is not there")
        return SimpleNamespace(label="ok")

    runner = JobRunner(InProcess(loader, lambda request, **kw: SimpleNamespace(name="done")),
                       store_factory=lambda: SimpleNamespace(new_name=lambda stem: "x"))
    try:
        bad = runner.submit(RunRequest(model="broken", prune=PruneConfig()), owner="s")
        good = runner.submit(RunRequest(model="fine", prune=PruneConfig()), owner="s")
        assert runner.wait_idle(10)
        assert runner.job(bad.id).status == JobStatus.FAILED and runner.job(bad.id).error == "model 'broken' is not there"
        assert runner.job(good.id).status == JobStatus.COMPLETE
    finally:
        runner.close()


def test_busy_server_shows_whose_run_and_queues_another(app_env, monkeypatch):
    """A second session sees who runs what, with progress, and its own run waits in the queue."""
    from app import ui
    from app.execution import InProcess
    from app.jobs import JobRunner
    from wanda_engine.core.events import BlockStarted, MatrixPruned, StageStarted

    release, started = threading.Event(), threading.Event()

    def slow_execute(request, **kw):
        kw["on_event"](StageStarted(0.0, "prune", "x"))
        kw["on_event"](BlockStarted(0.1, 2, 30))
        kw["on_event"](MatrixPruned(0.2, 2, 30, "mlp.up_proj", 0.5))
        started.set()
        release.wait(30)
        return SimpleNamespace(name=request.name)

    runner = JobRunner(InProcess(lambda request: SimpleNamespace(label="fake"), slow_execute),
                       store_factory=lambda: SimpleNamespace(new_name=lambda stem: f"r{time.monotonic_ns()}"))
    monkeypatch.setattr(ui, "job_runner", lambda: runner)
    try:
        running = runner.submit(_tiny_request("wanda"), owner="0123456789abcdef-other-session", label="wanda 50%")
        assert started.wait(10)
        at = new_app()
        no_exceptions(at)
        text = " ".join(m.value for m in at.markdown)
        assert "started by another session (01234567)" in text, text
        assert any("block 3/30" in p.proto.text and "mlp.up_proj" in p.proto.text for p in at.get("progress"))
        assert at.button(key="b_run").label.startswith("Run (queue)")
        at.button(key="b_run").click().run()
        no_exceptions(at)
        assert len(runner.queued()) == 1 and runner.queued()[0].owner != "0123456789abcdef-other-session"
        assert any("Queued:" in m.value for m in at.markdown)
        at.button(key=f"cancel_{running.id}").click().run()  # anyone may stop the running job
        no_exceptions(at)
        assert runner.current().cancel_requested
        assert any("Cancelling" in c.value for c in at.caption)
    finally:
        release.set()
        runner.wait_idle(10)
        runner.close()


def test_runner_estimates_time_left_from_its_own_pace():
    from app.execution import InProcess
    from app.jobs import JobRunner
    from wanda_engine.core.events import BlockStarted, MatrixPruned, StageStarted

    release, halfway = threading.Event(), threading.Event()

    def fake_execute(request, **kw):
        emit = kw["on_event"]
        emit(StageStarted(0.0, "prune", "x"))
        for b in range(2):
            emit(BlockStarted(0.0, b, 4))
            emit(MatrixPruned(0.0, b, 4, "q", 0.5))
            time.sleep(0.2)
            emit(BlockFinished(0.0, b, 4, 0.5, 0.01, 0.5))
        halfway.set()
        release.wait(10)
        return SimpleNamespace(name=request.name)

    runner = JobRunner(InProcess(lambda request: SimpleNamespace(label="fake"), fake_execute),
                       store_factory=lambda: SimpleNamespace(new_name=lambda stem: f"r{time.monotonic_ns()}"))
    try:
        runner.submit(_tiny_request("wanda"), owner="s")
        assert halfway.wait(10)
        cur = runner.current()
        assert cur.prune_fraction == 0.5
        # half the blocks took ~0.4 s: about as long again for the rest, evaluation not yet known
        assert 0.2 < cur.time_left_s < 2.0 and cur.time_left_partial, cur
    finally:
        release.set()
        runner.wait_idle(10)
        runner.close()


def test_the_server_renders_the_prune_page_without_torch():
    """The Streamlit server never loads torch for the first page (its first load takes seconds); only the
    worker process does."""
    import subprocess
    import sys

    code = ("import sys; import app.ui, app.progress, app.forms, app.overview, wanda_engine.evaluation.tasks; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_no_page_pulls_torch_into_the_server():
    """Every import statement of the pages and the app's server-side helpers, run together in a fresh process: no
    torch (the Sweep page plans and lists sweeps, the Shrink page draws the frontier, all from records; only the
    worker process loads models)."""
    import ast
    import subprocess
    import sys

    statements = set()
    for path in [*(REPO / "pages").glob("*.py"), *(REPO / "app").glob("*.py")]:
        if path.name in ("worker.py", "execution.py"):  # the worker process's side: it loads the models
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in ("app",
                                                                                                    "wanda_engine"):
                statements.add(ast.unparse(node))
    assert "from wanda_engine.sweep import grid as sw" in statements
    code = "\n".join(["import sys", *sorted(statements),
                      "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"])
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
