"""The one stage vocabulary: the table, which stages a request goes through, and the time-left estimate."""
from __future__ import annotations

import pytest

from wanda_engine.config import EvalConfig, PruneConfig, RunRequest, ZeroShotConfig
from wanda_engine.core.stages import BY_NAME, ORDER, STAGES, expected_seconds, label, stage_order, time_left


def test_every_stage_has_a_label_and_the_dense_copy_its_own_stage():
    assert len(ORDER) == len(set(ORDER)) and set(BY_NAME) == set(ORDER)
    assert all(s.label and s.label != s.name for s in STAGES)
    assert label("copy") == "copying the dense model" and "check" in label("load")
    assert "copy" not in label("calibration-data") and label("owl") != "owl" and label("sweep-point") != "sweep-point"
    assert label("done") == "done"  # a job's state outside the table reads as itself


def test_stage_order_follows_the_request():
    plain = RunRequest(eval=None)
    assert stage_order(plain, copies_model=False) == ["load", "calibration-data", "capture", "prune"]
    full = RunRequest(prune=PruneConfig(layerwise="owl", sparsity=0.6), eval=EvalConfig(),
                      zeroshot=ZeroShotConfig(tasks=("boolq",)), save_model="out")
    assert stage_order(full) == ["load-model", "zeroshot-tasks", "load", "calibration-data", "copy", "eval-dense",
                                 "zeroshot-dense", "owl", "capture", "prune", "eval", "zeroshot", "save"]


def test_a_finished_stage_is_counted_once_and_the_owl_stage_is_counted():
    order = stage_order(RunRequest(prune=PruneConfig(layerwise="owl", sparsity=0.6)))
    remembered = {"load-model": 5.0, "load": 2.0, "calibration-data": 3.0, "copy": 1.0, "owl": 20.0, "capture": 4.0,
                  "prune": 100.0, "eval": 10.0}
    # in the OWL stage: what is left of it, then capture, prune and eval; nothing already done
    assert time_left(order, "owl", 5.0, remembered, 0.0, 0.0) == (15.0 + 4.0 + 100.0 + 10.0, False)
    assert time_left(order, "calibration-data", 1.0, remembered, 0.0, 0.0) == (2.0 + 1.0 + 20.0 + 4.0 + 100.0 + 10.0,
                                                                                 False)
    # pruning extrapolates its own pace: a quarter done in 30 s leaves 90 s, then the evaluation
    assert time_left(order, "prune", 30.0, remembered, 0.25, 30.0) == (pytest.approx(90.0 + 10.0), False)
    # a stage overrunning its remembered time adds nothing negative
    assert time_left(order, "eval", 50.0, remembered, 1.0, 0.0) == (0.0, False)


def test_time_left_without_a_run_alike_to_go_by():
    order = stage_order(RunRequest())
    assert time_left(order, "load", 0.0, {}, 0.0, 0.0) == (None, False)  # pruning still ahead: unknown
    assert time_left(order, "prune", 1.0, {}, 0.0, 1.0) == (None, False)
    assert time_left(order, "prune", 10.0, {}, 0.5, 10.0) == (10.0, True)  # the evaluation ahead is unknown
    # the dense evaluation ahead is cached after the first run alike: not counted
    assert time_left(order, "copy", 0.0, {"eval-dense": 50.0, "prune": 10.0, "eval": 5.0}, 0.0, 0.0) == (15.0, False)


def test_expected_seconds_combines_the_runs_alike():
    prune_memory = {"load": 1.0, "prune": 40.0, "eval": 99.0}
    eval_memory = {"eval": 8.0}
    assert expected_seconds(prune_memory, eval_memory, {}) == {"eval": 8.0, "load": 1.0, "prune": 40.0}
    # no evaluation remembered: the pruned model takes what the dense model just took
    assert expected_seconds({"prune": 40.0}, {}, {"eval-dense": 6.0})["eval"] == 6.0
    assert "eval" not in expected_seconds({"prune": 40.0}, {}, {"eval-dense": 0.5})
