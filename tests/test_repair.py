"""Repairs of a pruned run (issue 14): sparse fine-tuning and LoRA keep every pruned zero, the loss falls,
cancel and bad input leave the run untouched, re-creation checks the mask, records round-trip."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_VOCAB, tiny_model

from wanda_engine.pruning.checks import mask_checksum, sparsity_of_blocks
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.core.errors import ConfigError, EngineError, PruneCancelled
from wanda_engine.core.events import StageStarted
from wanda_engine.inputs.layers import find_blocks, find_linears
from wanda_engine.inputs.models import load_model
from wanda_engine.repair.config import RepairConfig, RepairRequest
from wanda_engine.repair.estimate import estimate_seconds, evaluations
from wanda_engine.repair.events import RepairEval, RepairStep
from wanda_engine.repair.lora import add_adapters, adapted_layers, dense_merge, masked_merge, merged_for_evaluation
from wanda_engine.repair.record import RepairRecord, load_repairs, repairs_dir
from wanda_engine.repair.run import execute_repair
from wanda_engine.repair.train import batches, block_parameters, lr_factor, pruned_masks, train, training_windows
from wanda_engine.runner.execute import execute_run
from wanda_engine.store.run_store import load_run
from wanda_engine.core.stages import BY_NAME

# every test on real runs shares one module fixture (two tiny runs, ~20 s on 2 cores): `make test`, not the fast lane
SLOW = pytest.mark.slow
SENTENCE = "The quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire. "


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """Two complete Wanda 50% runs of the tiny model: 'saved' (with its pruned model saved) and 'plain'."""
    root = tmp_path_factory.mktemp("repair-runs")
    saved_cache = os.environ.get("WANDA_CACHE")
    os.environ["WANDA_CACHE"] = str(root / "cache")
    try:
        for name, save in (("saved", str(root / "saved-model")), ("plain", None)):
            execute_run(RunRequest(model=str(tiny_model_dir), prune=PruneConfig(nsamples=4, seqlen=32),
                                   eval=EvalConfig(seqlen=32, windows=2), save_model=save), run_dir=root / name)
    finally:
        if saved_cache is None:
            os.environ.pop("WANDA_CACHE", None)
        else:
            os.environ["WANDA_CACHE"] = saved_cache
    (root / "repeated.txt").write_text(SENTENCE * 200)
    return root


def copy_run(runs: Path, name: str, tmp_path: Path) -> Path:
    shutil.copytree(runs / name, tmp_path / name)
    return tmp_path / name


def fast(**kw) -> RepairConfig:
    return RepairConfig(**{"steps": 3, "seqlen": 32, "eval_every": 2, "lr": 1e-3, "warmup_steps": 1, **kw})


def zeros_by_layer(model) -> dict[str, torch.Tensor]:
    _, blocks = find_blocks(model)
    return {f"{i}.{n}": layer.weight.detach() == 0 for i, b in enumerate(blocks) for n, layer in find_linears(b).items()}


def block_weights(model) -> dict[str, torch.Tensor]:
    _, blocks = find_blocks(model)
    return {f"{i}.{n}": layer.weight.detach().clone() for i, b in enumerate(blocks) for n, layer in find_linears(b).items()}



def pruned_tiny_model():
    """A tiny LLaMA (512-token vocabulary) with half of every block linear's weights zeroed by magnitude."""
    model = tiny_model("llama")
    _, blocks = find_blocks(model)
    with torch.no_grad():
        for block in blocks:
            for layer in find_linears(block).values():
                layer.weight.mul_(layer.weight.abs() > layer.weight.abs().median())
    return model


def test_masked_gradients_keep_every_zero_through_adamw_and_weight_decay():
    model = pruned_tiny_model()
    zeros, weights = zeros_by_layer(model), block_weights(model)
    windows = torch.randint(0, TINY_VOCAB, (8, 16), generator=torch.Generator().manual_seed(0))
    config = RepairConfig(method="finetune", steps=4, seqlen=16, lr=1e-2, weight_decay=0.1, warmup_steps=0)
    done = train(model, block_parameters(model), windows, config, torch.device("cpu"), pruned_masks(model))
    assert done.guard_changed == 0  # the gradient mask alone kept them: the after-step guard found nothing
    after = zeros_by_layer(model)
    assert all(torch.equal(zeros[k], after[k]) for k in zeros)
    assert all(not torch.equal(weights[k], w) for k, w in block_weights(model).items())  # every matrix trained
    unmasked = pruned_tiny_model()  # the same steps without the mask: AdamW resurrects the pruned weights
    train(unmasked, block_parameters(unmasked), windows, config, torch.device("cpu"), None)
    assert sum(int(z.sum()) for z in zeros_by_layer(unmasked).values()) < sum(int(z.sum()) for z in zeros.values()) / 100


def test_masked_merge_keeps_the_zeros_a_plain_peft_merge_loses():
    pruned = pruned_tiny_model()
    zeros_before = zeros_by_layer(pruned)
    peft_model = add_adapters(copy.deepcopy(pruned), RepairConfig(method="lora", lora_rank=4))
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in adapted_layers(peft_model):
            layer.lora_B["default"].weight.normal_()  # a trained adapter: B is no longer zero
    expected = {}
    for name, layer in adapted_layers(peft_model):
        w = layer.get_base_layer().weight.detach()
        delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * layer.scaling["default"]
        expected[name.removeprefix("base_model.model.")] = w + delta.detach() * (w != 0)
    assert len(expected) == 2 * 7  # every linear of both blocks
    plain = dense_merge(copy.deepcopy(peft_model))
    plain_zeros = sum(int(z.sum()) for z in zeros_by_layer(plain).values())
    assert plain_zeros < sum(int(z.sum()) for z in zeros_before.values()) / 100  # the sparsity is gone
    merged = masked_merge(peft_model)
    assert not adapted_layers(merged)  # the adapters are removed
    zeros_after = zeros_by_layer(merged)
    assert all(torch.equal(zeros_before[k], zeros_after[k]) for k in zeros_before)
    modules = dict(merged.named_modules())
    for name, want in expected.items():
        torch.testing.assert_close(modules[name].weight.detach(), want)
    assert mask_checksum(merged) == mask_checksum(pruned)


def test_evaluating_mid_training_merges_under_the_mask_and_restores_the_weights():
    pruned = pruned_tiny_model()
    peft_model = add_adapters(copy.deepcopy(pruned), RepairConfig(method="lora", lora_rank=4))
    with torch.no_grad():
        for _, layer in adapted_layers(peft_model):
            layer.lora_B["default"].weight.normal_()
    ids = torch.randint(0, TINY_VOCAB, (1, 16), generator=torch.Generator().manual_seed(0))
    bases = {n: layer.get_base_layer().weight.detach().clone() for n, layer in adapted_layers(peft_model)}
    with merged_for_evaluation(peft_model) as m, torch.no_grad():
        during = m(input_ids=ids).logits
    assert all(torch.equal(bases[n], layer.get_base_layer().weight) for n, layer in adapted_layers(peft_model))
    with torch.no_grad():
        merged = masked_merge(peft_model)(input_ids=ids).logits
    torch.testing.assert_close(during, merged)


@SLOW
def test_sparse_finetuning_keeps_every_zero_and_moves_the_kept_weights(runs, tmp_path):
    run_dir = copy_run(runs, "saved", tmp_path)
    pruned = load_model(str(runs / "saved-model")).model
    out = tmp_path / "repaired"
    record = execute_repair(RepairRequest(run=str(run_dir), config=fast(method="finetune", weight_decay=0.1),
                                          save_model=str(out)))
    repaired = load_model(str(out)).model
    before, after = zeros_by_layer(pruned), zeros_by_layer(repaired)
    assert all(torch.equal(before[k], after[k]) for k in before)  # positions, hence counts, equal
    assert sparsity_of_blocks(repaired)[0] == load_run(run_dir).record.sparsity == record.sparsity_after
    assert record.sparsity_before == record.sparsity_after and record.mask_sha256_after == load_run(run_dir).record.mask_sha256
    assert record.train["guard_changed"] == 0  # the gradient mask alone kept them: the guard found nothing
    old, new = block_weights(pruned), block_weights(repaired)
    assert any(not torch.equal(old[k], new[k]) for k in old)  # it trained
    assert record.start == "saved model" and record.evaluated == "fine-tuned weights" and record.complete


@SLOW
def test_lora_repair_events_and_record(runs, tmp_path):
    run_dir = copy_run(runs, "plain", tmp_path)
    events = []
    record = execute_repair(RepairRequest(run=str(run_dir), config=fast(method="lora", steps=4)), on_event=events.append)
    steps = [e for e in events if isinstance(e, RepairStep)]
    assert [e.step for e in steps] == [1, 2, 3, 4] and steps[-1].tokens_seen == 4 * 2 * 32
    assert [e.step for e in events if isinstance(e, RepairEval)] == [0, 2, 4]
    assert all(e.stage in BY_NAME for e in events if isinstance(e, StageStarted))
    assert [s for s, _, _ in record.evals] == [0, 2, 4] and [t for _, t, _ in record.evals] == [0, 128, 256]
    assert record.start == "re-created from the record" and record.mask_verified is True
    assert record.evaluated == "masked merge" and record.mask_sha256_after == record.mask_sha256_before
    run = load_run(run_dir).record
    assert record.ppl_before == pytest.approx(run.ppl, rel=1e-5)  # the run's own evaluation windows
    assert record.eval.describe() == run.eval.describe()
    assert [x[0] for x in record.losses] == [1, 2, 3, 4] and record.peak_rss_mib > 0
    assert load_repairs(run_dir) == [record]


@SLOW
def test_adapter_evaluation_is_named_and_leaves_the_base_weights(runs, tmp_path):
    run_dir = copy_run(runs, "saved", tmp_path)
    record = execute_repair(RepairRequest(run=str(run_dir), config=fast(method="lora", evaluate="adapter")))
    assert record.evaluated == "adapter (unmerged)" and record.mask_sha256_after == record.mask_sha256_before
    assert record.ppl_after != record.ppl_before


@SLOW
def test_loss_falls_on_a_text_the_tiny_model_can_fit(runs, tmp_path):
    run_dir = copy_run(runs, "saved", tmp_path)
    config = fast(method="finetune", steps=20, eval_every=20, lr=3e-3, train_text=str(runs / "repeated.txt"))
    losses = [loss for _, loss, _, _ in execute_repair(RepairRequest(run=str(run_dir), config=config)).losses]
    assert losses[0] > 10.0  # a random model starts near ln(vocabulary size) = 10.8 nats
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5


@SLOW
def test_cancel_mid_run_leaves_the_run_and_its_saved_model_untouched(runs, tmp_path):
    run_dir = copy_run(runs, "saved", tmp_path)
    before_run, before_model = tree_digest(run_dir), tree_digest(runs / "saved-model")
    cancel = threading.Event()

    def on_event(event):
        if isinstance(event, RepairStep) and event.step == 2:
            cancel.set()

    with pytest.raises(PruneCancelled):
        execute_repair(RepairRequest(run=str(run_dir), config=fast(method="finetune", steps=6)), on_event, cancel)
    [record] = load_repairs(run_dir)
    assert record.status == "cancelled" and len(record.losses) == 2 and "cancelled" in record.error
    assert {k: v for k, v in tree_digest(run_dir).items() if not k.startswith("repairs/")} == before_run
    assert tree_digest(runs / "saved-model") == before_model


@SLOW
@pytest.mark.parametrize("stop", ["failed", "cancelled"])
def test_a_run_and_a_repair_stop_alike_through_the_one_lifecycle(stop, runs, tiny_model_dir, tmp_path, monkeypatch):
    """Stopped mid-way, a run and a repair both raise, and their records say 'failed' with the error or
    'cancelled', with the stages' timings; only a repair's says when it stopped (`finished`)."""
    import wanda_engine.repair.run as repair_module
    import wanda_engine.runner.execute as runner_module

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    cancel, expected = threading.Event(), PruneCancelled

    def on_event(event):  # cancels each as its work begins
        if stop == "cancelled" and isinstance(event, StageStarted) and event.stage in ("prune", "repair-train"):
            cancel.set()

    if stop == "failed":
        def broken(*args, **kwargs):
            raise EngineError("the work broke")

        monkeypatch.setattr(runner_module, "prune_model", broken)
        monkeypatch.setattr(repair_module, "train", broken)
        expected = EngineError
    request = RunRequest(model=str(tiny_model_dir), prune=PruneConfig(nsamples=4, seqlen=32), eval=None)
    with pytest.raises(expected) as run_stopped:
        execute_run(request, run_dir=tmp_path / "run", on_event=on_event, cancel=cancel)
    cancel.clear()
    run_dir = copy_run(runs, "saved", tmp_path)
    with pytest.raises(expected) as repair_stopped:
        execute_repair(RepairRequest(run=str(run_dir), config=fast(method="finetune")), on_event, cancel)
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    [repair_json] = [json.loads(p.read_text()) for p in repairs_dir(run_dir).glob("*/repair.json")]
    for record, error in ((run_json, run_stopped.value), (repair_json, repair_stopped.value)):
        assert record["status"] == stop and record["error"] == str(error) and "total_s" in record["timings"]
    assert "finished" not in run_json and repair_json["finished"]
    assert repair_json["peak_rss_mib"] > 0 and "eval_s" in repair_json["timings"]  # the repair's own, kept


@pytest.mark.parametrize("field,value", [("steps", 0), ("lora_rank", 0), ("batch_size", -1), ("lr", 0.0),
                                         ("method", "prune"), ("evaluate", "both")])
def test_a_bad_config_is_one_sentence_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        RepairConfig(**{field: value})


def _edit_run(run_dir: Path, **changes) -> None:
    meta = json.loads((run_dir / "run.json").read_text())
    for key, value in changes.items():
        if key == "config":
            meta["config"].update(value)
        else:
            meta[key] = value
    (run_dir / "run.json").write_text(json.dumps(meta))


@SLOW
def test_bad_inputs_fail_before_anything_is_written(runs, tmp_path):
    run_dir = copy_run(runs, "plain", tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("Too short to fill one batch.")
    with pytest.raises(ConfigError, match="fewer than one batch"):
        execute_repair(RepairRequest(run=str(run_dir), config=fast(train_text=str(short))))
    _edit_run(run_dir, config={"eval": {"dataset": str(runs / "repeated.txt"), "seqlen": 32, "windows": 2}})
    with pytest.raises(ConfigError, match="evaluation text"):
        execute_repair(RepairRequest(run=str(run_dir), config=fast(train_text=str(runs / "repeated.txt"))))
    with pytest.raises(ConfigError, match="lora_targets"):
        execute_repair(RepairRequest(run=str(run_dir), config=fast(lora_targets=("attn.nope",))))
    with pytest.raises(ConfigError, match="already holds files"):
        execute_repair(RepairRequest(run=str(run_dir), config=fast(), save_model=str(runs / "saved-model")))
    assert not repairs_dir(run_dir).exists()


@SLOW
def test_a_run_with_no_saved_or_reproducible_model_is_refused(runs, tmp_path):
    run_dir = copy_run(runs, "plain", tmp_path)
    (run_dir / "calibration.npy").unlink()
    _edit_run(run_dir, config={"calib": str(tmp_path / "gone.npy")})
    with pytest.raises(EngineError, match="cannot be re-created"):
        execute_repair(RepairRequest(run=str(run_dir), config=fast()))
    assert not repairs_dir(run_dir).exists()


@SLOW
def test_re_creation_checks_the_mask_checksum(runs, tmp_path):
    run_dir = copy_run(runs, "plain", tmp_path)
    _edit_run(run_dir, mask_sha256="0" * 64)
    with pytest.raises(EngineError, match="mask checksum"):
        execute_repair(RepairRequest(run=str(run_dir), config=fast()))
    assert not repairs_dir(run_dir).exists()
    _edit_run(run_dir, mask_sha256=None)  # a run recorded before mask checksums: re-created, said unverified
    meta = json.loads((run_dir / "run.json").read_text())
    del meta["mask_sha256"]
    (run_dir / "run.json").write_text(json.dumps(meta))
    assert execute_repair(RepairRequest(run=str(run_dir), config=fast(steps=1))).mask_verified is None


@SLOW
def test_dense_reference_trains_the_unpruned_model(runs, tmp_path):
    run_dir = copy_run(runs, "saved", tmp_path)
    record = execute_repair(RepairRequest(run=str(run_dir), config=fast(method="finetune", dense=True, steps=2)))
    assert record.start == "dense model" and record.sparsity_before < 0.01
    assert record.ppl_before == pytest.approx(load_run(run_dir).record.ppl_dense, rel=1e-5)
    assert record.label() == "dense finetune · 2 steps" and record.name == "dense-finetune-2steps"


@SLOW
def test_record_round_trips_and_corrupt_records_are_skipped(runs, tmp_path):
    run_dir = copy_run(runs, "saved", tmp_path)
    record = execute_repair(RepairRequest(run=str(run_dir), config=fast(steps=2), name="r1"))
    assert RepairRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    (repairs_dir(run_dir) / "broken").mkdir()
    (repairs_dir(run_dir) / "broken" / "repair.json").write_text("{not json")
    assert load_repairs(run_dir) == [record]
    with pytest.raises(ConfigError, match="taken"):
        execute_repair(RepairRequest(run=str(run_dir), config=fast(steps=2), name="r1"))
    request = RepairRequest(run=str(run_dir), config=fast(steps=2), name="r2", save_model="out")
    assert RepairRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request


def test_training_windows_do_not_overlap_and_their_order_follows_the_seed():
    ids = torch.arange(100)
    windows = training_windows(ids, 16)
    assert windows.shape == (6, 16) and torch.equal(windows.flatten(), ids[:96])
    draw = lambda seed: [b.tolist() for b, _ in zip(batches(windows, 2, seed), range(6))]  # noqa: E731
    assert draw(0) == draw(0) and draw(0) != draw(1)
    first_pass = sorted(w for batch in draw(0)[:3] for w in map(tuple, batch))
    assert first_pass == sorted(map(tuple, windows.tolist()))  # a pass sees every window once


def test_learning_rate_warms_up_then_decays():
    c = RepairConfig(steps=40, warmup_steps=4)
    factors = [lr_factor(c, s) for s in range(40)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0] and factors[4] == 1.0
    assert all(a >= b for a, b in zip(factors[4:], factors[5:])) and factors[-1] < 0.01
    assert lr_factor(RepairConfig(steps=20, warmup_steps=10), 1) == 1.0  # warmup: at most a tenth of the steps
    assert lr_factor(RepairConfig(steps=20, warmup_steps=0, schedule="constant"), 19) == 1.0
    assert RepairConfig(method="finetune").lr < RepairConfig(method="lora").lr  # each method's own default


@SLOW
def test_estimate_follows_the_budget_and_an_earlier_repair(runs, tmp_path):
    run = load_run(runs / "saved").record
    short = RepairRequest(run=str(runs / "saved"), config=RepairConfig(steps=50, eval_every=25))
    long = RepairRequest(run=str(runs / "saved"), config=RepairConfig(steps=100, eval_every=25))
    assert 0 < estimate_seconds(short, run) < estimate_seconds(long, run) and evaluations(long) == 5
    earlier = execute_repair(RepairRequest(run=str(copy_run(runs, "saved", tmp_path)), config=fast(steps=2)))
    per_token = earlier.timings["train_s"] / earlier.request.config.tokens()
    eval_s = run.timings["eval_s"]
    want = run.timings["load_s"] + per_token * long.config.tokens() + 5 * eval_s
    assert estimate_seconds(long, run, [earlier]) == pytest.approx(want, abs=0.1)


def test_the_repair_command_answers_help_without_importing_torch():
    code = ("import argparse, sys; from wanda_engine.cli.repair import add_repair_parser; "
            "p = argparse.ArgumentParser(); add_repair_parser(p.add_subparsers()); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


@SLOW
def test_the_repair_command_prints_progress_and_a_json_summary(runs, tmp_path, capsys):
    import argparse

    from wanda_engine.cli.repair import add_repair_parser, run_repair_command

    run_dir = copy_run(runs, "saved", tmp_path)
    parser = argparse.ArgumentParser()
    add_repair_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["repair", str(run_dir), "--method", "lora", "--steps", "2", "--seqlen", "32",
                              "--eval-every", "1", "--rank", "2", "--save-model", str(tmp_path / "out")])
    assert run_repair_command(args) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["status"] == "complete" and summary["mask_unchanged"] and len(summary["evals"]) == 3
    assert summary["sparsity_before"] == summary["sparsity_after"] == load_run(run_dir).record.sparsity
    assert "perplexity after 2 steps" in err and "repair-load" in err
    assert sparsity_of_blocks(load_model(str(tmp_path / "out")).model)[0] == summary["sparsity_after"]
