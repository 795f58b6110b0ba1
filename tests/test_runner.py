"""One run in steps: a loaded model must match its request, every stage comes from the one table, and
run.json round-trips through the typed record."""
from __future__ import annotations

import json

import pytest

from wanda_engine.config import EvalConfig, OffloadConfig, PruneConfig, RunRequest
from wanda_engine.core.errors import EngineError
from wanda_engine.core.events import StageStarted
from wanda_engine.store.run_record import RunRecord
from wanda_engine.runner.execute import execute_run, prepare
from wanda_engine.store.run_store import RunStore
from wanda_engine.core.stages import BY_NAME
from wanda_engine.sweep import grid as sw

FAST = dict(nsamples=4, seqlen=32, device="cpu")


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from wanda_engine.inputs.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.mark.parametrize("change, words", [
    ({"dtype": "bfloat16"}, "dtype is 'float32', the request's 'bfloat16'"),
    ({"model": "default"}, "source"),
    ({"trust_remote_code": True}, "trust_remote_code"),
    ({"offload": OffloadConfig({"cpu": "300MiB"})}, "offload"),
])
def test_a_loaded_model_that_does_not_match_the_request_is_refused(change, words, loaded, tiny_model_dir, tmp_path):
    request = RunRequest(**{"model": str(tiny_model_dir), "prune": PruneConfig(**FAST), "eval": None, **change})
    with pytest.raises(EngineError, match="does not match the request") as refused:
        execute_run(request, run_dir=tmp_path / "run", loaded=loaded)
    assert words in str(refused.value) and len(str(refused.value).splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_matching_loaded_model_is_used_under_any_dtype_spelling(loaded, tiny_model_dir):
    prep = prepare(RunRequest(model=str(tiny_model_dir), prune=PruneConfig(**FAST), eval=None, dtype="fp32"), loaded)
    assert prep.loaded is loaded and not prep.owns_model and prep.windows.shape == (4, 32)


def test_every_stage_announced_is_in_the_table(loaded, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    seen: list[str] = []
    on_event = lambda e: seen.append(e.stage) if isinstance(e, StageStarted) else None  # noqa: E731
    owl = RunRequest(model=str(tiny_model_dir), prune=PruneConfig(layerwise="owl", sparsity=0.5, owl_lambda=0.05, **FAST),
                     eval=EvalConfig(seqlen=32, windows=2), save_model=str(tmp_path / "saved"))
    execute_run(owl, run_dir=tmp_path / "owl", on_event=on_event, loaded=loaded)
    assert seen == ["load", "calibration-data", "copy", "eval-dense", "prune", "owl", "capture", "eval", "save"]
    cfg = sw.SweepConfig(methods=["magnitude"], base=PruneConfig(**FAST), eval=None, model=str(tiny_model_dir), name="s")
    sw.run_sweep(cfg, store=RunStore(tmp_path / "runs"), on_event=on_event)
    assert {"load-model", "sweep-point"} <= set(seen) and set(seen) <= set(BY_NAME)
    timings = json.loads((tmp_path / "owl" / "run.json").read_text())["timings"]
    assert {"load_s", "data_s", "copy_s", "eval_dense_s", "prune_s", "eval_s", "save_s", "total_s"} <= set(timings)


def test_run_json_round_trips_through_the_record(loaded, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    request = RunRequest(model=str(tiny_model_dir), prune=PruneConfig(method="magnitude", **FAST),
                         eval=EvalConfig(seqlen=32, windows=2), name="r")
    run = execute_run(request, store=RunStore(tmp_path), loaded=loaded)
    meta = json.loads((run.path / "run.json").read_text())
    record = RunRecord.from_json(meta)
    assert record == run.record and record.to_json() == meta and list(record.to_json()) == list(meta)
    assert record.request == request.__class__.from_dict(meta["config"]) and record.request.name is None
    assert record.label() == "magnitude 50%" and record.eval.tokens == 64 and record.eval.tokens_per_s > 0
    assert len(record.layers) == 14 and len(record.blocks) == 2 and record.model.num_blocks == 2
    # a run without evaluation writes its perplexities as null, as before
    bare = execute_run(RunRequest(model=str(tiny_model_dir), prune=PruneConfig(**FAST), eval=None),
                       run_dir=tmp_path / "bare", loaded=loaded)
    meta = json.loads((bare.path / "run.json").read_text())
    assert meta["ppl"] is None and meta["ppl_dense"] is None and meta["eval"] is None
    assert RunRecord.from_json(meta).to_json() == meta


def test_a_run_keeps_its_calibration_windows_and_the_checksum_of_its_masks(loaded, tiny_model_dir, tmp_path):
    import copy

    import numpy as np
    import torch

    from wanda_engine.pruning.checks import mask_checksum
    from wanda_engine.inputs.data import windows_checksum
    from wanda_engine.inputs.layers import find_blocks, find_linears, weight_of
    from wanda_engine.pruning.pipeline import prune_model

    request = RunRequest(model=str(tiny_model_dir), prune=PruneConfig(**FAST), eval=None)
    run = execute_run(request, run_dir=tmp_path / "run", loaded=loaded)
    cal = run.record.calibration
    windows = np.load(run.path / cal.file)
    assert cal.file == "calibration.npy" and windows.shape == (4, 32) and windows.dtype == np.int64
    assert cal.sha256 == windows_checksum(torch.from_numpy(windows)) and len(cal.starts) == 4
    # the same windows prune the same masks: the recorded checksum is the model's
    model = copy.deepcopy(loaded.model)
    prune_model(model, torch.from_numpy(windows), request.prune, record=False)
    assert mask_checksum(model) == run.record.mask_sha256
    # a kept value changing leaves the checksum; one more zero changes it
    weight = weight_of(next(iter(find_linears(find_blocks(model)[1][0]).values())))
    kept = (weight != 0).nonzero()[0]
    with torch.no_grad():
        weight[tuple(kept)] *= 2
        assert mask_checksum(model) == run.record.mask_sha256
        weight[tuple(kept)] = 0
    assert mask_checksum(model) != run.record.mask_sha256


def _count_checks(monkeypatch) -> dict[str, int]:
    import wanda_engine.pruning.pipeline as pipeline

    calls = {"check_prunable": 0, "check_finite_weights": 0}
    for name in calls:
        def counted(*args, _real=getattr(pipeline, name), _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(pipeline, name, counted)
    return calls


@pytest.mark.parametrize("handed_in", [True, False], ids=["loaded model copied", "model loaded by the run"])
def test_a_run_checks_its_model_once(handed_in, loaded, tiny_model_dir, tmp_path, monkeypatch):
    """`prepare` checks before the run directory exists; `prune_model` takes its proof instead of checking again
    (also when it prunes the deep copy of a model handed in)."""
    calls = _count_checks(monkeypatch)
    request = RunRequest(model=str(tiny_model_dir), prune=PruneConfig(**FAST), eval=None)
    run = execute_run(request, run_dir=tmp_path / "run", loaded=loaded if handed_in else None)
    assert run.complete and calls == {"check_prunable": 1, "check_finite_weights": 1}


def test_prune_model_called_directly_still_refuses_bad_input(loaded, monkeypatch):
    import copy

    import torch

    from wanda_engine.core.errors import ConfigError, NumericalError
    from wanda_engine.pruning.checks import sparsity_of_blocks
    from wanda_engine.pruning.pipeline import check_for_pruning, prune_model

    windows = torch.randint(0, 500, (4, 32), generator=torch.Generator().manual_seed(0))
    model = copy.deepcopy(loaded.model)
    with pytest.raises(ConfigError, match="group 'matrix' does not apply"):
        prune_model(model, windows, PruneConfig(method="sparsegpt", group="matrix", **FAST))
    # a proof made for other settings is not taken for these: the model is checked again
    proof = check_for_pruning(model, PruneConfig(method="sparsegpt", **FAST))
    with pytest.raises(ConfigError, match="group 'matrix' does not apply"):
        prune_model(model, windows, PruneConfig(method="sparsegpt", group="matrix", **FAST), checked=proof)
    calls = _count_checks(monkeypatch)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 3] = float("inf")
    with pytest.raises(NumericalError, match=r"block 1 mlp\.up_proj: weight contains 1 Inf"):
        prune_model(model, windows, PruneConfig(**FAST))
    assert calls == {"check_prunable": 1, "check_finite_weights": 1}
    assert sparsity_of_blocks(model)[0] < 0.01  # refused before any weight changed
