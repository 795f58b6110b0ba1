"""Where the zeros fall (issue 19, item 16): each record counts the pruned weights of every output row and every
input channel, checked against the pruned model's own zeros; the side-by-side figure draws exactly those shares
on one colour scale, and shows what differs between methods: a per-matrix group prunes rows unevenly, Wanda
spares a loud input channel's weights."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from wanda_engine.config import PruneConfig
from wanda_engine.inputs.layers import find_blocks, find_linears, weight_of
from wanda_engine.outputs.figures.zeros import zeros_where

LOUD = 5  # the input channel of block 0's attention made loud: its layer norm's gain times LOUDNESS
LOUDNESS = 40.0


def _pruned(method: str, group: str):
    from conftest import tiny_model

    from wanda_engine.pruning.pipeline import prune_model

    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[0].input_layernorm.weight[LOUD] *= LOUDNESS
    torch.manual_seed(1)
    windows = torch.randint(0, 512, (4, 32))
    config = PruneConfig(method=method, group=group, nsamples=4, seqlen=32, batch_size=4, device="cpu")
    return model, prune_model(model, windows, config)


@pytest.fixture(scope="module")
def pair():
    return {"wanda": _pruned("wanda", "row"), "magnitude": _pruned("magnitude", "matrix")}


def test_the_counts_are_the_pruned_models_zeros(pair):
    for model, result in pair.values():
        _, blocks = find_blocks(model)
        for rec in result.records:
            zeros = weight_of(find_linears(blocks[rec.block])[rec.name]) == 0
            assert rec.arrays["row_pruned"].dtype == np.uint16
            np.testing.assert_array_equal(rec.arrays["row_pruned"], zeros.sum(dim=1).numpy())
            np.testing.assert_array_equal(rec.arrays["channel_pruned"], zeros.sum(dim=0).numpy())


def test_the_figure_draws_the_shares_side_by_side_on_one_scale(pair):
    runs = [(name, result.records) for name, (_, result) in pair.items()]
    fig = zeros_where(runs, "self_attn.q_proj")
    heat = {t.name: t for t in fig.data}
    assert set(heat) == {"wanda: output rows", "wanda: input channels", "magnitude: output rows",
                         "magnitude: input channels"}
    assert len({(t.zmin, t.zmax, t.zmid) for t in heat.values()}) == 1  # one colour scale
    assert sum(bool(t.showscale) for t in heat.values()) == 1
    for name, (_, result) in pair.items():
        recs = sorted((r for r in result.records if r.name == "self_attn.q_proj"), key=lambda r: r.block)
        out_f, in_f = recs[0].shape
        np.testing.assert_allclose(heat[f"{name}: output rows"].z, [r.arrays["row_pruned"] / in_f for r in recs])
        np.testing.assert_allclose(heat[f"{name}: input channels"].z,
                                   [r.arrays["channel_pruned"] / out_f for r in recs])
    rows = {name: np.asarray(heat[f"{name}: output rows"].z) for name in pair}
    channels = {name: np.asarray(heat[f"{name}: input channels"].z) for name in pair}
    # Wanda's per-row group prunes every row alike; magnitude's per-matrix group does not
    assert np.all(rows["wanda"] == rows["wanda"][0, 0]) and rows["magnitude"].std() > 0.02
    # Wanda spares the loud channel's weights; magnitude, blind to activations, does not
    assert channels["wanda"][0, LOUD] < 0.2 < channels["magnitude"][0, LOUD]
    sub = fig.layout.title.subtitle.text.replace("<br>", " ")
    assert "wanda: rows 50%–50% pruned (std 0.0%)" in sub and "loudest 1% of input channels" in sub


def test_runs_recorded_before_the_counts_say_so(pair):
    records = [replace(r, arrays={k: v for k, v in r.arrays.items() if k not in ("row_pruned", "channel_pruned")})
               for r in pair["wanda"][1].records]
    fig = zeros_where([("old", records)], "self_attn.q_proj")
    assert not fig.data and "old: no per-row and per-channel counts recorded" in fig.layout.annotations[0].text
