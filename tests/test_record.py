"""The typed run record on its own: old and minimal run.json files load, damaged ones are one sentence."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
from wanda_engine.store.run_record import RunRecord, RunRecordError


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
