"""protect_channels: the weights of the top-p input channels by activation norm are never pruned, and every
comparison group still prunes exactly its target; p = 0 is the plain selection."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from test_methods import plain_ria
from test_pipeline import pruned_masks, windows

from wanda_engine.sweep import grid as sw
from wanda_engine.cli.main import _request, _sweep_config, build_parser, main
from wanda_engine.config import PruneConfig, RunRequest
from wanda_engine.core.errors import ConfigError
from wanda_engine.inputs.layers import find_blocks, find_linears, weight_of
from wanda_engine.pruning.pipeline import prune_model
from wanda_engine.methods.selection import (prune_adaptive_alpha, prune_adaptive_alpha_protected, protected_channels,
                                    protected_count, select, select_protected)

FAST = dict(nsamples=6, seqlen=24, batch_size=4)


def reference_protected(norms: np.ndarray, fraction: float) -> np.ndarray:
    """The top protected_count (ceil(p·in), tested on its own) channels by norm, equal norms in channel order."""
    return np.sort(np.argsort(-norms, kind="stable")[: protected_count(norms.size, fraction)])


def reference_protected_mask(score: np.ndarray, protected: np.ndarray, sparsity: float, group: str) -> np.ndarray:
    """Prune the lowest scores of the unprotected weights only, int(size·sparsity) per row or per matrix."""
    rows, cols = score.shape
    free = np.setdiff1d(np.arange(cols), protected)
    mask = np.zeros(score.shape, dtype=bool)
    if group == "row":
        k = int(cols * sparsity)
        for r in range(rows):
            mask[r, free[np.argsort(score[r, free], kind="stable")[:k]]] = True
    else:
        flat = np.argsort(score[:, free].ravel(), kind="stable")[: int(rows * cols * sparsity)]
        mask[flat // free.size, free[flat % free.size]] = True
    return mask


def outlier_norms(cols: int, seed: int, ties: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    norms = torch.rand(cols, generator=g) + 0.1
    norms[torch.randperm(cols, generator=g)[: max(1, cols // 20)]] *= 50  # a few outlier channels
    return norms.round(decimals=0) if ties else norms


@pytest.mark.parametrize("in_features,fraction,count", [(576, 0.01, 6), (1536, 0.001, 2), (576, 0.005, 3),
                                                        (100, 0.07, 7), (64, 0.01, 1), (10, 0.0, 0), (10, 0.1, 1)])
def test_the_protected_count_is_the_ceiling(in_features, fraction, count):
    assert protected_count(in_features, fraction) == count


def test_the_protected_channels_are_the_top_norms_and_ties_go_to_the_lower_index():
    norms = torch.tensor([1.0, 5.0, 3.0, 5.0, 0.5, 5.0, 2.0, 9.0])
    assert protected_channels(norms, 0.25).tolist() == [7, 1]  # 9, then the first of the three 5s
    assert protected_channels(norms, 0.5).tolist() == [7, 1, 3, 5]
    for seed in range(5):
        tied = outlier_norms(97, seed, ties=True)
        assert sorted(protected_channels(tied, 0.13).tolist()) == reference_protected(tied.numpy(), 0.13).tolist()


@pytest.mark.parametrize("group", ["row", "matrix"])
@pytest.mark.parametrize("shape", [(16, 64), (33, 70), (64, 128)])
@pytest.mark.parametrize("sparsity,fraction", [(0.5, 0.01), (0.5, 0.1), (0.7, 0.2), (0.3, 0.6)])
def test_protected_selection_matches_a_plain_implementation(group, shape, sparsity, fraction):
    g = torch.Generator().manual_seed(shape[1])
    score = torch.rand(shape, generator=g) * outlier_norms(shape[1], shape[0]).view(1, -1)
    norms = outlier_norms(shape[1], shape[0], ties=True)
    selection = select_protected(score, norms, sparsity, group, fraction)
    protected = reference_protected(norms.numpy(), fraction)
    assert len(protected) == protected_count(shape[1], fraction) >= 1
    assert not selection.mask[:, protected].any(), "a protected channel lost a weight"
    np.testing.assert_array_equal(selection.mask.numpy(), reference_protected_mask(score.numpy(), protected, sparsity, group))
    if group == "row":
        assert (selection.mask.sum(dim=1) == int(shape[1] * sparsity)).all()
    else:
        assert int(selection.mask.sum()) == int(score.numel() * sparsity)
    assert selection.cutoff == pytest.approx(float(score[selection.mask].max()) if group == "matrix"
                                             else float(score.where(selection.mask, -1).amax(dim=1).median()))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 24), cols=st.integers(1, 90), group=st.sampled_from(["row", "matrix"]),
       sparsity=st.floats(0, 0.95), share=st.floats(0, 0.999), levels=st.sampled_from([2, 5, 1000]),
       seed=st.integers(0, 2**16))
def test_property_protected_weights_stay_and_every_group_prunes_its_count(rows, cols, group, sparsity, share, levels, seed):
    """Any shape, sparsity and protected fraction that leaves room (scores and norms full of ties included)."""
    fraction = share * (1 - sparsity)
    g = torch.Generator().manual_seed(seed)
    score = torch.randint(0, levels, (rows, cols), generator=g).float()
    norms = torch.randint(0, levels, (cols,), generator=g).float()
    need = int(cols * sparsity) if group == "row" else int(rows * cols * sparsity)
    free = cols - protected_count(cols, fraction)
    if need > (free if group == "row" else rows * free):
        with pytest.raises(ValueError, match="fewer than"):
            select_protected(score, norms, sparsity, group, fraction)
        return
    mask = select_protected(score, norms, sparsity, group, fraction).mask
    protected = reference_protected(norms.numpy(), fraction)
    assert not mask[:, protected].any()
    counts = mask.sum(dim=1) if group == "row" else mask.sum().view(1)
    assert (counts == need).all()
    unprotected = np.setdiff1d(np.arange(cols), protected)
    groups = [(score[r, unprotected], mask[r, unprotected]) for r in range(rows)] if group == "row" else \
        [(score[:, unprotected].flatten(), mask[:, unprotected].flatten())]
    for s, m in groups:  # the lowest unprotected scores go, ties in any order
        if m.any() and (~m).any():
            assert s[m].max() <= s[~m].min()


@pytest.mark.parametrize("shape,sparsity,fraction", [((64, 256), 0.5, 0.01), ((128, 96), 0.7, 0.1), ((300, 200), 0.3, 0.02)])
def test_the_variant_keeps_the_protected_columns_and_searches_the_rest(shape, sparsity, fraction):
    g = torch.Generator().manual_seed(4)
    score = torch.randn(shape, generator=g).abs() * torch.randn(shape[1], generator=g).exp().view(1, -1)
    norms = outlier_norms(shape[1], 1)
    mask, alpha = prune_adaptive_alpha_protected(score, norms, sparsity, fraction)
    protected = reference_protected(norms.numpy(), fraction)
    assert not mask[:, protected].any()
    assert abs(mask.float().mean().item() - sparsity) <= 0.001  # the whole matrix lands at the target
    free = np.setdiff1d(np.arange(shape[1]), protected)
    part, part_alpha = prune_adaptive_alpha(score[:, free], sparsity * shape[1] / free.size)  # the definition
    assert alpha == part_alpha and torch.equal(mask[:, free], part)


def test_protecting_nothing_is_the_plain_selection():
    score, norms = torch.rand(40, 90, generator=torch.Generator().manual_seed(3)), outlier_norms(90, 2)
    for group in ("row", "matrix"):
        assert torch.equal(select_protected(score, norms, 0.6, group, 0.0).mask, select(score, 0.6, group).mask)
    mask, alpha = prune_adaptive_alpha_protected(score, norms, 0.6, 0.0)
    plain_mask, plain_alpha = prune_adaptive_alpha(score, 0.6)
    assert alpha == plain_alpha and torch.equal(mask, plain_mask)


# ---------------------------------------------------------------- end to end on tiny models

def engine_score(method: str, w: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    if method == "magnitude":
        return w.abs()
    if method == "ria":
        return plain_ria(w, norms)
    return w.abs() * norms.view(1, -1)


@pytest.mark.parametrize("method,variant,group", [("magnitude", False, None), ("magnitude", False, "row"),
                                                  ("wanda", False, None), ("wanda", False, "matrix"),
                                                  ("ria", False, None), ("ria", False, "row"), ("wanda", True, None)])
def test_a_protected_run_never_prunes_the_top_channels_and_keeps_each_groups_sparsity(method, variant, group):
    model = tiny_model("llama")
    dense = copy.deepcopy(model)
    cfg = PruneConfig(method=method, variant=variant, group=group, sparsity=0.5, protect_channels=0.05, **FAST)
    result = prune_model(model, windows(), cfg)
    got, originals = pruned_masks(model), {
        f"{i}.{n}": weight_of(l).clone() for i, b in enumerate(find_blocks(dense)[1]) for n, l in find_linears(b).items()}
    assert len(result.records) == len(got) == 14
    for rec in result.records:
        key = f"{rec.block}.{rec.name}"
        mask, norms = got[key], rec.arrays["channel_norms"]
        protected = reference_protected(norms, 0.05)
        assert len(protected) == int(np.ceil(0.05 * mask.shape[1])) and not mask[:, protected].any(), key
        if variant:  # the search over the unprotected columns lands near the target
            assert abs(mask.float().mean().item() - 0.5) < 0.01, key
            continue
        if cfg.resolved_group == "row":
            assert (mask.sum(dim=1) == mask.shape[1] // 2).all(), key
        else:
            assert int(mask.sum()) == mask.numel() // 2, key
        # the same weights a plain implementation prunes, from the recorded norms and the dense weights
        score = engine_score(method, originals[key], torch.from_numpy(norms)).numpy()
        expected = reference_protected_mask(score, protected, 0.5, cfg.resolved_group)
        assert (mask.numpy() != expected).mean() == 0, key
    assert result.sparsity == pytest.approx(0.5, abs=0.01 if variant else 1e-9)


@pytest.mark.parametrize("method,variant,pattern", [("magnitude", False, "unstructured"), ("wanda", False, "unstructured"),
                                                    ("ria", False, "unstructured"), ("wanda", True, "unstructured"),
                                                    ("sparsegpt", False, "unstructured"), ("wanda", False, "2:4")])
def test_protecting_zero_channels_gives_exactly_the_masks_of_a_config_without_the_field(method, variant, pattern):
    without = PruneConfig.from_dict({k: v for k, v in PruneConfig(method=method, variant=variant, pattern=pattern,
                                                                    **FAST).to_dict().items() if k != "protect_channels"})
    with_zero = PruneConfig(method=method, variant=variant, pattern=pattern, protect_channels=0.0, **FAST)
    masks = []
    for cfg in (without, with_zero):
        model = tiny_model("llama")
        prune_model(model, windows(), cfg, record=False)
        masks.append(pruned_masks(model))
    assert masks[0].keys() == masks[1].keys()
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    assert with_zero.label == without.label and with_zero.stem == without.stem


# ---------------------------------------------------------------- settings, labels, CLI, sweep

def one_sentence(message: str) -> bool:
    return ". " not in message and "\n" not in message and not message.endswith(".")


@pytest.mark.parametrize("kwargs,words", [
    ({"protect_channels": -0.01}, "protect_channels must be a fraction"),
    ({"protect_channels": 1.0}, "protect_channels must be a fraction"),
    ({"protect_channels": float("nan")}, "protect_channels must be a fraction"),
    ({"protect_channels": True}, "protect_channels must be a fraction"),
    ({"protect_channels": 0.01, "pattern": "2:4"}, "break the 2:4 groups"),
    ({"protect_channels": 0.01, "method": "sparsegpt"}, "sparsegpt"),
    ({"protect_channels": 0.5, "sparsity": 0.5}, "protect_channels 0.5 leaves 0.5 of each row's weights unprotected"),
    ({"protect_channels": 0.35, "sparsity": 0.7}, "use protect_channels below 0.3"),
    ({"protect_channels": 0.2, "sparsity": 0.7, "layerwise": "owl"}, "block sparsities up to 0.86"),
])
def test_bad_protection_is_refused_in_one_sentence(kwargs, words):
    with pytest.raises(ConfigError, match="protect_channels") as caught:
        PruneConfig(**kwargs)
    assert words in str(caught.value) and one_sentence(str(caught.value)), str(caught.value)


def test_a_matrix_too_narrow_for_its_protection_is_refused_before_any_weight_changes():
    """p < 1 - sparsity, yet a 64-wide matrix group cannot prune 51% from the 32 channels left of each row."""
    model = tiny_model("llama")
    before = copy.deepcopy(model.state_dict())
    cfg = PruneConfig(method="magnitude", sparsity=0.51, protect_channels=0.485, **FAST)
    with pytest.raises(ConfigError, match="keeps 32 of the 64 input channels of a 32x64 matrix") as caught:
        prune_model(model, windows(), cfg)
    assert "leaving 1024 unprotected weights per matrix, fewer than the 1044 that sparsity 0.51 prunes" in str(caught.value)
    assert one_sentence(str(caught.value))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs,label,stem", [
    ({"method": "magnitude", "protect_channels": 0.01}, "magnitude+protect1% 50%",
     "magnitude-protect0.01-unstructured-0.50"),
    ({"method": "magnitude", "protect_channels": 0.001}, "magnitude+protect0.1% 50%",
     "magnitude-protect0.001-unstructured-0.50"),
    ({"method": "magnitude", "protect_channels": 0.005}, "magnitude+protect0.5% 50%",
     "magnitude-protect0.005-unstructured-0.50"),
    ({"method": "wanda", "protect_channels": 0.02}, "wanda+protect2% 50%", "wanda-protect0.02-unstructured-0.50"),
    ({"method": "wanda", "variant": True, "layerwise": "owl", "sparsity": 0.7, "protect_channels": 0.01},
     "owl-wanda-variant+protect1% 70%", "owl-wanda-variant-protect0.01-unstructured-0.70"),
    ({"method": "magnitude"}, "magnitude 50%", "magnitude-unstructured-0.50"),
])
def test_label_and_stem_name_the_protection(kwargs, label, stem):
    cfg = PruneConfig(**kwargs)
    assert cfg.label == label and cfg.stem == stem


def test_run_json_carries_the_protection_and_an_old_one_reads_as_none():
    request = RunRequest(prune=PruneConfig(method="magnitude", protect_channels=0.01))
    config = json.loads(json.dumps(request.to_dict()))
    assert config["protect_channels"] == 0.01 and RunRequest.from_dict(config) == request
    del config["protect_channels"]
    assert RunRequest.from_dict(config).prune.protect_channels == 0.0


def test_the_cli_flag_reaches_the_config():
    parser = build_parser()
    args = parser.parse_args(["prune", "--method", "magnitude", "--protect-channels", "0.01"])
    assert _request(args).prune.protect_channels == 0.01 and _request(args).prune.label == "magnitude+protect1% 50%"
    assert _request(parser.parse_args(["prune"])).prune.protect_channels == 0.0


def test_cli_prune_with_protection_writes_it_to_run_json(capsys, tiny_model_dir, tmp_path):
    out_dir, saved = tmp_path / "run", tmp_path / "saved"
    rc = main(["prune", "--model", str(tiny_model_dir), "--method", "magnitude", "--protect-channels", "0.05",
               "--nsamples", "4", "--seqlen", "32", "--eval", "none", "--quiet", "--out", str(out_dir),
               "--save-model", str(saved)])
    _, err = capsys.readouterr()
    assert rc == 0, err
    meta = json.loads((out_dir / "run.json").read_text())
    assert meta["config"]["protect_channels"] == 0.05 and meta["sparsity"] == pytest.approx(0.5, abs=1e-6)
    from safetensors.torch import load_file

    from wanda_engine.store.run_store import load_run

    weights, run = load_file(saved / "model.safetensors"), load_run(out_dir)
    assert run.record.label() == "magnitude+protect5% 50%"
    for rec in run.records():
        mask = weights[f"{rec.full_name}.weight"] == 0
        assert not mask[:, reference_protected(rec.arrays["channel_norms"], 0.05)].any(), rec.full_name


@pytest.mark.parametrize("argv,why", [(["--protect-channels", "0.01", "--pattern", "2:4"], "break the 2:4 groups"),
                                      (["--protect-channels", "0.7"], "protect_channels 0.7 leaves"),
                                      (["--protect-channels", "-1"], "protect_channels must be a fraction")])
def test_cli_refuses_bad_protection_in_one_line(argv, why, capsys, tiny_model_dir, tmp_path):
    rc = main(["prune", "--model", str(tiny_model_dir), *argv, "--quiet", "--out", str(tmp_path / "run")])
    lines = [l for l in capsys.readouterr().err.splitlines() if l]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_the_sweep_axis_plans_one_point_per_fraction_and_skips_what_cannot_be_protected():
    args = build_parser().parse_args(["sweep", "--methods", "magnitude,sparsegpt", "--patterns", "unstructured,2:4",
                                      "--protect-channels", "0.01,0", "--name", "p"])
    cfg = _sweep_config(args)
    assert cfg.protect_channels == (0.0, 0.01)
    plan = sw.plan_sweep(cfg)
    assert plan.labels == ["magnitude 50%", "magnitude+protect1% 50%", "sparsegpt 50%", "magnitude 2:4", "sparsegpt 2:4"]
    assert [r.prune.protect_channels for r in plan] == [0.0, 0.01, 0.0, 0.0, 0.0]
    assert plan.requests[1].name == "p-02-magnitude-protect0.01-unstructured-0.50"
    reasons = dict(plan.skipped)
    assert "sparsegpt" in reasons["sparsegpt+protect1% 50%"] and "break the 2:4 groups" in reasons["magnitude+protect1% 2:4"]
    assert sw._points(plan)[1]["protect_channels"] == 0.01 and cfg.to_dict()["protect_channels"] == [0.0, 0.01]
    # a fraction that leaves too little at some sparsity is skipped there, and refused only where it never fits
    wide = sw.plan_sweep(sw.SweepConfig(methods=["wanda"], sparsities=[0.3, 0.7], protect_channels=[0.5]))
    assert wide.labels == ["wanda+protect50% 30%"] and "below 0.3" in dict(wide.skipped)["wanda+protect50% 70%"]
    for bad in ([1.0], [-0.1], []):
        with pytest.raises(ConfigError, match="protect_channels"):
            sw.SweepConfig(protect_channels=bad)
    percent = build_parser().parse_args(["sweep", "--protect-channels", "1%,0.5%"])
    assert _sweep_config(percent).protect_channels == (0.005, 0.01)
