"""calibrate=False: magnitude's masks from the weights alone, no calibration, capture or propagation pass.
The weights (so the masks and perplexities) are exactly a calibrated magnitude run's; the records hold no
activation statistics, and every view of such a run says so instead of failing."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import tiny_model
from test_pipeline import windows
from test_protect import one_sentence

from wanda_engine.outputs import explain
from wanda_engine.outputs import figures
from wanda_engine.cli.main import _request, build_parser, main
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.core.errors import ConfigError
from wanda_engine.core.events import BlockFinished, BlockStarted, MatrixPruned, PruneFinished, StageStarted
from wanda_engine.pruning.pipeline import prune_model
from wanda_engine.runner.execute import execute_run
from wanda_engine.store.run_store import RunStore

FAST = dict(nsamples=6, seqlen=24, batch_size=4)


@pytest.mark.parametrize("arch", ["llama", "opt"])
@pytest.mark.parametrize("pattern,group,sparsity", [("unstructured", "matrix", 0.5), ("unstructured", "row", 0.6),
                                                    ("2:4", None, 0.5)])
def test_every_weight_is_what_a_calibrated_magnitude_run_leaves(arch, pattern, group, sparsity):
    calibrated, weights_only = tiny_model(arch), tiny_model(arch)
    cfg = PruneConfig(method="magnitude", pattern=pattern, group=group, sparsity=sparsity, **FAST)
    a = prune_model(calibrated, windows(), cfg)
    b = prune_model(weights_only, windows(), replace(cfg, calibrate=False))
    for (name, w), (other, w2) in zip(calibrated.state_dict().items(), weights_only.state_dict().items()):
        assert name == other and torch.equal(w, w2), name
    assert a.sparsity == b.sparsity and [r.sparsity for r in a.records] == [r.sparsity for r in b.records]
    assert [blk.sparsity for blk in a.blocks] == [blk.sparsity for blk in b.blocks]


def test_the_weights_alone_skip_every_pass_and_emit_the_same_kinds_of_events():
    events: list = []
    result = prune_model(tiny_model("llama"), windows(), PruneConfig(method="magnitude", calibrate=False, **FAST),
                         on_event=events.append)
    kinds = {type(e) for e in events}
    assert kinds == {BlockStarted, MatrixPruned, BlockFinished, PruneFinished}  # no capture stage: nothing captured
    assert not any(isinstance(e, StageStarted) for e in events)
    assert [type(e) for e in events].count(BlockFinished) == len(result.blocks) == 2
    assert all(e.block_error is None for e in events if isinstance(e, BlockFinished))
    assert all(b.block_error is None and b.outlier_ratio is None for b in result.blocks)
    assert result.timings["capture_s"] == result.timings["calibrate_s"] == result.timings["propagate_s"] == 0.0
    assert result.timings["select_s"] > 0


def test_the_records_hold_no_activation_statistics():
    calibrated = prune_model(tiny_model("llama"), windows(), PruneConfig(method="magnitude", **FAST))
    weights_only = prune_model(tiny_model("llama"), windows(), PruneConfig(method="magnitude", calibrate=False, **FAST))
    assert len(weights_only.records) == len(calibrated.records) == 14
    for rec, full in zip(weights_only.records, calibrated.records):
        assert rec.key == full.key and rec.sparsity == full.sparsity and rec.row_sparsity == full.row_sparsity
        assert rec.proxy_error is None and rec.channels is None and rec.by_metric is None and rec.overlap is None
        assert set(rec.hist) == {"magnitude"} and rec.hist["magnitude"] == full.hist["magnitude"]
        assert set(rec.arrays) == {"density", "row_pruned", "channel_pruned"}
        assert all((rec.arrays[k] == full.arrays[k]).all() for k in ("density", "row_pruned", "channel_pruned"))


def test_the_views_of_a_run_without_statistics_say_so():
    result = prune_model(tiny_model("llama"), windows(), PruneConfig(method="magnitude", calibrate=False, **FAST))
    rec = result.records[0]
    for fig, note in [(figures.channel_norms(rec), "no activation statistics"),
                      (figures.mask_crop(rec), "no mask crop recorded"),
                      (figures.overlap_heatmap(result.records), "no overlap recorded")]:
        assert any(note in a.text for a in fig.layout.annotations), note
    assert figures.metric_histograms(rec).data and figures.row_sparsity(rec).data and figures.density_map(rec).data
    assert figures.sparsity_heatmap(result.records).data
    progress = figures.block_progress(result.blocks)
    assert list(progress.data[0].y) == [b.sparsity for b in result.blocks]
    assert "pruned from the weights alone, without calibration" in progress.layout.title.subtitle.text


@pytest.mark.parametrize("kwargs,words", [
    ({"method": "wanda"}, "method 'wanda' scores weights by their activations"),
    ({"method": "sparsegpt"}, "method 'sparsegpt' scores weights by their activations"),
    ({"method": "magnitude", "protect_channels": 0.01}, "protect_channels picks the channels by their activation"),
    ({"method": "magnitude", "layerwise": "owl"}, "layerwise 'owl' measures each block's outliers"),
    ({"method": "magnitude", "weight_update": "obs"}, "weight_update 'obs' solves on the block's Gram matrix"),
    ({"method": "wanda", "variant": True}, "method 'wanda' scores weights"),
])
def test_calibrate_false_is_refused_where_the_activations_are_needed(kwargs, words):
    with pytest.raises(ConfigError, match="calibrate false") as caught:
        PruneConfig(calibrate=False, **kwargs)
    assert words in str(caught.value) and one_sentence(str(caught.value)), str(caught.value)
    with pytest.raises(ConfigError, match="calibrate must be true or false"):
        PruneConfig(method="magnitude", calibrate="no")


def test_not_in_the_label_but_in_run_json_and_the_same_settings():
    cfg = PruneConfig(method="magnitude", calibrate=False)
    assert cfg.label == PruneConfig(method="magnitude").label == "magnitude 50%"
    request = RunRequest(prune=cfg)
    config = json.loads(json.dumps(request.to_dict()))
    assert config["calibrate"] is False and RunRequest.from_dict(config) == request
    del config["calibrate"]
    assert RunRequest.from_dict(config).prune.calibrate is True


def test_the_cli_flag(capsys, tiny_model_dir, tmp_path):
    parser = build_parser()
    assert _request(parser.parse_args(["prune", "--method", "magnitude", "--no-calibration"])).prune.calibrate is False
    assert _request(parser.parse_args(["prune", "--method", "magnitude"])).prune.calibrate is True
    rc = main(["prune", "--model", str(tiny_model_dir), "--method", "wanda", "--no-calibration", "--quiet",
               "--out", str(tmp_path / "run")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("error: calibrate false") and "wanda" in lines[0], lines
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # two runs with evaluation through the runner (about 6 s)
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_a_run_from_the_weights_scores_the_calibrated_runs_perplexity(tiny_model_dir, tmp_path, pattern):
    from wanda_engine.inputs.models import load_model

    loaded = load_model(str(tiny_model_dir))
    request = RunRequest(model=str(tiny_model_dir), prune=PruneConfig(method="magnitude", pattern=pattern, nsamples=4,
                                                                      seqlen=32, device="cpu"),
                         eval=EvalConfig(seqlen=32, windows=2))
    store = RunStore(tmp_path / "runs")
    calibrated = execute_run(request, store=store, loaded=loaded).record
    weights_only = execute_run(replace(request, prune=replace(request.prune, calibrate=False)), store=store,
                               loaded=loaded).record
    assert weights_only.request.prune.calibrate is False and calibrated.request.prune.calibrate is True
    assert weights_only.ppl == calibrated.ppl and weights_only.mask_sha256 == calibrated.mask_sha256
    assert weights_only.sparsity == calibrated.sparsity and weights_only.label() == calibrated.label()
    assert explain.same_settings(weights_only, calibrated)


def test_the_compare_prunes_magnitude_from_the_weights_where_it_can():
    pytest.importorskip("streamlit")
    from app import forms
    from app.submit import _from_the_weights

    store = RunStore("/nonexistent-store")
    magnitude = forms.build_request(forms.DEFAULTS, store, method="magnitude")
    assert _from_the_weights(magnitude).prune == replace(magnitude.prune, calibrate=False)
    for values in ({"layerwise": "owl", "sparsity": 0.7}, {"weight_update": "obs"}):
        calibrated = forms.build_request({**forms.DEFAULTS, **values}, store, method="magnitude")
        assert _from_the_weights(calibrated) == calibrated  # these settings need the activations
    wanda = forms.build_request(forms.DEFAULTS, store, method="wanda")
    assert _from_the_weights(wanda) == wanda


@pytest.mark.slow  # a run through the runner, then AppTest over six pages
def test_the_pages_of_a_run_from_the_weights_render_and_say_what_needs_activations(app_env):
    pytest.importorskip("streamlit")
    from test_app import goto, new_app, no_exceptions

    request = RunRequest(model=str(app_env.model), eval=EvalConfig(seqlen=32, windows=2),
                         prune=PruneConfig(method="magnitude", calibrate=False, nsamples=4, seqlen=32, device="cpu"))
    run = execute_run(request, store=RunStore(app_env.runs))
    at = new_app()  # the only run: the current one
    no_exceptions(at)
    assert at.session_state["current_run"] == run.name
    assert any("no activation statistics" in i.value for i in at.info)  # the overview, where channel norms would be
    for page in ("layers", "masks", "sparsity", "perplexity", "explain", "runs"):
        at = goto(at, page)
        no_exceptions(at)
        if page in ("layers", "masks"):
            assert any("pruned from the weights alone" in i.value for i in at.info), page
