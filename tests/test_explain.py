"""The Explain page's argument: the toy against a hand computation, the per-channel error decomposition
against the recorded proxy errors, sentences that follow the records, and the page itself under AppTest."""
from __future__ import annotations

import copy
import dataclasses
import html
import re

import numpy as np
import pytest
import torch

from wanda_engine.outputs import explain
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.store.run_record import RunRecord
from wanda_engine.store.matrix_records import MatrixRecord, top1pct_count


# --- step 1: the toy -------------------------------------------------------------------------------
def test_toy_against_a_hand_computation_on_2x4():
    weight = np.array([[0.1, -2.0, 0.5, 1.0],
                       [3.0, 0.2, -0.4, 0.05]])
    norms = np.array([1.0, 1.0, 10.0, 1.0])  # channel 2 is the outlier
    toy = explain.prune_toy(weight, norms, 0.5, outlier=2, scale=10)
    # magnitude: the two smallest |W| per row -> row 0 {0.1, 0.5}, row 1 {0.05, 0.2}
    assert toy.masks["magnitude"].tolist() == [[True, False, True, False], [False, True, False, True]]
    # Wanda: |W|·‖X‖ = row 0 [0.1, 2, 5, 1] -> {0.1, 1}; row 1 [3, 0.2, 4, 0.05] -> {0.05, 0.2}
    assert toy.masks["wanda"].tolist() == [[True, False, False, True], [False, True, False, True]]
    # Σ ΔW²·‖X_j‖²
    assert toy.errors["magnitude"] == pytest.approx(0.1**2 + 0.5**2 * 100 + 0.2**2 + 0.05**2)  # 25.0525
    assert toy.errors["wanda"] == pytest.approx(0.1**2 + 1.0**2 + 0.2**2 + 0.05**2)  # 1.0525
    sentence = toy.sentence
    assert "magnitude prunes 1 of the 2 weights" in sentence and "Wanda 0" in sentence
    assert "25.1" in sentence and "1.05" in sentence and "23.8×" in sentence


def test_toy_slider_ends():
    flat, loud = explain.toy(1), explain.toy(100)
    assert flat.weight.shape == (6, 8) and loud.norms[loud.outlier] == 100 and (np.delete(loud.norms, 2) == 1).all()
    assert (flat.masks["magnitude"] == flat.masks["wanda"]).all()  # equal norms: the same mask
    assert flat.errors["magnitude"] == flat.errors["wanda"] and "about the same" in flat.sentence
    assert not loud.masks["wanda"][:, loud.outlier].any() and loud.masks["magnitude"][:, loud.outlier].any()
    assert loud.errors["magnitude"] > 100 * loud.errors["wanda"]
    for t in (flat, loud):  # 50% of every row, for both
        assert all((m.sum(axis=1) == 4).all() for m in t.masks.values())


# --- the records: per-channel errors of both metrics ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_runs():
    """A tiny LLaMA pruned by Wanda and by magnitude, each in its own default group (Wanda per row, magnitude per
    matrix: the Compare's two runs), on the same weights and windows, with the dense copy."""
    from conftest import tiny_model

    from wanda_engine.pruning.pipeline import prune_model

    torch.manual_seed(1)
    windows = torch.randint(0, 512, (4, 32))
    dense = tiny_model("llama")
    out = {"dense": copy.deepcopy(dense)}
    for method in ("wanda", "magnitude"):
        model = copy.deepcopy(dense)
        config = PruneConfig(method=method, nsamples=4, seqlen=32, batch_size=4, device="cpu")
        out[method] = (model, prune_model(model, windows, config).records)
    return out


def test_per_channel_error_sums_to_the_recorded_proxy_error(tiny_runs):
    for method in ("wanda", "magnitude"):
        records = tiny_runs[method][1]
        assert records and all(explain._decomposed(r) for r in records)
        for rec in records:
            for metric in ("wanda", "magnitude"):
                per_channel = rec.arrays[f"channel_error_{metric}"]
                assert per_channel.dtype == np.float32 and per_channel.shape == (rec.shape[1],)
                recorded = rec.by_metric[metric]["proxy_error"]
                assert float(per_channel.astype(np.float64).sum()) == pytest.approx(recorded, rel=1e-6)
            assert rec.by_metric[method]["proxy_error"] == rec.proxy_error  # the run's own mask: the same number
    # block 0 sees the same inputs in both runs: each run's reference mask is the other run's own mask
    for wanda_rec, magnitude_rec in zip(tiny_runs["wanda"][1], tiny_runs["magnitude"][1]):
        if wanda_rec.block == 0:
            assert wanda_rec.by_metric["magnitude"]["proxy_error"] == pytest.approx(magnitude_rec.proxy_error, rel=1e-6)
            assert magnitude_rec.by_metric["wanda"]["proxy_error"] == pytest.approx(wanda_rec.proxy_error, rel=1e-6)


def test_per_channel_error_and_top1pct_pruned_from_the_weights(tiny_runs):
    """Recomputed in float64 from the dense and the pruned weights: the run's own mask is where the weight became 0."""
    from wanda_engine.inputs.layers import find_blocks, find_linears, weight_of

    dense_blocks, pruned_blocks = find_blocks(tiny_runs["dense"])[1], find_blocks(tiny_runs["wanda"][0])[1]
    for rec in tiny_runs["wanda"][1]:
        w = weight_of(find_linears(dense_blocks[rec.block])[rec.name]).double()
        mask = weight_of(find_linears(pruned_blocks[rec.block])[rec.name]) == 0
        energy = torch.from_numpy(rec.arrays["channel_norms"]).double() ** 2
        expected = ((w * mask) ** 2).sum(dim=0) * energy / (((w**2).sum(dim=0) * energy).sum())
        assert np.allclose(rec.arrays["channel_error_wanda"], expected.numpy(), rtol=1e-5, atol=1e-12)
        top = torch.topk(torch.from_numpy(rec.arrays["channel_norms"]), top1pct_count(rec.shape[1])).indices
        assert rec.by_metric["wanda"]["top1pct_pruned"] == pytest.approx(float(mask[:, top].double().mean()))


def test_a_wanda_runs_magnitude_mask_is_the_magnitude_runs_own(monkeypatch):
    """Issue 19 item 7: the magnitude mask a Wanda run records is chosen per matrix, magnitude's own group, so it is
    weight for weight the mask of the magnitude run the Compare makes (from the weights alone), in every block:
    magnitude's mask depends on the weights alone, and no block's weights change before it is pruned."""
    from conftest import tiny_model

    from wanda_engine.inputs.layers import find_blocks, find_linears, weight_of
    from wanda_engine.pruning import pipeline

    recorded: dict[tuple[int, str], torch.Tensor] = {}
    real = pipeline.record_matrix

    def spy(**kw):
        recorded[kw["block"], kw["name"]] = kw["masks_by_metric"]["magnitude"].clone()
        return real(**kw)

    monkeypatch.setattr(pipeline, "record_matrix", spy)
    torch.manual_seed(2)
    windows = torch.randint(0, 512, (4, 32))
    dense = tiny_model("llama", seed=3)
    wanda_model, magnitude_model = copy.deepcopy(dense), copy.deepcopy(dense)
    records = pipeline.prune_model(wanda_model, windows, PruneConfig(nsamples=4, seqlen=32, device="cpu")).records
    pipeline.prune_model(magnitude_model, windows, PruneConfig(method="magnitude", calibrate=False, nsamples=4,
                                                               seqlen=32, device="cpu"), record=False)
    assert len(recorded) == len(records) == 14
    for i, block in enumerate(find_blocks(magnitude_model)[1]):
        for name, layer in find_linears(block).items():
            assert torch.equal(recorded[i, name], weight_of(layer) == 0), (i, name)
    for rec in records:
        assert rec.group_of("wanda") == "row" and rec.group_of("magnitude") == "matrix"
        assert rec.mask_label("magnitude") == "magnitude, per matrix" and rec.overlap.group == "row"
        # the histogram's cut-off is the per-matrix threshold: the largest pruned |W|
        w = weight_of(find_linears(find_blocks(dense)[1][rec.block])[rec.name]).abs()
        assert rec.hist["magnitude"]["cutoff"] == pytest.approx(np.log10(float(w[recorded[rec.block, rec.name]].max())))


def test_records_without_the_decomposition_still_load_and_say_so(tiny_runs):
    old = [MatrixRecord.from_dict({k: v for k, v in r.to_dict().items() if k != "by_metric"},
                                  {k: a for k, a in r.arrays.items() if not k.startswith("channel_error")})
           for r in tiny_runs["wanda"][1]]
    run = _run_record("wanda", ppl=40.0)
    assert all(r.by_metric is None for r in old) and not explain.has_error_records(old)
    assert explain.outlier_cuts(old, run) is None and explain.error_share(old, run) is None
    assert explain.outliers(old, run) is not None  # the channel summary is older than the decomposition


# --- sentences follow the records -------------------------------------------------------------------
def _run_record(method: str, ppl: float | None, protect: float = 0.0, seqlen: int = 32, name: str = "",
                created: str = "2026-12-01T10:00:00", group: str | None = None) -> RunRecord:
    request = RunRequest(prune=PruneConfig(method=method, nsamples=4, seqlen=seqlen, protect_channels=protect,
                                           group=group),
                         eval=EvalConfig(seqlen=64, windows=2))
    return RunRecord.from_json({
        "name": name or f"{method}-{protect}", "status": "complete", "created": created, "config": request.to_dict(),
        "ppl": ppl, "ppl_dense": 20.0, "sparsity": 0.5,
        "calibration": {"source": "default", "label": "austen:emma", "nsamples": 4, "seqlen": seqlen, "seed": 0},
        "eval": {"dataset": "austen:prideprejudice", "seqlen": 64, "windows": 2, "tokens": 128}})


def _numbers(sentence: str) -> list[str]:
    return re.findall(r"\d[\d,.]*", sentence)


def test_outlier_sentence_follows_the_records(tiny_runs):
    records = tiny_runs["wanda"][1]
    run = _run_record("wanda", ppl=40.0)
    before = explain.outliers(records, run)
    assert _numbers(before.sentence) and "4 × 32 calibration tokens of Emma (Austen)" in before.sentence
    louder = [dataclasses.replace(r, channels={**r.channels, "max_over_median": 777.0, "top_index": [5]})
              if r.key == records[3].key else r for r in records]
    after = explain.outliers(louder, run)
    assert after.sentence != before.sentence and "777×" in after.sentence and "channel 5 of block" in after.sentence
    assert explain.outliers(records, _run_record("wanda", ppl=40.0, seqlen=48)).sentence != before.sentence


def test_cuts_and_error_share_sentences_follow_the_records(tiny_runs):
    records = tiny_runs["wanda"][1]
    run = _run_record("wanda", ppl=40.0)
    cuts, share = explain.outlier_cuts(records, run), explain.error_share(records, run)
    assert _numbers(cuts.sentence) and _numbers(share.sentence)
    assert len(cuts.matrices) == min(explain.STRONGEST, len(records))
    changed = []
    for r in records:
        by_metric = {m: {**v, "top1pct_pruned": 0.9} for m, v in r.by_metric.items()}
        arrays = dict(r.arrays)
        arrays["channel_error_magnitude"] = np.where(np.arange(r.shape[1]) == np.argmax(r.arrays["channel_norms"]),
                                                     1.0, 0.0).astype(np.float32)
        changed.append(dataclasses.replace(r, by_metric=by_metric, arrays=arrays))
    cuts2, share2 = explain.outlier_cuts(changed, run), explain.error_share(changed, run)
    assert cuts2.sentence != cuts.sentence and "magnitude prunes 90%" in cuts2.sentence
    assert share2.sentence != share.sentence and "carry 100.0% of magnitude's proxy error" in share2.sentence
    assert share2.top1pct["magnitude"] == 1.0 and share2.cumulative["magnitude"][0] == 1.0


def test_intervention_sentence_reports_what_was_measured_either_way():
    magnitude, wanda = _run_record("magnitude", 300.0), _run_record("wanda", 40.0)
    plain = explain.intervention(magnitude, wanda, [])
    assert plain.protect == [0.0] and "Not measured yet" in plain.sentence and "300" in plain.sentence
    helped = explain.intervention(magnitude, wanda, [_run_record("magnitude", 60.0, 0.01)])
    assert "closes most of the gap" in helped.sentence and "92%" in helped.sentence and "60" in helped.sentence
    hurt = explain.intervention(magnitude, wanda, [_run_record("magnitude", 320.0, 0.01)])
    assert "closes none of the gap" in hurt.sentence and "-8%" in hurt.sentence
    assert helped.sentence != hurt.sentence != plain.sentence


def test_protected_runs_are_found_by_their_settings():
    magnitude = _run_record("magnitude", 300.0)
    candidates = [_run_record("magnitude", 100.0, 0.01, name="p1-old", created="2026-12-01T09:00:00"),
                  _run_record("magnitude", 90.0, 0.01, name="p1-new", created="2026-12-01T11:00:00"),
                  _run_record("magnitude", 80.0, 0.02, name="p2"),
                  _run_record("magnitude", 70.0, 0.005, seqlen=48, name="other-calibration"),
                  _run_record("magnitude", 70.0, 0.005, group="row", name="other-group"),
                  _run_record("wanda", 40.0, 0.01, name="protected-wanda"),
                  _run_record("magnitude", 300.0, name="plain")]
    found = explain.protected_runs(magnitude, candidates)
    assert [r.name for r in found] == ["p1-new", "p2"]
    requests = explain.protect_requests(magnitude.request)
    assert [r.prune.protect_channels for r in requests] == list(explain.PROTECT_STEPS)
    assert all(dataclasses.replace(r.prune, protect_channels=0.0) == magnitude.request.prune for r in requests)
    assert all(r.eval == magnitude.request.eval and r.name is None for r in requests)


# --- the page -----------------------------------------------------------------------------------------
def _explain_page(at):
    from test_app import goto, no_exceptions

    at = goto(at, "explain")
    no_exceptions(at)
    return at


def _sentences(at) -> list[str]:
    """Each step's sentence, as the reader sees it."""
    return [html.unescape(re.sub(r"<[^>]+>", "", m.value)) for m in at.markdown
            if m.value.startswith('<p style="font-size:1.3rem')]


def test_explain_page_without_runs_shows_the_toy_and_offers_the_compare(app_env):
    from test_app import charts, new_app

    at = _explain_page(new_app())
    assert "Explain" in at.title[0].value
    (toy,) = charts(at)
    assert "30× louder" in toy["layout"]["title"]["text"]
    (sentence,) = _sentences(at)
    assert "30× the others'" in sentence
    at.slider(key="x_outlier").set_value(80).run()
    (moved,) = charts(at)
    assert "80× louder" in moved["layout"]["title"]["text"] and moved["data"] != toy["data"]
    assert any(b.label == "Compare magnitude vs Wanda" for b in at.button)


@pytest.mark.slow  # AppTest runs jobs in the worker process
def test_explain_page_after_a_compare_and_its_protection_test(app_env):
    from app import ui
    from test_app import charts, new_app, use_tiny_model, wait_jobs

    at = use_tiny_model(new_app(), app_env.model)
    at.button(key="b_compare").click().run()
    at = wait_jobs(at)
    at = _explain_page(at)
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert len(titles) == 5, titles  # one figure per step
    sentences = _sentences(at)
    assert len(sentences) == 5 and all(_numbers(s) for s in sentences), sentences
    assert "Not measured yet" in sentences[4]

    runner = ui.job_runner()
    before = {j.id for j in runner.history()}
    at.button(key="x_protect").click().run()
    jobs = [j for j in [runner.current(), *runner.queued(), *runner.history()] if j and j.id not in before]
    jobs = sorted({j.id: j for j in jobs}.values(), key=lambda j: j.id)  # tiny runs may finish at once
    assert [j.request.prune.protect_channels for j in jobs] == list(explain.PROTECT_STEPS)
    assert len({j.batch for j in jobs}) == 1 and all(j.request.prune.method == "magnitude" for j in jobs)
    at = _explain_page(wait_jobs(at, timeout=240))
    protect = charts(at)[-1]
    assert protect["data"][0]["x"] == ["0 (plain)", "0.1%", "0.5%", "1%", "2%"]
    assert "Protecting the top 1% of input channels" in _sentences(at)[4]


def _strip_the_decomposition(run_dir) -> None:
    """Rewrite a run's records as a run recorded before `by_metric` and the channel_error arrays existed."""
    import json

    from wanda_engine.store.run_store import atomic_write_json, load_run, write_records

    old = [MatrixRecord.from_dict({k: v for k, v in r.to_dict().items() if k != "by_metric"},
                                  {k: a for k, a in r.arrays.items() if not k.startswith("channel_error")})
           for r in load_run(run_dir).records()]
    meta = json.loads((run_dir / "run.json").read_text())
    meta["files"] = write_records(run_dir, old)
    atomic_write_json(run_dir / "run.json", meta)


@pytest.mark.slow  # AppTest runs jobs in the worker process
def test_explain_page_on_runs_recorded_before_the_decomposition(app_env):
    from test_app import charts, new_app, use_tiny_model, wait_jobs

    at = wait_jobs(use_tiny_model(new_app(), app_env.model).button(key="b_compare").click().run())
    for run_dir in app_env.runs.iterdir():
        if run_dir.is_dir() and not run_dir.name.startswith("."):
            _strip_the_decomposition(run_dir)
    at = _explain_page(at)
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 2 and all("Compare magnitude vs Wanda" in w and "again" in w for w in warnings)
    assert len(charts(at)) == 3 and len(_sentences(at)) == 3  # the toy, the outliers, the protection test
    assert any(b.label == "Compare magnitude vs Wanda" for b in at.button)


# --- issue 19 item 7: every number says which magnitude it belongs to --------------------------------------------
def _as_recorded_before_groups(records: list[MatrixRecord]) -> list[MatrixRecord]:
    """Records as written before each metric's own group: `groups` absent, so every mask reads as the run's group."""
    return [dataclasses.replace(r, groups=None) for r in records]


def test_sentences_and_legends_name_each_masks_group(tiny_runs):
    records, run = tiny_runs["wanda"][1], _run_record("wanda", ppl=40.0)
    cuts, share = explain.outlier_cuts(records, run), explain.error_share(records, run)
    assert "while magnitude prunes 50% of every matrix and Wanda 50% of every output row" in cuts.sentence
    assert "(its mask per matrix)" in share.sentence and "of Wanda's (per output row)" in share.sentence
    assert cuts.labels == share.labels == {"magnitude": "magnitude, per matrix", "wanda": "Wanda, per output row"}
    from wanda_engine.outputs import figures

    for fig in (figures.explain_cuts(cuts), figures.explain_error_share(share)):
        names = {t.name for t in fig.data}
        assert {"magnitude, per matrix", "Wanda, per output row"} <= names, names
    old = _as_recorded_before_groups(records)
    assert "while both prune 50% of every output row" in explain.outlier_cuts(old, run).sentence
    assert explain.error_share(old, run).labels["magnitude"] == "magnitude, per output row"


def test_the_page_says_whether_the_records_magnitude_is_the_magnitude_runs(tiny_runs):
    from types import SimpleNamespace

    records = tiny_runs["wanda"][1]

    def run(name: str, record: RunRecord, recs: list[MatrixRecord]) -> SimpleNamespace:
        return SimpleNamespace(name=name, record=record, records=lambda: recs)

    magnitude = run("mag", _run_record("magnitude", ppl=300.0), tiny_runs["magnitude"][1])
    pair = explain.Comparison(run("wan", _run_record("wanda", ppl=40.0), records), magnitude)
    sentence, theirs = explain.mask_sources(pair)
    assert theirs and "the very mask of run mag" in sentence and "magnitude, per matrix" in sentence
    assert "its own mask (Wanda, per output row)" in sentence
    stale = explain.Comparison(run("wan", _run_record("wanda", ppl=40.0), _as_recorded_before_groups(records)),
                               magnitude)
    sentence, theirs = explain.mask_sources(stale)
    assert not theirs and "magnitude, per output row mask, but run mag pruned per matrix" in sentence
    assert "do not describe the mask of run mag" in sentence and "again" in sentence
    # a magnitude run pruned per row is what such records describe
    per_row = run("mag-row", _run_record("magnitude", ppl=290.0, group="row"), tiny_runs["magnitude"][1])
    assert explain.mask_sources(explain.Comparison(stale.wanda, per_row))[1]


def test_the_interventions_sentence_names_both_groups():
    magnitude, wanda = _run_record("magnitude", 300.0), _run_record("wanda", 40.0)
    plain = explain.intervention(magnitude, wanda, [])
    assert "plain magnitude (per matrix) scores perplexity 300" in plain.sentence
    assert "Wanda (per output row) scores 40" in plain.sentence
    helped = explain.intervention(magnitude, wanda, [_run_record("magnitude", 60.0, 0.01)])
    assert "takes magnitude (per matrix) from perplexity 300 to 60" in helped.sentence
