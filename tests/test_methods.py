"""RIA and OWL against straightforward implementations on tiny models; OWL's ratios average to the target."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from test_pipeline import per_sample_norms, pruned_masks, windows

from wanda_engine.config import PruneConfig
from wanda_engine.core.errors import ConfigError
from wanda_engine.inputs.layers import find_blocks, find_linears, weight_of
from wanda_engine.pruning.pipeline import owl_sparsities, prune_model


def plain_ria(w: torch.Tensor, norms: torch.Tensor, a: float = 0.5) -> torch.Tensor:
    """RIA eq. 4 written out element by element over columns and rows."""
    out_f, in_f = w.shape
    col_sums = torch.stack([w[:, j].abs().sum() for j in range(in_f)])
    row_sums = torch.stack([w[i, :].abs().sum() for i in range(out_f)])
    return (w.abs() / col_sums.view(1, -1) + w.abs() / row_sums.view(-1, 1)) * norms.view(1, -1) ** a


def lowest_in_matrix(metric: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = int(metric.numel() * sparsity)
    mask = torch.zeros(metric.numel(), dtype=torch.bool)
    mask[torch.sort(metric.flatten(), stable=True).indices[:k]] = True
    return mask.view_as(metric)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_ria_matches_a_plain_implementation(arch):
    calib = windows()
    engine_model, reference = tiny_model(arch), tiny_model(arch)
    result = prune_model(engine_model, calib, PruneConfig(method="ria", sparsity=0.5, nsamples=6, seqlen=24, batch_size=4))
    assert {r.group for r in result.records} == {"matrix"}  # RIA's default comparison group
    got = pruned_masks(engine_model)
    for i, block in enumerate(find_blocks(reference)[1]):
        norms = per_sample_norms(reference, calib, i)
        for name, layer in find_linears(block).items():
            w = weight_of(layer)
            expected = lowest_in_matrix(plain_ria(w, norms[name]), 0.5)
            mismatch = (got[f"{i}.{name}"] != expected).float().mean().item()
            assert mismatch == 0, f"{arch} block {i} {name}: {mismatch:.4%} differs"
            w[expected] = 0  # the next block sees the pruned model, as in the pipeline
    assert {"ria", "wanda", "magnitude"} <= set(result.records[0].hist)


def test_owl_sparsities_average_to_the_target_and_follow_the_outliers():
    ratios = [0.010, 0.030, 0.020, 0.002, 0.015]
    sp = owl_sparsities(ratios, 0.7, 0.08)
    assert sum(sp) / len(sp) == pytest.approx(0.7, abs=1e-12)
    assert max(sp) - min(sp) == pytest.approx(0.16)  # spread over 2·lambda
    order = sorted(range(5), key=ratios.__getitem__)
    assert [sp[i] for i in order] == sorted(sp, reverse=True)  # more outliers, fewer weights pruned
    assert owl_sparsities([0.01, 0.01], 0.6, 0.08) == pytest.approx([0.6, 0.6])


def test_owl_block_targets_come_from_the_dense_models_outlier_ratios():
    arch, m, lam, target = "llama", 5.0, 0.08, 0.6
    calib = windows()
    model, dense = tiny_model(arch), tiny_model(arch)
    cfg = PruneConfig(method="wanda", sparsity=target, layerwise="owl", owl_m=m, owl_lambda=lam, nsamples=6, seqlen=24)
    result = prune_model(model, calib, cfg)

    # Reference: outlier ratios of the *dense* model's Wanda scores, each block's matrices concatenated.
    ratios = []
    for i, block in enumerate(find_blocks(dense)[1]):
        norms = per_sample_norms(dense, calib, i)
        scores = torch.cat([(weight_of(l).abs() * norms[n].view(1, -1)).flatten() for n, l in find_linears(block).items()])
        ratios.append(float((scores > m * scores.mean()).float().mean()))
    assert [b.outlier_ratio for b in result.blocks] == pytest.approx(ratios, abs=1e-6)
    expected = owl_sparsities(ratios, target, lam)
    assert result.block_targets == pytest.approx(expected, abs=1e-6)
    assert sum(result.block_targets) / len(result.block_targets) == pytest.approx(target)
    for b in result.blocks:  # each block reaches its own target (per row, up to rounding)
        assert b.sparsity == pytest.approx(b.target, abs=0.02)
    assert result.sparsity == pytest.approx(target, abs=0.02)


@pytest.mark.parametrize("method", ["magnitude", "sparsegpt"])
def test_owl_works_with_other_methods(method):
    result = prune_model(tiny_model("llama"), windows(), PruneConfig(method=method, sparsity=0.6, layerwise="owl",
                                                                     nsamples=6, seqlen=24))
    assert len({round(t, 6) for t in result.block_targets}) == 2
    assert sum(result.block_targets) / 2 == pytest.approx(0.6)


@pytest.mark.parametrize("bad", [dict(layerwise="owl", sparsity=0.1), dict(layerwise="owl", pattern="2:4"),
                                 dict(layerwise="layer"), dict(method="ria", ria_power=-1.0),
                                 dict(layerwise="owl", owl_m=float("nan"))])
def test_bad_method_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        PruneConfig(**bad)


def test_owl_figure_shows_the_recorded_ratios_and_targets():
    from wanda_engine.outputs import figures

    cfg = PruneConfig(method="wanda", sparsity=0.6, layerwise="owl", nsamples=6, seqlen=24)
    result = prune_model(tiny_model("llama"), windows(), cfg)
    blocks = [b.to_dict() for b in result.blocks]
    fig = figures.owl_block_ratios(result.blocks, cfg)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["outlier ratio"].y) == [b["outlier_ratio"] for b in blocks]
    assert list(by_name["target"].y) == result.block_targets
    assert list(by_name["achieved"].y) == [b["sparsity"] for b in blocks]
    assert "λ = 0.08" in fig.layout.title.subtitle.text
    uniform = figures.owl_block_ratios(prune_model(tiny_model("llama"), windows(), PruneConfig(nsamples=6, seqlen=24)).blocks)
    assert "uniform run" in str(uniform.layout.annotations)


def test_wanda_2of4_matches_a_per_sample_per_group_loop():
    """The pipeline's batched calibration and vectorised N:M selection against plain loops."""
    calib = windows()
    engine_model, reference = tiny_model("llama"), tiny_model("llama")
    prune_model(engine_model, calib, PruneConfig(method="wanda", pattern="2:4", nsamples=6, seqlen=24, batch_size=4))
    got = pruned_masks(engine_model)
    for i, block in enumerate(find_blocks(reference)[1]):
        norms = per_sample_norms(reference, calib, i)
        for name, layer in find_linears(block).items():
            w = weight_of(layer)
            metric = w.abs() * norms[name].view(1, -1)
            expected = torch.zeros_like(w, dtype=torch.bool)
            for r in range(w.shape[0]):
                for g in range(0, w.shape[1], 4):
                    expected[r, g + torch.sort(metric[r, g:g + 4], stable=True).indices[:2]] = True
            assert torch.equal(got[f"{i}.{name}"], expected), f"block {i} {name}"
            w[expected] = 0


@pytest.mark.parametrize("group,nm", [("row", None), ("matrix", None), ("nm", (2, 4))])
def test_selection_cutoff_is_the_largest_pruned_score(group, nm):
    from wanda_engine.methods.selection import select

    score = torch.rand(24, 32, generator=torch.Generator().manual_seed(3))
    mask, cutoff = select(score, 0.5, group, nm)
    if group == "matrix":
        expected = float(score[mask].max())
    else:  # the median over rows of each row's largest pruned score
        expected = float(torch.stack([score[r][mask[r]].max() for r in range(score.shape[0])]).median())
    assert cutoff == expected


def test_metric_histogram_matches_numpy_with_zero_scores():
    """The one-bincount histogram against numpy's, per split, with exact zeros counted apart."""
    import numpy as np

    from wanda_engine.pruning.recording import HIST_BINS, _log_hist

    g = torch.Generator().manual_seed(5)
    score = torch.rand(40, 64, generator=g) ** 3
    score[score < 0.01] = 0  # some exact zeros: already-pruned weights
    mask = torch.rand(40, 64, generator=g) < 0.5
    h = _log_hist(score, mask, cutoff=0.25)
    positive = score > 0
    logs = np.log10(score[positive].numpy().astype(np.float64))
    edges = np.linspace(logs.min(), logs.max(), HIST_BINS + 1)
    for split, sel in (("pruned", mask), ("kept", ~mask)):
        expected, _ = np.histogram(np.log10(score[positive & sel].numpy().astype(np.float64)), bins=edges)
        got = np.asarray(h[split])
        assert got.sum() == expected.sum() == int((positive & sel).sum())
        assert np.abs(got - expected).sum() <= 2  # a value on a bin edge may fall either side in fp32
    assert h["zero_weights"] == int((~positive).sum())
    assert h["cutoff"] == pytest.approx(np.log10(0.25))


@pytest.mark.parametrize("shape", [(1536, 576), (192, 576), (100, 70), (30, 200)])
def test_density_tiles_are_the_pruned_fraction_per_tile(shape):
    """Equal tiles are summed over a view, others pooled; both against a plain per-tile loop."""
    from wanda_engine.pruning.recording import _density_map

    mask = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) < 0.3
    got = _density_map(mask)
    rows, cols = got.shape
    for i in range(rows):  # adaptive pooling's tile bounds: floor(i*n/k) .. ceil((i+1)*n/k)
        r0, r1 = (i * shape[0]) // rows, -((-(i + 1) * shape[0]) // rows)
        for j in range(cols):
            c0, c1 = (j * shape[1]) // cols, -((-(j + 1) * shape[1]) // cols)
            assert got[i, j] == pytest.approx(mask[r0:r1, c0:c1].float().mean().item(), abs=1e-6)
