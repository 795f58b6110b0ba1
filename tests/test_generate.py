"""Generate side by side: the same prompt through the dense model and chosen runs. Greedy continuation equals
transformers' own greedy `generate` (the plain reference) and is the same twice; sampling repeats with its seed; a
run's pruned model is its saved one or re-created from its record with the mask checked, and both continue alike; the
record keeps each model's tokens and tokens/s (a record, never a timed test); bad input is one sentence, nothing
written; the CLI prints the texts and one JSON line."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from conftest import tiny_model

from wanda_engine.cli.main import main
from wanda_engine.config import GenerateRequest
from wanda_engine.core.errors import ConfigError, EngineError
from wanda_engine.evaluation.generate import continue_prompt
from wanda_engine.runner.generate import generate_side_by_side
from wanda_engine.store.generation_record import GenerationRecord, generations_dir, list_generations, load_generation
from wanda_engine.store.run_store import RunStore

FAST = ["--nsamples", "4", "--seqlen", "32", "--eval-windows", "2", "--quiet", "--no-speed"]
PROMPT = "It is a truth universally acknowledged, that"


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir):
    """A store with a magnitude run, a FLAP run and the same FLAP run saved, all of the tiny model."""
    root = tmp_path_factory.mktemp("generate") / "runs"
    for name, args in (("magnitude-50", ["--method", "magnitude"]),
                       ("flap-30", ["--method", "flap", "--ratio", "0.3", "--bias-compensation"]),
                       ("flap-30-saved", ["--method", "flap", "--ratio", "0.3", "--bias-compensation",
                                          "--save-model", str(root.parent / "saved")])):
        assert main(["prune", "--model", str(tiny_model_dir), *FAST, "--out", str(root / name), *args]) == 0
    return RunStore(root)


def test_greedy_continuation_is_transformers_own_greedy_generation():
    model = tiny_model("llama", seed=3)
    ids = torch.tensor([[5, 17, 42, 7, 99]])
    ours = continue_prompt(model, ids, 12)
    reference = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0,
                               use_cache=True)[0, ids.shape[1]:].tolist()
    assert list(ours.tokens) == reference and ours.stopped == "max_new_tokens"
    assert continue_prompt(model, ids, 12).tokens == ours.tokens  # the same tokens twice
    assert ours.prefill_s > 0 and ours.decode_s > 0
    stopped = continue_prompt(model, ids, 12, stop=[ours.tokens[3]])
    assert stopped.tokens == ours.tokens[:4] and stopped.stopped == "eos"


def test_sampling_repeats_with_its_seed():
    model = tiny_model("llama", seed=3)
    ids = torch.tensor([[5, 17, 42]])
    first, again = (continue_prompt(model, ids, 16, temperature=1.0, seed=7) for _ in range(2))
    assert first.tokens == again.tokens
    assert continue_prompt(model, ids, 16, temperature=1.0, seed=8).tokens != first.tokens


def test_the_dense_model_and_runs_side_by_side_as_a_record(store):
    runs = [str(store.path_for(n)) for n in ("magnitude-50", "flap-30", "flap-30-saved")]
    request = GenerateRequest(prompt=PROMPT, runs=tuple(runs), max_new_tokens=6, name="side")
    record = generate_side_by_side(request, store)
    assert [o.model for o in record.outputs] == ["dense", "magnitude-50", "flap-30", "flap-30-saved"]
    dense, magnitude, recreated, saved = record.outputs
    assert magnitude.source.startswith("re-created: magnitude 50%") and magnitude.mask_verified is True
    assert recreated.mask_verified is True and saved.source.startswith("its saved model")
    assert saved.tokens == recreated.tokens  # the saved folder and the record make the same smaller model
    assert recreated.params == saved.params < dense.params
    for out in record.outputs:
        assert 1 <= len(out.tokens) <= 6 and out.tokens_per_s > 0 and out.pid == os.getpid()
    assert record.prompt == PROMPT and record.max_new_tokens == 6 and record.temperature == 0
    assert record.device.startswith("cpu") and record.threads >= 1 and record.dtype == "float32"
    assert "greedy" in record.measured_on() and "untimed warm-up" in record.measured_on()
    assert load_generation(generations_dir(store.root) / "side.json") == record
    assert list_generations(store.root)[0] == record
    again = generate_side_by_side(GenerateRequest(prompt=PROMPT, runs=tuple(runs), max_new_tokens=6), store)
    assert [o.tokens for o in again.outputs] == [o.tokens for o in record.outputs]  # greedy: the same twice


@pytest.mark.parametrize("kw, needle", [
    (dict(prompt="  "), "needs a prompt"), (dict(prompt="x", max_new_tokens=0), "max_new_tokens"),
    (dict(prompt="x", dense=False), "needs a model"), (dict(prompt="x", temperature=-1.0), "temperature"),
    (dict(prompt="x", runs=("a", "a")), "names a run twice"), (dict(prompt="x" * 5000), "characters"),
])
def test_bad_requests_are_one_sentence(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        GenerateRequest(**kw)


def test_runs_it_cannot_compare_are_refused_before_anything_loads(store, tmp_path, capsys, monkeypatch):
    import wanda_engine.runner.generate as generate

    monkeypatch.setattr(generate, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    other = tmp_path / "other"
    shutil.copytree(store.path_for("magnitude-50"), other)
    meta = json.loads((other / "run.json").read_text())
    meta["config"]["dtype"] = "bfloat16"
    (other / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="pruned from different models"):
        generate_side_by_side(GenerateRequest(prompt="x", runs=(str(store.path_for("flap-30")), str(other))), store)
    meta["status"] = "failed"
    (other / "run.json").write_text(json.dumps(meta))
    with pytest.raises(EngineError, match="not a complete run"):
        generate_side_by_side(GenerateRequest(prompt="x", runs=(str(other),)), store)
    before = sorted(p.name for p in generations_dir(store.root).glob("*"))
    rc = main(["generate", "--runs-dir", str(store.root), "--runs", "no-such-run", "--prompt", "x"])
    assert rc == 1 and capsys.readouterr().err.strip().count("\n") == 0
    assert sorted(p.name for p in generations_dir(store.root).glob("*")) == before


def test_the_cli_prints_the_texts_side_by_side_and_one_json_line(store, capsys):
    rc = main(["generate", "--runs-dir", str(store.root), "--runs", "magnitude-50,flap-30", "--prompt", PROMPT,
               "--max-new-tokens", "4", "--quiet", "--name", "cli"])
    out = capsys.readouterr().out
    assert rc == 0
    summary = json.loads(out.strip().splitlines()[-1])
    record = load_generation(summary["record"])
    assert isinstance(record, GenerationRecord) and record.name == "cli"
    assert [o["label"] for o in summary["outputs"]] == ["dense", "magnitude 50%", "flap+bias 30%"]
    assert all(f"== {o.label} (" in out and f"{o.tokens_per_s:.1f} tokens/s" in out for o in record.outputs)
    rc = main(["generate", "--runs-dir", str(store.root), "--prompt", PROMPT, "--name", "cli"])
    assert rc == 1 and "already exists" in capsys.readouterr().err
