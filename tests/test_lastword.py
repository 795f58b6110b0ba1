"""Issue 19 item 11: a zero-shot task built from text the project has (last-word prediction on held-out passages of
Pride and Prejudice), its accuracy against a hand computation, and scoring runs that already exist (their pruned
model re-created from the record, the mask checked), offline."""
from __future__ import annotations

import json
import re
import socket

import pytest
import torch

from wanda_engine.config import EvalConfig, PruneConfig, RunRequest, ScoreRequest, ZeroShotConfig
from wanda_engine.core.errors import ConfigError, EngineError
from wanda_engine.evaluation import lastword
from wanda_engine.evaluation.tasks import LASTWORD_TASK, check_tasks
from wanda_engine.inputs.data import load_text

pytest.importorskip("lm_eval")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the task reached for the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)


# --- the passages -------------------------------------------------------------------------------------------
def test_the_passages_are_held_out_last_words_drawn_with_a_fixed_seed():
    text, label = load_text("default", "eval")
    assert label == "austen:prideprejudice"
    items = lastword.passages(text)
    assert len(items) == lastword.PASSAGES and items == lastword.passages(text)  # the same every time
    assert items != lastword.passages(text, seed=1)
    assert [p.offset for p in items] == sorted(p.offset for p in items)
    for p in items:
        assert p.offset >= len(text) // 2  # the second half: the perplexity windows read the beginning
        paragraph = " ".join(re.split(r"\n\s*\n", text[p.offset:], maxsplit=1)[0].split())
        assert paragraph.startswith(p.context + p.target), p  # the context, then the word, as the novel has them
        assert re.fullmatch(r"[^\sA-Za-z0-9]*", paragraph[len(p.context + p.target):]), p  # then punctuation only
        assert re.fullmatch(r" [A-Za-z]{3,}", p.target) and not p.context.endswith(" ")
        assert lastword.MIN_WORDS <= len(paragraph.split(" ")) <= lastword.MAX_WORDS


def test_the_task_is_written_under_the_cache_once_and_never_downloaded(cache, no_network):
    yaml = lastword.ensure_task()
    assert yaml == cache / "tasks" / LASTWORD_TASK / f"{LASTWORD_TASK}.yaml"
    lines = yaml.with_suffix(".jsonl").read_text().splitlines()
    assert len(lines) == lastword.PASSAGES and set(json.loads(lines[0])) == {"context", "target", "offset"}
    stamp = yaml.stat().st_mtime_ns
    assert lastword.ensure_task() == yaml and yaml.stat().st_mtime_ns == stamp  # written once
    (plan,) = check_tasks(ZeroShotConfig(tasks=(LASTWORD_TASK,)))
    assert plan.local and plan.yaml_path == str(yaml) and plan.dataset.endswith(f"{LASTWORD_TASK}.jsonl")
    manifest = yaml.parent / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 0}))
    lastword.ensure_task()  # another selection recorded: written again
    assert json.loads(manifest.read_text())["version"] == lastword.VERSION


# --- the accuracy against a hand computation ------------------------------------------------------------------
def _steered_tiny_model(tokenizer, yes: int, no: int):
    """A tiny random LLaMA whose next token is always `yes` or `no`: the final norm keeps one coordinate h₀ of the
    hidden state and the head maps it to +h₀ for `yes`, −h₀ for `no`, 0 for every other token."""
    from conftest import tiny_model

    model = tiny_model("llama", vocab_size=len(tokenizer), seed=4)
    with torch.no_grad():
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[yes, 0], model.lm_head.weight[no, 0] = 1.0, -1.0
    return model


def _greedy_by_hand(model, tokenizer, items) -> list[bool]:
    """Each passage's answer as lm-eval defines it, computed plainly: the continuation's tokens (the passage with its
    word, less the passage's own tokens) are each the argmax of the logits before them."""
    hits = []
    with torch.no_grad():
        for p in items:
            context = tokenizer(p.context, add_special_tokens=False).input_ids
            whole = tokenizer(p.context + p.target, add_special_tokens=False).input_ids
            word = whole[len(context):]
            logits = model(torch.tensor([context + word[:-1]])).logits[0, len(context) - 1:]
            hits.append(logits.argmax(-1).tolist() == word)
    return hits


def test_the_tasks_accuracy_is_the_hand_computed_one_on_a_tiny_case(tiny_model_dir, tmp_path, cache):
    from transformers import AutoTokenizer

    from wanda_engine.evaluation.zeroshot import evaluate_zeroshot

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    yes, no = (tokenizer(w, add_special_tokens=False).input_ids for w in (" the", " and"))
    assert len(yes) == len(no) == 1
    model = _steered_tiny_model(tokenizer, yes[0], no[0])
    novel = lastword.passages(load_text("default", "eval")[0], count=10)
    items = [lastword.Passage(p.context, " the" if i % 2 else " and", p.offset) for i, p in enumerate(novel)]
    hits = _greedy_by_hand(model, tokenizer, items)
    assert 0 < sum(hits) < len(hits), hits  # the case tells right from wrong answers
    folder = tmp_path / "tasks"
    lastword.write_task(folder, "tiny_lastword", items, "ten passages, the word steered")
    out = evaluate_zeroshot(model, tokenizer, ZeroShotConfig(tasks=("tiny_lastword",), task_dir=str(folder)), "cpu")
    result = out["results"]["tiny_lastword"]
    assert result["n"] == len(items) and result["acc"] == pytest.approx(sum(hits) / len(hits))


@pytest.mark.slow  # the embedded model on 40 passages of the real task: about a minute
def test_the_real_task_on_the_embedded_model_against_the_hand_computation(embedded, cache, no_network):
    from wanda_engine.evaluation.zeroshot import evaluate_zeroshot

    yaml = lastword.ensure_task()
    items = [lastword.Passage(**json.loads(line)) for line in yaml.with_suffix(".jsonl").read_text().splitlines()]
    hits = _greedy_by_hand(embedded.model, embedded.tokenizer, items[:40])
    out = evaluate_zeroshot(embedded.model, embedded.tokenizer, ZeroShotConfig(tasks=(LASTWORD_TASK,), limit=40), "cpu")
    result = out["results"][LASTWORD_TASK]
    assert result["n"] == 40 and result["acc"] == pytest.approx(sum(hits) / 40)
    assert 0.05 < result["acc"] < 0.95, result  # a real model gets some right and some wrong
    print(f"\nSmolLM2-135M dense on {LASTWORD_TASK}, first 40 passages: acc {result['acc']:.3f}")


# --- scoring a run that exists ------------------------------------------------------------------------------
@pytest.fixture
def tiny_run(tiny_model_dir, tmp_path, cache):
    from wanda_engine.runner.execute import execute_run

    return execute_run(RunRequest(model=str(tiny_model_dir), prune=PruneConfig(nsamples=2, seqlen=32),
                                  eval=EvalConfig(seqlen=32, windows=2)), run_dir=tmp_path / "runs" / "tiny-wanda")


def test_an_existing_run_is_scored_from_its_re_created_model_and_bad_requests_write_nothing(tiny_run, no_network,
                                                                                             monkeypatch):
    from wanda_engine.runner import recreate
    from wanda_engine.runner.score import score_run
    from wanda_engine.store.run_store import atomic_write_json, load_run

    before, run_json = tiny_run.record, tiny_run.path / "run.json"
    scored = score_run(ScoreRequest(run=str(tiny_run.path), zeroshot=ZeroShotConfig(tasks=(LASTWORD_TASK,), limit=3)))
    after = load_run(tiny_run.path).record
    assert after == scored and after.zeroshot is not None
    for scores in (after.zeroshot.dense, after.zeroshot.pruned):
        assert scores.results[LASTWORD_TASK].n == 3 and scores.value(LASTWORD_TASK, "acc") is not None
    (how,) = after.zeroshot.extra["scored_later"]
    assert how["mask_verified"] is True and how["pruned_model"].startswith("wanda 50% on calibration.npy")
    assert after.zeroshot.config == ZeroShotConfig(tasks=(LASTWORD_TASK,), limit=3)
    # nothing else in run.json changed, and it reads back as written
    assert {**after.to_json(), "zeroshot": None} == {**before.to_json(), "zeroshot": None}
    assert json.loads(run_json.read_text()) == after.to_json()

    # another question limit than the run's results: refused before any model is loaded
    with monkeypatch.context() as patched:
        patched.setattr(recreate, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
        with pytest.raises(ConfigError, match="scored at 3 question"):
            score_run(ScoreRequest(run=str(tiny_run.path), zeroshot=ZeroShotConfig(tasks=("boolq",), limit=5)))
    # a mask that is not the run's: one sentence, run.json as it was
    atomic_write_json(run_json, {**json.loads(run_json.read_text()), "mask_sha256": "0" * 64})
    tampered = run_json.read_bytes()
    with pytest.raises(EngineError, match="does not have the run's mask"):
        score_run(ScoreRequest(run=str(tiny_run.path), zeroshot=ZeroShotConfig(tasks=(LASTWORD_TASK,), limit=3)))
    assert run_json.read_bytes() == tampered
    with pytest.raises(EngineError, match="not a complete run"):
        score_run(ScoreRequest(run=str(tiny_run.path.parent / "missing"), zeroshot=ZeroShotConfig(tasks=(LASTWORD_TASK,))))


# --- the page -------------------------------------------------------------------------------------------------
def test_the_zero_shot_page_scores_the_runs_shown_offline(app_env, monkeypatch):
    """A run with no zero-shot results: the page says so, offers the offline task, queues the scoring of the run
    shown, and draws its dense and pruned accuracy when it is done."""
    from test_app import charts, goto, new_app, no_exceptions

    from app import ui
    from app.execution import InProcess
    from app.jobs import JobRunner
    from wanda_engine.inputs.models import load_model
    from wanda_engine.runner.execute import execute_run
    from wanda_engine.store.run_store import RunStore

    dense = load_model(str(app_env.model))
    run = execute_run(RunRequest(model=str(app_env.model), prune=PruneConfig(nsamples=2, seqlen=32),
                                 eval=EvalConfig(seqlen=32, windows=2)), store=RunStore(), loaded=dense)
    runner = JobRunner(InProcess(lambda request: dense))
    monkeypatch.setattr(ui, "job_runner", lambda: runner)
    try:
        at = goto(new_app(), "zeroshot")
        no_exceptions(at)
        assert any(f"{run.name} has no zero-shot results yet" in i.value for i in at.info)
        assert at.multiselect(key="zs_score_tasks").value == [LASTWORD_TASK]
        assert any("never downloaded" in c.value for c in at.caption)
        at.number_input(key="zs_score_limit").set_value(3).run()
        at.button(key="zs_score").click().run()
        no_exceptions(at)
        (job,) = runner.history() or [runner.current()]
        assert job.request == ScoreRequest(run=str(run.path), zeroshot=ZeroShotConfig(tasks=(LASTWORD_TASK,), limit=3))
        assert runner.wait_idle(120)
        at = goto(at, "zeroshot")
        no_exceptions(at)
        (bars,) = [c for c in charts(at) if c["data"]]
        assert LASTWORD_TASK in json.dumps(bars["data"])
        assert any("scored after the run on its pruned model" in c.value and "mask checked" in c.value
                   for c in at.caption)
        at.button(key="zs_score").click().run()  # scored already: nothing queued, and said
        assert any(f"{run.name} has {LASTWORD_TASK} at this limit already" in c.value for c in at.caption)
        assert len(runner.history()) == 1
    finally:
        runner.close()
