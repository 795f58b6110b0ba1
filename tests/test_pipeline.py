"""The one pipeline on tiny random models of every architecture family, against a straightforward reference."""
from __future__ import annotations

import threading

import pytest
import torch
from conftest import TINY_CONFIGS, TINY_VOCAB, tiny_model

from wanda_engine.config import PruneConfig
from wanda_engine.core.errors import ConfigError, ModelLoadError, PruneCancelled
from wanda_engine.core.events import BlockFinished, BlockStarted, MatrixPruned, PruneFinished, StageStarted
from wanda_engine.inputs.layers import find_blocks, find_linears, weight_of
from wanda_engine.pruning.pipeline import prune_model
from wanda_engine.core.stages import BY_NAME

ARCHS = list(TINY_CONFIGS)


def windows(n: int = 6, seqlen: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TINY_VOCAB, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def per_sample_norms(model, calib: torch.Tensor, block_index: int) -> dict[str, torch.Tensor]:
    """‖X_j‖ per input channel of each linear of one block, the reference's way: the whole model
    (earlier blocks as they are now) run one sample at a time, a running mean of each sample's ‖x_j‖²."""
    layers = find_linears(find_blocks(model)[1][block_index])
    scaler = {name: torch.zeros(weight_of(l).shape[1]) for name, l in layers.items()}
    count = {name: 0 for name in layers}

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
            scaler[name] *= count[name] / (count[name] + 1)
            count[name] += 1
            scaler[name] += torch.norm(x, p=2, dim=0) ** 2 / count[name]
        return fn

    handles = [l.register_forward_hook(hook(n)) for n, l in layers.items()]
    with torch.no_grad():
        for sample in calib:
            model(input_ids=sample[None], use_cache=False)
    for h in handles:
        h.remove()
    return {name: s.sqrt() for name, s in scaler.items()}


def reference_wanda_masks(model, calib: torch.Tensor, sparsity: float) -> dict[str, torch.Tensor]:
    """Straightforward Wanda, independent of the engine's capture and replay: for block i, the
    per-sample norms of its inputs with earlier blocks already pruned, then each row pruned by a
    stable sort."""
    _, blocks = find_blocks(model)
    masks = {}
    for i, block in enumerate(blocks):
        norms = per_sample_norms(model, calib, i)
        for name, layer in find_linears(block).items():
            w = weight_of(layer)
            metric = w.abs() * norms[name].view(1, -1)
            k = int(w.shape[1] * sparsity)
            mask = torch.zeros_like(w, dtype=torch.bool)
            for r in range(w.shape[0]):  # row by row, as plainly as possible
                mask[r, torch.sort(metric[r], stable=True).indices[:k]] = True
            w[mask] = 0
            masks[f"{i}.{name}"] = mask
    return masks


def pruned_masks(model) -> dict[str, torch.Tensor]:
    _, blocks = find_blocks(model)
    return {f"{i}.{n}": weight_of(l) == 0 for i, b in enumerate(blocks) for n, l in find_linears(b).items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_wanda_matches_reference_on_every_architecture(arch):
    calib = windows()
    engine_model, reference_model = tiny_model(arch), tiny_model(arch)
    prune_model(engine_model, calib, PruneConfig(method="wanda", sparsity=0.5, nsamples=6, seqlen=24, batch_size=4))
    expected = reference_wanda_masks(reference_model, calib, 0.5)
    got = pruned_masks(engine_model)
    assert got.keys() == expected.keys() and len(got) >= 8
    for key in expected:
        mismatch = (got[key] != expected[key]).float().mean().item()
        assert mismatch == 0, f"{arch} {key}: {mismatch:.4%} of the mask differs from the reference"
    # the pruned model still runs and gives finite logits
    with torch.no_grad():
        assert torch.isfinite(engine_model(input_ids=calib[:2]).logits).all()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
@pytest.mark.parametrize("method,pattern", [("magnitude", "unstructured"), ("wanda", "2:4"), ("sparsegpt", "unstructured"),
                                            ("sparsegpt", "4:8")])
def test_methods_and_patterns_reach_their_sparsity(arch, method, pattern):
    model = tiny_model(arch)
    cfg = PruneConfig(method=method, sparsity=0.5, pattern=pattern, nsamples=4, seqlen=16, batch_size=2)
    result = prune_model(model, windows(4, 16), cfg)
    assert result.sparsity == pytest.approx(0.5, abs=1e-6)
    for key, mask in pruned_masks(model).items():
        if pattern == "unstructured":
            assert mask.float().mean().item() >= 0.5 - 1e-6, key
        else:
            n, m = cfg.nm
            assert (mask.view(mask.shape[0], -1, m).sum(dim=2) >= n).all(), key
    assert {r.group for r in result.records} == {cfg.resolved_group}


def test_records_describe_each_matrix():
    model = tiny_model("llama")
    result = prune_model(model, windows(), PruneConfig(method="wanda", sparsity=0.6, nsamples=6, seqlen=24))
    n_layers = sum(len(find_linears(b)) for b in find_blocks(model)[1])
    assert len(result.records) == n_layers
    for rec in result.records:
        mask = weight_of(dict(model.named_modules())[rec.full_name]) == 0
        assert rec.sparsity == pytest.approx(mask.float().mean().item())
        assert rec.row_sparsity["min"] == pytest.approx(0.6, abs=1 / rec.shape[1])
        h = rec.hist["wanda"]
        assert sum(h["pruned"]) + sum(h["kept"]) + h["zero_weights"] == mask.numel()
        assert sum(h["pruned"]) + h["zero_weights"] >= int(mask.sum()) - h["zero_weights"]
        assert 0 <= rec.overlap.jaccard <= 1
        assert rec.overlap.both + rec.overlap.only_method == pytest.approx(rec.sparsity)
        assert rec.arrays["channel_norms"].shape == (rec.shape[1],)
        assert rec.arrays["density"].max() <= 1
        assert rec.arrays["mask_crop"].shape == (len(rec.arrays["crop_rows"]), len(rec.arrays["crop_cols"]))
        assert 0 <= rec.proxy_error < 1
    assert all(b.block_error >= 0 for b in result.blocks)


def test_events_arrive_in_order():
    events = []
    model = tiny_model("qwen2")
    prune_model(model, windows(), PruneConfig(nsamples=6, seqlen=24), on_event=events.append)
    started = [e.block for e in events if isinstance(e, BlockStarted)]
    finished = [e for e in events if isinstance(e, BlockFinished)]
    assert started == [0, 1] and [e.block for e in finished] == [0, 1]
    per_block = [e for e in events if isinstance(e, MatrixPruned) and e.block == 0]
    assert [e.matrix for e in per_block] == list(find_linears(find_blocks(model)[1][0]))
    assert isinstance(events[-1], PruneFinished) and events[-1].sparsity == pytest.approx(0.5)
    assert all(a.elapsed_s <= b.elapsed_s for a, b in zip(events, events[1:]))


def test_the_stages_it_announces_are_in_the_stage_table():
    events = []
    prune_model(tiny_model("llama"), windows(), PruneConfig(sparsity=0.6, layerwise="owl", nsamples=6, seqlen=24),
                on_event=events.append)
    stages = [e.stage for e in events if isinstance(e, StageStarted)]
    assert stages == ["owl", "capture"] and all(name in BY_NAME for name in stages)


def test_cancel_stops_between_blocks():
    model = tiny_model("llama")
    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, BlockFinished):
            cancel.set()

    with pytest.raises(PruneCancelled, match="after 1 of 2 blocks"):
        prune_model(model, windows(), PruneConfig(nsamples=6, seqlen=24), on_event=on_event, cancel=cancel)
    masks = pruned_masks(model)
    assert all(m.any() for k, m in masks.items() if k.startswith("0."))
    assert not any(m.any() for k, m in masks.items() if k.startswith("1."))


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_batch_size_does_not_change_masks(method):
    calib = windows(8, 16)
    a, b = tiny_model("llama"), tiny_model("llama")
    prune_model(a, calib, PruneConfig(method=method, nsamples=8, seqlen=16, batch_size=1))
    prune_model(b, calib, PruneConfig(method=method, nsamples=8, seqlen=16, batch_size=8))
    for key, mask in pruned_masks(a).items():
        assert (mask != pruned_masks(b)[key]).float().mean() < 0.002, key


def test_impossible_pattern_changes_nothing():
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="does not divide"):
        prune_model(model, windows(), PruneConfig(pattern="3:7", nsamples=6, seqlen=24))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_model_without_decoder_blocks_is_refused():
    class NotAnLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    with pytest.raises(ModelLoadError, match="no decoder blocks"):
        find_blocks(NotAnLM())
