"""Every invalid setting fails at construction with a message naming the field."""
from __future__ import annotations

import pytest

from wanda_engine.config import EvalConfig, PruneConfig, parse_pattern
from wanda_engine.errors import ConfigError


@pytest.mark.parametrize("kwargs,field", [
    ({"method": "random"}, "method"),
    ({"sparsity": 1.0}, "sparsity"),
    ({"sparsity": -0.1}, "sparsity"),
    ({"sparsity": "half"}, "sparsity"),
    ({"pattern": "4:2"}, "N < M"),
    ({"pattern": "2:2"}, "N < M"),
    ({"pattern": "2:x"}, "pattern"),
    ({"pattern": "2.5:4"}, "pattern"),
    ({"pattern": "blocky"}, "pattern"),
    ({"pattern": "1:4", "sparsity": 0.7}, "sparsity"),
    ({"group": "column"}, "group"),
    ({"group": "matrix", "pattern": "2:4"}, "group"),
    ({"variant": True, "method": "magnitude"}, "variant"),
    ({"variant": True, "pattern": "2:4"}, "variant"),
    ({"nsamples": 0}, "nsamples"),
    ({"seqlen": 1.5}, "seqlen"),
    ({"batch_size": -1}, "batch_size"),
    ({"seed": "zero"}, "seed"),
    ({"percdamp": 0}, "percdamp"),
    ({"device": "tpu"}, "device"),
    ({"calib": ""}, "calib"),
])
def test_bad_prune_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        PruneConfig(**kwargs)


@pytest.mark.parametrize("kwargs,field", [({"seqlen": 1}, "seqlen"), ({"windows": 0}, "windows"),
                                          ({"dataset": ""}, "dataset"), ({"batch_size": 0}, "batch_size")])
def test_bad_eval_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        EvalConfig(**kwargs)


def test_defaults_follow_the_reference():
    assert PruneConfig(method="magnitude").resolved_group == "matrix"
    assert PruneConfig(method="wanda").resolved_group == "row"
    assert PruneConfig(pattern="2:4").resolved_group == "nm"
    assert PruneConfig(pattern="4:8").target_sparsity == 0.5
    assert PruneConfig(pattern="1:4", sparsity=0.25).target_sparsity == 0.25
    assert parse_pattern("16:32") == (16, 32) and parse_pattern("unstructured") is None
    cfg = PruneConfig(method="wanda", sparsity=0.6, seed=3)
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg
