"""weight_update='obs': any selector's mask, then SparseGPT's OBS update of the kept weights on the block's Gram
matrix (the Wanda paper's ablation). The mask stays the selector's; the layer's reconstruction error falls;
SparseGPT's own mask fed back reproduces SparseGPT's weights exactly."""
from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch
from conftest import tiny_model
from test_pipeline import per_sample_norms, pruned_masks, windows
from test_protect import one_sentence
from test_sparsegpt import correlated_inputs

from wanda_engine.sweep import grid as sw
from wanda_engine.cli.main import _request, _sweep_config, build_parser
from wanda_engine.config import PruneConfig, RunRequest
from wanda_engine.core.errors import ConfigError
from wanda_engine.inputs.layers import find_blocks, find_linears, weight_of
from wanda_engine.pruning.pipeline import prune_model
from wanda_engine.store.run_record import RunRecord
from wanda_engine.methods.scoring import InputStats
from wanda_engine.methods.sparsegpt import sparsegpt_prune
from wanda_engine.sweep.cost import estimate_work

FAST = dict(nsamples=6, seqlen=24, batch_size=4)


def block0_inputs(model, calib: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each linear of the dense block 0's inputs over the calibration windows, [tokens, in] (block 0 sees the
    embeddings, whatever a pruning does to it)."""
    layers = find_linears(find_blocks(model)[1][0])
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    hooks = [layer.register_forward_hook(lambda m, inputs, out, name=name: seen[name].append(
        inputs[0].reshape(-1, inputs[0].shape[-1]).detach().clone())) for name, layer in layers.items()]
    with torch.no_grad():
        model(input_ids=calib, use_cache=False)
    for h in hooks:
        h.remove()
    return {name: torch.cat(xs) for name, xs in seen.items()}


def output_error(dense: torch.Tensor, pruned: torch.Tensor, x: torch.Tensor) -> float:
    """‖(W − Ŵ)X‖²: the layer's output change over the calibration tokens."""
    return float(((x @ (dense - pruned).t()) ** 2).sum())


def block0_weights(model) -> dict[str, torch.Tensor]:
    return {name: weight_of(layer).detach().clone() for name, layer in find_linears(find_blocks(model)[1][0]).items()}


@pytest.mark.parametrize("method,pattern", [("wanda", "unstructured"), ("magnitude", "unstructured"),
                                            ("wanda", "2:4"), ("ria", "unstructured")])
def test_the_update_on_a_fixed_mask_lowers_each_layers_reconstruction_error(method, pattern):
    calib = windows()
    dense, plain, updated = tiny_model("llama"), tiny_model("llama"), tiny_model("llama")
    inputs, before = block0_inputs(dense, calib), block0_weights(dense)
    prune_model(plain, calib, PruneConfig(method=method, pattern=pattern, **FAST))
    prune_model(updated, calib, PruneConfig(method=method, pattern=pattern, weight_update="obs", **FAST))
    masked, reconstructed = block0_weights(plain), block0_weights(updated)
    for name, x in inputs.items():
        assert torch.equal(masked[name] == 0, reconstructed[name] == 0), name  # the same mask ...
        err_plain, err_obs = output_error(before[name], masked[name], x), output_error(before[name], reconstructed[name], x)
        assert err_obs < 0.95 * err_plain, (name, err_obs, err_plain)  # ... and a smaller output error


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpts_own_mask_fed_back_reproduces_its_weights_exactly(nm):
    width = 64
    x = correlated_inputs(512, width, seed=4)
    x[:, [5, 6, 7]] = 0  # dead inputs (H_jj = 0), three in one 2:4 group: SparseGPT zeroes more than it chooses
    w = torch.randn(24, width, generator=torch.Generator().manual_seed(5))
    stats = InputStats(width, torch.device("cpu"), with_gram=True)
    stats.add(x[None])
    solved = sparsegpt_prune(w, stats.hessian(), 0.5, nm, blocksize=16)
    zeros = solved == 0
    assert zeros[:, [5, 6, 7]].all()
    assert torch.equal(sparsegpt_prune(w, stats.hessian(), 0.5, nm, blocksize=16, mask=zeros), solved)

    # The edge: a given mask is the whole mask. Keep the dead inputs' weights and they stay as they were
    # (SparseGPT's own choice zeroes them); everything else is unchanged, since a dead input is uncoupled in H⁻¹.
    dead = torch.zeros(width, dtype=torch.bool)
    dead[[5, 6, 7]] = True
    kept_dead = sparsegpt_prune(w, stats.hessian(), 0.5, nm, blocksize=16, mask=zeros & ~dead)
    assert torch.equal(kept_dead[:, dead], w[:, dead])
    assert torch.equal(kept_dead[:, ~dead], solved[:, ~dead])


def _kept_weights_moved(plain, updated) -> None:
    _, blocks = find_blocks(plain)
    _, obs_blocks = find_blocks(updated)
    for i, (block, obs_block) in enumerate(zip(blocks, obs_blocks)):
        for name, layer in find_linears(block).items():
            w, w_obs = weight_of(layer), weight_of(find_linears(obs_block)[name])
            kept = w_obs != 0
            assert (w[kept] != w_obs[kept]).float().mean() > 0.9, (i, name)  # nearly every kept weight moved


def test_magnitude_with_the_update_keeps_magnitudes_zeros_and_changes_the_kept_weights():
    plain, updated = tiny_model("qwen2"), tiny_model("qwen2")
    prune_model(plain, windows(seed=3), PruneConfig(method="magnitude", **FAST))
    result = prune_model(updated, windows(seed=3), PruneConfig(method="magnitude", weight_update="obs", **FAST))
    masks, obs_masks = pruned_masks(plain), pruned_masks(updated)
    assert masks.keys() == obs_masks.keys() and all(torch.equal(masks[k], obs_masks[k]) for k in masks)
    _kept_weights_moved(plain, updated)
    assert result.sparsity == pytest.approx(0.5, abs=1e-6)


def test_wanda_with_the_update_prunes_exactly_wandas_mask_on_the_inputs_each_block_saw():
    """Block 0 sees the embeddings: its zeros are plain Wanda's. Block i > 0 sees the outputs of the updated
    blocks before it (as in the reference's ablation), so its zeros are Wanda's mask on those inputs:
    checked against per-sample norms through the run's own pruned blocks and this block still dense."""
    calib = windows(seed=3)
    dense, plain, updated = tiny_model("llama"), tiny_model("llama"), tiny_model("llama")
    prune_model(plain, calib, PruneConfig(method="wanda", **FAST))
    prune_model(updated, calib, PruneConfig(method="wanda", weight_update="obs", **FAST))
    obs_masks = pruned_masks(updated)
    assert all(torch.equal(m, obs_masks[k]) for k, m in pruned_masks(plain).items() if k.startswith("0."))
    _, dense_blocks = find_blocks(dense)
    _, obs_blocks = find_blocks(updated)
    for i in range(1, len(dense_blocks)):
        hybrid = copy.deepcopy(dense)
        for j in range(i):
            find_blocks(hybrid)[1][j].load_state_dict(obs_blocks[j].state_dict())
        norms = per_sample_norms(hybrid, calib, i)
        for name, layer in find_linears(dense_blocks[i]).items():
            metric = weight_of(layer).abs() * norms[name].view(1, -1)
            k = metric.shape[1] // 2
            expected = torch.zeros_like(metric, dtype=torch.bool).scatter_(
                1, torch.sort(metric, dim=1, stable=True).indices[:, :k], True)
            assert torch.equal(obs_masks[f"{i}.{name}"], expected), (i, name)
    _kept_weights_moved(plain, updated)


def test_the_record_holds_the_selected_mask_and_the_updated_weights_error():
    calib = windows()
    dense, model = tiny_model("llama"), tiny_model("llama")
    before = block0_weights(dense)
    result = prune_model(model, calib, PruneConfig(method="wanda", weight_update="obs", **FAST))
    after = block0_weights(model)
    for rec in (r for r in result.records if r.block == 0):
        mask = after[rec.name] == 0
        assert rec.sparsity == pytest.approx(float(mask.float().mean()))
        energy = torch.from_numpy(rec.arrays["channel_norms"]).double() ** 2
        change = ((before[rec.name] - after[rec.name]).double() ** 2).sum(dim=0)
        expected = float(change @ energy / ((before[rec.name].double() ** 2).sum(dim=0) @ energy))
        assert rec.proxy_error == pytest.approx(expected, rel=1e-5), rec.name  # the real error, kept weights moved
        assert rec.by_metric["wanda"]["proxy_error"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_two_of_four_with_the_update_keeps_exactly_two_zeros_in_every_group(method):
    model = tiny_model("llama")
    prune_model(model, windows(), PruneConfig(method=method, pattern="2:4", weight_update="obs", **FAST))
    for key, mask in pruned_masks(model).items():
        groups = mask.view(mask.shape[0], -1, 4).sum(dim=2)
        assert (groups == 2).all(), key


def test_dense_zeros_stay_zero_under_the_update():
    """A quantised model holds exact zeros. Protected channels keep theirs while the same rows lose nonzero
    weights, whose update would move every later weight of the row: those zeros must stay zeros."""
    calib = windows()
    plain, updated = tiny_model("llama"), tiny_model("llama")
    for model in (plain, updated):
        with torch.no_grad():
            for layer in find_linears(find_blocks(model)[1][0]).values():
                w = weight_of(layer)
                rows, cols = torch.meshgrid(torch.arange(w.shape[0]), torch.arange(w.shape[1]), indexing="ij")
                w[(rows + cols) % 9 == 0] = 0
    cfg = PruneConfig(method="magnitude", sparsity=0.3, protect_channels=0.1, **FAST)
    prune_model(plain, calib, cfg)
    prune_model(updated, calib, replace(cfg, weight_update="obs"))
    masks, obs_masks = pruned_masks(plain), pruned_masks(updated)
    assert all(torch.equal(masks[k], obs_masks[k]) for k in masks if k.startswith("0."))  # block 0: the same inputs


@pytest.mark.parametrize("kwargs,words", [
    ({"weight_update": "adam"}, "weight_update must be one of none, obs, got 'adam'"),
    ({"weight_update": None}, "weight_update must be one of none, obs"),
    ({"weight_update": "obs", "method": "sparsegpt"},
     "sparsegpt already updates the kept weights; weight_update 'obs' applies to the selectors"),
])
def test_bad_weight_updates_are_refused_in_one_sentence(kwargs, words):
    with pytest.raises(ConfigError, match="weight_update") as caught:
        PruneConfig(**kwargs)
    assert words in str(caught.value) and one_sentence(str(caught.value)), str(caught.value)


@pytest.mark.parametrize("kwargs,label,stem", [
    ({"method": "wanda", "weight_update": "obs"}, "wanda+obs 50%", "wanda-obs-unstructured-0.50"),
    ({"method": "magnitude", "protect_channels": 0.01, "weight_update": "obs"}, "magnitude+protect1%+obs 50%",
     "magnitude-protect0.01-obs-unstructured-0.50"),
    ({"method": "wanda", "variant": True, "layerwise": "owl", "sparsity": 0.7, "weight_update": "obs"},
     "owl-wanda-variant+obs 70%", "owl-wanda-variant-obs-unstructured-0.70"),
    ({"method": "ria", "pattern": "2:4", "weight_update": "obs"}, "ria+obs 2:4", "ria-obs-2of4-0.50"),
    ({"method": "wanda"}, "wanda 50%", "wanda-unstructured-0.50"),
])
def test_label_and_stem_name_the_update(kwargs, label, stem):
    cfg = PruneConfig(**kwargs)
    assert cfg.label == label and cfg.stem == stem


def test_run_json_carries_the_update_and_an_old_one_reads_as_none():
    request = RunRequest(prune=PruneConfig(method="wanda", weight_update="obs"))
    config = json.loads(json.dumps(request.to_dict()))
    assert config["weight_update"] == "obs" and RunRequest.from_dict(config) == request
    del config["weight_update"]
    assert RunRequest.from_dict(config).prune.weight_update == "none"


def test_the_cli_flag_and_the_sweep_axis_reach_the_config(capsys):
    parser = build_parser()
    args = parser.parse_args(["prune", "--method", "magnitude", "--weight-update", "obs"])
    assert _request(args).prune.weight_update == "obs" and _request(args).prune.label == "magnitude+obs 50%"
    assert _request(parser.parse_args(["prune"])).prune.weight_update == "none"
    with pytest.raises(SystemExit):
        parser.parse_args(["prune", "--weight-update", "sgd"])
    assert "invalid choice: 'sgd'" in capsys.readouterr().err

    cfg = _sweep_config(parser.parse_args(["sweep", "--methods", "magnitude,sparsegpt", "--weight-update", "none,obs",
                                           "--name", "u"]))
    assert cfg.weight_update == ("none", "obs") and cfg.to_dict()["weight_update"] == ["none", "obs"]
    plan = sw.plan_sweep(cfg)
    assert plan.labels == ["magnitude 50%", "magnitude+obs 50%", "sparsegpt 50%"]
    assert [r.prune.weight_update for r in plan] == ["none", "obs", "none"]
    assert plan.requests[1].name == "u-02-magnitude-obs-unstructured-0.50"
    assert "already updates the kept weights" in dict(plan.skipped)["sparsegpt+obs 50%"]
    assert sw._points(plan)[1]["weight_update"] == "obs"
    with pytest.raises(ConfigError, match="sweep weight_update"):
        sw.SweepConfig(weight_update=["obs", "lbfgs"])


def _past(method: str, prune_s: float, **prune) -> RunRecord:
    request = RunRequest(model="m", prune=PruneConfig(method=method, nsamples=4, seqlen=8, **prune), eval=None)
    return RunRecord.from_json({"status": "complete", "name": f"{method}-{prune_s}", "config": request.to_dict(),
                                "timings": {"prune_s": prune_s}})


def test_the_sweep_estimate_costs_the_update_like_sparsegpt():
    base = PruneConfig(nsamples=4, seqlen=8)
    plan = sw.plan_sweep(sw.SweepConfig(methods=["wanda"], weight_update=["none", "obs"], base=base, model="m",
                                        eval=None))
    past = [_past("wanda", 1.0), _past("sparsegpt", 5.0)]
    work = estimate_work(plan, past)
    assert work["seconds"] == pytest.approx(1.0 + 5.0)  # wanda's rate, then sparsegpt's, for the same tokens
    assert estimate_work(plan, [_past("wanda", 1.0)])["seconds"] is None  # no earlier run costs like the update
    weights_only = _past("magnitude", 0.5, calibrate=False)
    plain = sw.plan_sweep(sw.SweepConfig(methods=["magnitude"], base=base, model="m", eval=None))
    assert estimate_work(plain, [weights_only])["seconds"] is None  # a run without calibration passes is no guide


def test_the_prune_form_offers_the_update():
    from app import forms
    from wanda_engine.store.run_store import RunStore

    assert set(forms.WEIGHT_UPDATES) == {"none", "obs"} and "mask is unchanged" in forms.WEIGHT_UPDATE_HELP
    request = forms.build_request({**forms.DEFAULTS, "weight_update": "obs"}, RunStore("/nonexistent-store"))
    assert request.prune.weight_update == "obs" and request.prune.label == "wanda+obs 50%"
    assert forms.build_request(forms.DEFAULTS, RunStore("/nonexistent-store")).prune.weight_update == "none"
    with pytest.raises(ConfigError, match="already updates"):
        forms.build_request({**forms.DEFAULTS, "weight_update": "obs", "method": "sparsegpt"},
                            RunStore("/nonexistent-store"))


def test_recording_changes_nothing_the_update_writes():
    """`original` is the weight itself on fp32 models: the record and the update both read it before it changes."""
    model = tiny_model("llama")
    reference = copy.deepcopy(model)
    prune_model(model, windows(), PruneConfig(method="magnitude", weight_update="obs", **FAST), record=False)
    prune_model(reference, windows(), PruneConfig(method="magnitude", weight_update="obs", **FAST), record=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
