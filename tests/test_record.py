"""The typed run record on its own: old and minimal run.json files load, damaged ones are one sentence, and
run.json and records.json keep their layout byte for byte through the typed records."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest, ZeroShotConfig
from wanda_engine.core.status import RunStatus
from wanda_engine.store.matrix_records import MaskOverlap, MatrixRecord
from wanda_engine.store.run_record import CalibrationInfo, ModelInfo, RunRecord, RunRecordError
from wanda_engine.store.run_store import load_run
from wanda_engine.store.zeroshot_record import TaskScore, ZeroShotRecord, ZeroShotScores


def test_a_minimal_run_json_loads_with_defaults():
    record = RunRecord.from_json({"name": "x", "status": "complete", "config": {"method": "wanda"}})
    assert record.request == RunRequest() and record.label() == "wanda 50%"
    assert record.model.source == "" and record.eval is None and record.blocks == () and record.timings == {}


def test_unknown_fields_are_kept_and_written_back():
    meta = {"format": 1, "status": "running", "name": "x", "created": "2026-01-01T00:00:00",
            "config": RunRequest().to_dict(), "versions": {}, "device": "cpu", "timings": {},
            "model": {"source": "default", "label": "m", "future_field": 3}, "calibration": {}, "writer": None,
            "someday": [1, 2]}
    out = RunRecord.from_json(meta).to_json()
    assert out["someday"] == [1, 2] and out["model"]["future_field"] == 3


@pytest.mark.parametrize("meta, words", [
    ([1, 2], "not an object"),
    ({"status": "done?"}, "unknown status"),
    ({"config": ["x"]}, "field 'config'"),
    ({"ppl": "low"}, "field 'ppl'"),
    ({"sparsity": True}, "field 'sparsity'"),
    ({"config": {"method": "pruneit"}}, "method must be one of"),
    ({"blocks": [{"block": 0}]}, "settings or results"),
    ({"zeroshot": {"dense": [1]}}, "settings or results .zero-shot scores is not an object"),
    ({"zeroshot": {"config": {"limit": 0}}}, "zero-shot limit must be a positive integer"),
])
def test_a_damaged_run_json_is_one_sentence(meta, words):
    with pytest.raises(RunRecordError, match=words) as refused:
        RunRecord.from_json(meta)
    assert len(str(refused.value).splitlines()) == 1


def test_the_label_is_the_configs_own_with_the_owl_prefix():
    owl = RunRequest(prune=PruneConfig(layerwise="owl", sparsity=0.7), eval=EvalConfig())
    record = RunRecord.from_json({"name": "o", "status": "complete", "config": owl.to_dict()})
    assert record.label() == owl.prune.label == "owl-wanda 70%"
    assert RunRecord.from_json({"config": RunRequest(prune=PruneConfig(pattern="2:4")).to_dict()}).label() == "wanda 2:4"


def test_the_record_and_the_run_store_import_without_torch():
    code = "import sys, wanda_engine.store.run_record, wanda_engine.store.run_store, wanda_engine.core.stages; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def _scores(acc: float, *, cached: bool = False) -> dict:
    """One model's scores as evaluate_zeroshot returns them: a task with acc and acc_norm, one with acc alone (its
    stderr not computable), keys in the order it writes them."""
    return {"harness": "0.4.8", "tasks": ["boolq", "my_task"], "limit": None, "num_fewshot": 0, "seconds": 12.5,
            "results": {"boolq": {"acc": acc, "acc_stderr": 0.01, "acc_norm": acc - 0.02, "acc_norm_stderr": 0.011,
                                  "n": 3270, "version": 2.0, "dataset": "hub:super_glue/boolq"},
                        "my_task": {"acc": 0.5, "acc_stderr": None, "n": 12, "version": None,
                                    "dataset": "local:/tasks/data.jsonl"}}}


def test_a_run_json_with_zero_shot_results_loads_typed_and_writes_back_unchanged(tmp_path):
    zc = ZeroShotConfig(tasks=("boolq", "my_task"), task_dir="/tasks")
    meta = RunRecord(name="zs", status="complete", created="2026-01-01T00:00:00",
                     request=RunRequest(prune=PruneConfig(), zeroshot=zc),
                     model=ModelInfo.from_json({"source": "default", "label": "SmolLM2-135M"}),
                     calibration=CalibrationInfo.from_json({"source": "default", "nsamples": 4, "seqlen": 32})).to_json()
    meta["zeroshot"] = {"dense": _scores(0.62), "pruned": _scores(0.58), "config": zc.to_dict(), "harness": "0.4.8",
                        "dense_cached": True}
    text = json.dumps(meta, indent=1)
    (tmp_path / "zs").mkdir()
    (tmp_path / "zs" / "run.json").write_text(text)
    (tmp_path / "zs" / "records.json").write_text("[]")

    record = load_run(tmp_path / "zs").record
    zs = record.zeroshot
    assert isinstance(zs, ZeroShotRecord) and zs.config == zc and zs.harness == "0.4.8" and zs.dense_cached is True
    assert isinstance(zs.pruned, ZeroShotScores) and zs.pruned.tasks == ("boolq", "my_task") and zs.pruned.seconds == 12.5
    boolq = zs.pruned.results["boolq"]
    assert isinstance(boolq, TaskScore) and boolq.value("acc") == 0.58 and boolq.stderr("acc_norm") == 0.011
    assert boolq.n == 3270 and boolq.dataset == "hub:super_glue/boolq"
    assert zs.dense.value("boolq", "acc") == 0.62 and zs.dense.value("my_task", "acc_norm") is None
    assert zs.pruned.stderr("my_task", "acc") is None and zs.dense.value("rte", "acc") is None
    assert json.dumps(record.to_json(), indent=1) == text  # the same file, key for key and in the same order


def test_a_run_json_without_zero_shot_writes_none_and_status_stays_a_word():
    record = RunRecord.from_json({"name": "x", "status": "failed", "config": {"method": "wanda"}})
    assert record.zeroshot is None and "zeroshot" not in record.to_json()
    assert record.status is RunStatus.FAILED and json.dumps(record.to_json()["status"]) == '"failed"'
    running = RunRecord.from_json({"name": "x", "config": {}})
    assert running.status is RunStatus.RUNNING and not running.complete


def test_a_matrix_records_overlap_is_typed_and_records_json_keeps_its_layout():
    d = {"block": 0, "name": "self_attn.q_proj", "full_name": "model.layers.0.self_attn.q_proj", "shape": [8, 4],
         "method": "wanda", "group": "row", "sparsity": 0.5, "row_sparsity": {"min": 0.5, "max": 0.5},
         "proxy_error": 0.01, "hist": {},
         "overlap": {"reference": "magnitude", "group": "row", "jaccard": 0.6, "both": 0.375, "only_method": 0.125,
                     "only_reference": 0.125},
         "channels": None, "by_metric": None}
    record = MatrixRecord.from_dict(json.loads(json.dumps(d)))
    assert record.overlap == MaskOverlap("magnitude", "row", 0.6, 0.375, 0.125, 0.125)
    assert json.dumps(record.to_dict()) == json.dumps(d)
    without = MatrixRecord.from_dict({**d, "overlap": None})
    assert without.overlap is None and without.to_dict()["overlap"] is None
