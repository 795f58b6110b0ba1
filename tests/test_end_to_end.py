"""End to end on the embedded model (SmolLM2-135M-Instruct): Wanda far below magnitude at 50%."""
from __future__ import annotations

import pytest

from helpers.checks import parameter_checksum
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.runner.execute import execute_run

pytestmark = pytest.mark.slow  # the embedded model end to end

# Small enough for CI on 2 cores (~1 minute per method), large enough to separate the methods.
CALIB = dict(nsamples=16, seqlen=256)
EVAL = EvalConfig(seqlen=512, windows=10)


@pytest.fixture(scope="module")
def runs(embedded, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    checksum = parameter_checksum(embedded.model)
    out = {}
    for method in ("magnitude", "wanda"):
        request = RunRequest(prune=PruneConfig(method=method, sparsity=0.5, **CALIB), eval=EVAL)
        run = execute_run(request, run_dir=root / method, loaded=embedded)
        out[method] = run
    assert parameter_checksum(embedded.model) == checksum, "the loaded dense model must never be mutated"
    return out


def test_wanda_perplexity_far_below_magnitude(runs):
    dense, magnitude, wanda = runs["wanda"].record.ppl_dense, runs["magnitude"].record.ppl, runs["wanda"].record.ppl
    print(f"\nembedded model, {runs['wanda'].record.eval}: dense {dense:.2f}, magnitude {magnitude:.2f}, wanda {wanda:.2f}")
    assert runs["magnitude"].record.ppl_dense == dense
    assert dense < wanda < magnitude
    assert wanda < magnitude / 3, "Wanda should keep perplexity far below magnitude pruning at 50%"
    assert wanda < 2.5 * dense


def test_runs_record_what_they_were_measured_on(runs):
    for run in runs.values():
        record = run.record
        assert record.status == "complete"
        assert record.sparsity == pytest.approx(0.5, abs=1e-4)
        assert record.eval.to_json() == {"dataset": "austen:prideprejudice", "seqlen": 512, "windows": 10,
                                         "tokens": 5120, "tokens_per_s": record.eval.tokens_per_s}
        assert record.calibration.label == "austen:emma" and record.calibration.nsamples == 16
        assert record.model.num_blocks == 30 and len(record.layers) == 30 * 7


def test_outlier_channels_explain_the_difference(runs):
    """Where Wanda and magnitude disagree, magnitude prunes weights of high-norm input channels that Wanda keeps."""
    import numpy as np

    from wanda_engine.store.matrix_records import PRUNED_ONLY_METHOD, PRUNED_ONLY_REFERENCE

    records = runs["wanda"].records()
    assert len(records) == 210
    assert max(r.channels["max_over_median"] for r in records) > 10, "SmolLM2 has outlier input channels"
    only_magnitude, only_wanda = [], []
    for r in records:
        norms = r.arrays["channel_norms"][r.arrays["crop_cols"]]  # [cols]
        crop = r.arrays["mask_crop"]  # [rows, cols]
        only_magnitude.append(np.broadcast_to(norms, crop.shape)[crop == PRUNED_ONLY_REFERENCE])
        only_wanda.append(np.broadcast_to(norms, crop.shape)[crop == PRUNED_ONLY_METHOD])
    assert np.concatenate(only_magnitude).mean() > 2 * np.concatenate(only_wanda).mean()
    assert all(r.overlap.reference == "magnitude" and r.overlap.jaccard < 1 for r in records)
