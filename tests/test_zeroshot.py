"""Zero-shot accuracy through lm-eval, offline: a tiny local multiple-choice task on a tiny model.

The accuracy the harness reports is checked against log-likelihoods computed here by hand with the
same model, on a task whose labels were chosen so the expected accuracy is known exactly.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from wanda_engine.config import PAPER_TASKS, PruneConfig, ZeroShotConfig  # noqa: E402
from wanda_engine.core.errors import ConfigError, DataError  # noqa: E402
from wanda_engine.evaluation.tasks import check_tasks, parse_tasks  # noqa: E402
from wanda_engine.evaluation.zeroshot import evaluate_zeroshot  # noqa: E402
from wanda_engine.store.run_record import RunRecord  # noqa: E402

TASK = "tiny_mc"
YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
"""
QUESTIONS = ["What colour is the sky", "Which animal barks", "What do bees make", "Where does the sun rise",
             "What is frozen water called", "Which month follows May", "What do cows drink", "Who wrote Emma",
             "What is two plus two", "Which metal is liquid", "What grows on trees", "Which planet is red"]
WORDS = ["blue", "a dog", "honey", "in the east", "ice", "June", "water", "Jane Austen", "four", "mercury",
         "apples", "Mars", "green", "the cat", "sugar", "west", "steam", "July", "milk", "Dickens"]
N_RIGHT = 6  # the first N_RIGHT questions are labelled with the model's own choice, the rest against it


def write_task(folder: Path, rows: list[dict], name: str = TASK, data: str = "data.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / data).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(YAML.format(name=name, data=data))  # data path relative to the YAML
    return folder


def choice_logliks(model, tokenizer, question: str, choices: list[str]) -> list[float]:
    """Sum of log p(choice tokens | prompt), split as lm-eval splits context and continuation."""
    context = f"Question: {question}\nAnswer:"
    ctx = tokenizer.encode(context)
    out = []
    for choice in choices:
        whole = tokenizer.encode(context + " " + choice)
        assert whole[:len(ctx)] == ctx
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
        out.append(sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
    return out


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from wanda_engine.inputs.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def known_task(tiny, tmp_path_factory):
    """A 12-question task (2-4 choices each) with labels set from hand-computed log-likelihoods.

    Returns (folder, expected acc, expected acc_norm)."""
    rows, norm_hits = [], []
    for i, q in enumerate(QUESTIONS):
        k = 2 + i % 3
        choices = [WORDS[(i + 7 * j) % len(WORDS)] for j in range(k)]
        ll = choice_logliks(tiny.model, tiny.tokenizer, q, choices)
        norm = [v / len(c) for v, c in zip(ll, choices)]
        for scores in (ll, norm):  # a clear winner, so batching noise in the harness cannot flip it
            top = sorted(scores, reverse=True)
            assert top[0] - top[1] > 1e-3, (q, scores)
        best, worst = max(range(k), key=ll.__getitem__), min(range(k), key=ll.__getitem__)
        label = best if i < N_RIGHT else worst
        rows.append({"question": q, "choices": choices, "label": label})
        norm_hits.append(max(range(k), key=norm.__getitem__) == label)
    folder = write_task(tmp_path_factory.mktemp("tasks"), rows)
    return folder, N_RIGHT / len(rows), sum(norm_hits) / len(rows)


# --- configuration ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    ({"tasks": ()}, "tasks"), ({"tasks": ("boolq", "boolq")}, "tasks"), ({"tasks": (" boolq",)}, "tasks"),
    ({"limit": 0}, "limit"), ({"limit": True}, "limit"), ({"num_fewshot": -1}, "num_fewshot"),
    ({"batch_size": 0}, "batch_size"), ({"task_dir": ""}, "task_dir"),
])
def test_config_refuses_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ZeroShotConfig(**kwargs)


def test_config_defaults_and_round_trip():
    cfg = ZeroShotConfig()
    assert cfg.tasks == PAPER_TASKS == ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                                        "openbookqa")
    assert ZeroShotConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert parse_tasks("paper") == PAPER_TASKS
    assert parse_tasks("rte, my_task,rte") == ("rte", "my_task")


# --- evaluation ---------------------------------------------------------------------------------------

def test_local_task_gives_the_hand_computed_accuracy(tiny, known_task):
    folder, acc, acc_norm = known_task
    cfg = ZeroShotConfig(tasks=(TASK,), task_dir=str(folder), batch_size=4)
    plans = check_tasks(cfg)
    assert plans[0].local and plans[0].files == (str((folder / "data.jsonl").resolve()),)
    weights = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    pad = tiny.tokenizer.pad_token
    out = evaluate_zeroshot(tiny.model, tiny.tokenizer, cfg, "cpu", plans)
    import lm_eval

    assert out["harness"] == lm_eval.__version__
    assert out["tasks"] == [TASK] and out["limit"] is None and out["num_fewshot"] == 0 and out["seconds"] > 0
    r = out["results"][TASK]
    assert r["n"] == len(QUESTIONS)
    assert 0 <= r["acc"] <= 1 and 0 <= r["acc_norm"] <= 1
    assert r["acc"] == pytest.approx(acc, abs=1e-9)  # 6 of 12 right by construction
    assert r["acc_norm"] == pytest.approx(acc_norm, abs=1e-9)
    assert r["acc_stderr"] > 0 and r["dataset"].startswith("local:")
    assert all(torch.equal(v, tiny.model.state_dict()[k]) for k, v in weights.items())  # the model is untouched
    assert tiny.tokenizer.pad_token == pad  # the harness got a copy of the tokenizer

    limited = evaluate_zeroshot(tiny.model, tiny.tokenizer, ZeroShotConfig(tasks=(TASK,), task_dir=str(folder), limit=4),
                                "cpu")
    assert limited["results"][TASK]["n"] == 4 and limited["limit"] == 4
    assert limited["results"][TASK]["acc"] == 1.0  # the first questions are labelled with the model's choice


def test_unknown_task_is_a_config_error_naming_close_ones(known_task):
    folder = known_task[0]
    with pytest.raises(ConfigError, match=r"'tiny_mcq' is not an lm-eval task.*tiny_mc"):
        check_tasks(ZeroShotConfig(tasks=("tiny_mcq",), task_dir=str(folder)))
    with pytest.raises(ConfigError, match="close names: .*boolq"):
        check_tasks(ZeroShotConfig(tasks=("boolk",)))


def test_hub_task_offline_fails_fast_pointing_to_local_tasks(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(DataError, match=r"'boolq' needs its data .* Hugging Face hub.*task_dir"):
        check_tasks(ZeroShotConfig())
    assert time.perf_counter() - t < 10


def test_missing_task_folder_or_data_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="task_dir"):
        check_tasks(ZeroShotConfig(tasks=(TASK,), task_dir=str(tmp_path / "nowhere")))
    folder = write_task(tmp_path / "t", [{"question": "q", "choices": ["a", "b"], "label": 0}])
    (folder / "data.jsonl").unlink()
    with pytest.raises(DataError, match="data file 'data.jsonl' does not exist"):
        check_tasks(ZeroShotConfig(tasks=(TASK,), task_dir=str(folder)))


def test_without_lm_eval_the_error_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` raise ImportError
    with pytest.raises(DataError, match=r"pip install 'lm-eval\[hf\]=="):
        check_tasks(ZeroShotConfig(tasks=(TASK,)))


# --- runs: CLI and app ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_run_records_dense_and_pruned_zeroshot(capsys, tiny_model_dir, known_task, tmp_path, monkeypatch):
    from wanda_engine.cli.main import main

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    folder = known_task[0]
    args = ["prune", "--model", str(tiny_model_dir), "--nsamples", "4", "--seqlen", "32", "--eval", "none", "--quiet",
            "--tasks", TASK, "--task-dir", str(folder), "--zeroshot-limit", "8"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = json.loads((tmp_path / "a" / "run.json").read_text())
    zs = meta["zeroshot"]
    assert zs["config"] == {"tasks": [TASK], "task_dir": str(folder), "limit": 8, "num_fewshot": 0, "batch_size": 8}
    assert meta["config"]["zeroshot"] == zs["config"]
    assert zs["harness"] and zs["dense_cached"] is False
    for which in ("dense", "pruned"):
        r = zs[which]["results"][TASK]
        assert r["n"] == 8 and 0 <= r["acc"] <= 1 and 0 <= r["acc_norm"] <= 1
    assert zs["dense"]["results"][TASK]["acc"] == pytest.approx(6 / 8)  # the dense model is the one labels came from
    assert summary["zeroshot"][TASK]["pruned"] == zs["pruned"]["results"][TASK]["acc"]
    assert {"zeroshot_s", "zeroshot_dense_s"} <= set(meta["timings"])
    # the typed record reads the runner's run.json and writes it back byte for byte
    record = RunRecord.from_json(meta)
    assert record.zeroshot.pruned.value(TASK, "acc") == zs["pruned"]["results"][TASK]["acc"]
    assert json.dumps(record.to_json(), indent=1) == (tmp_path / "a" / "run.json").read_text()

    # the same model and tasks again: the dense results come from the cache
    assert main(args + ["--out", str(tmp_path / "b"), "--method", "magnitude"]) == 0
    again = json.loads((tmp_path / "b" / "run.json").read_text())["zeroshot"]
    assert again["dense_cached"] is True and again["dense"] == zs["dense"]

    # a hub task offline: refused in seconds, before any run directory is written
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    t = time.perf_counter()
    assert main(args[:-6] + ["--tasks", "paper", "--out", str(tmp_path / "c")]) == 1
    assert "needs its data" in capsys.readouterr().err and time.perf_counter() - t < 10
    assert not (tmp_path / "c").exists()


def test_prune_form_turns_zeroshot_on_only_when_tasks_are_chosen(known_task, tmp_path):
    from app import forms
    from wanda_engine.store.run_store import RunStore

    store = RunStore(tmp_path / "runs")
    assert forms.build_request({}, store).zeroshot is None
    folder = known_task[0]
    req = forms.build_request({"zs_tasks": [TASK], "zs_task_dir": str(folder), "zs_limit": 5}, store)
    assert req.zeroshot == ZeroShotConfig(tasks=(TASK,), task_dir=str(folder.resolve()), limit=5)
    assert req.to_dict()["zeroshot"]["tasks"] == [TASK]
    with pytest.raises(ConfigError, match="task folder"):
        forms.build_request({"zs_tasks": [TASK], "zs_task_dir": str(tmp_path / "nowhere")}, store)


@pytest.fixture
def zeroshot_runs(runs_dir, tiny_model_dir, known_task, tmp_path, monkeypatch):
    """Two finished runs (magnitude, then wanda) with zero-shot results, in a fresh run store."""
    from wanda_engine.config import RunRequest
    from wanda_engine.runner.execute import execute_run

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zc = ZeroShotConfig(tasks=(TASK,), task_dir=str(known_task[0]))
    for method in ("magnitude", "wanda"):
        execute_run(RunRequest(model=str(tiny_model_dir), prune=PruneConfig(method=method, nsamples=4, seqlen=32),
                               eval=None, zeroshot=zc, name=f"zs-{method}"))
    return runs_dir


def test_zeroshot_page_shows_table_and_bars_for_both_runs(zeroshot_runs):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from wanda_engine.outputs import figures

    st.cache_resource.clear()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="f_zs_tasks").value == []  # zero-shot is off by default on the Prune page
    at = at.switch_page("../pages/zeroshot.py").run()
    assert not at.exception, [e.value for e in at.exception]
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    assert len(specs) == 1 and "Zero-shot accuracy" in specs[0]["layout"]["title"]["text"]
    names = [tr["name"] for tr in specs[0]["data"]]
    assert names[0] == "dense" and len(names) == 3  # dense, magnitude, wanda
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 2  # one row per run (one task, acc)
    captions = " ".join(c.value for c in at.caption)
    assert "lm-eval" in captions and f"{TASK} (n={len(QUESTIONS)})" in captions
    at.radio(key="zs_metric").set_value("acc_norm").run()
    assert not at.exception

    # the table and the Runs page's export use the same pure functions
    from wanda_engine.store.run_store import RunStore

    table = figures.zeroshot_table([r.record for r in RunStore(zeroshot_runs).list()])
    assert set(table["metric"]) == {"acc", "acc_norm"} and len(table) == 4
    row = table[(table["metric"] == "acc") & (table["run"] == "zs-wanda")].iloc[0]
    assert row["delta"] == pytest.approx(row["pruned"] - row["dense"]) and row["n"] == len(QUESTIONS)
    from app.runs_table import build_figure

    run = RunStore(zeroshot_runs).list()[0]
    assert build_figure("zeroshot", run, None, None, []).data
    st.cache_resource.clear()
