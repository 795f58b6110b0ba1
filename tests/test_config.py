"""Every invalid setting fails at construction with a message naming the field."""
from __future__ import annotations

import pytest

import json

from wanda_engine.config import EvalConfig, ModelSpec, OffloadConfig, PruneConfig, RunRequest, ZeroShotConfig
from wanda_engine.core.parsing import parse_pattern
from wanda_engine.core.errors import ConfigError


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
    ({"method": "sparsegpt", "group": "matrix"}, "group"),
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


@pytest.mark.parametrize("request_", [
    RunRequest(),
    RunRequest(model="m", prune=PruneConfig(method="ria", sparsity=0.7, layerwise="owl", owl_m=7.0), eval=None,
               dtype="bfloat16", save_model="out", trust_remote_code=True,
               zeroshot=ZeroShotConfig(tasks=("boolq", "rte"), limit=5), offload=OffloadConfig({"cpu": "1GiB"}, "off")),
    RunRequest(prune=PruneConfig(pattern="2:4", group="row"), eval=EvalConfig(dataset="wikitext2", seqlen=64, windows=3)),
])
def test_a_request_round_trips_through_run_json(request_):
    assert RunRequest.from_dict(json.loads(json.dumps(request_.to_dict()))) == request_


@pytest.mark.parametrize("kwargs,field", [({"model": ""}, "model"), ({"dtype": "int3"}, "dtype"),
                                          ({"prune": {"method": "wanda"}}, "prune"), ({"eval": "default"}, "eval"),
                                          ({"name": "../x"}, "run name"), ({"trust_remote_code": "yes"}, "trust_remote_code")])
def test_bad_request_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        RunRequest(**kwargs)
    with pytest.raises(ConfigError):
        RunRequest.from_dict({**RunRequest().to_dict(), "method": "pruneit"})


def test_a_model_spec_compares_what_decides_the_weights():
    request = RunRequest(model="m", dtype="bf16")
    assert request.model_spec() == ModelSpec("m", "bfloat16") and request.model_spec().mismatch(ModelSpec("m", "bfloat16")) is None
    assert ModelSpec("m").mismatch(ModelSpec("m", "float16")) == "dtype"
    assert ModelSpec("m").mismatch(ModelSpec("m", offload=OffloadConfig({"cpu": "1GiB"}))) == "offload"


# --- one parser for a fraction, wherever it is typed -----------------------------------------------------------

def test_a_fraction_is_read_as_a_fraction_or_a_percentage_everywhere():
    from wanda_engine.core.parsing import parse_fraction, parse_list

    assert parse_list("0.5, 30%;0.7  0.25", "sweep sparsities", parse_fraction) == [0.5, 0.3, 0.7, 0.25]
    assert parse_fraction("50%") == 0.5 and parse_fraction(0.5) == 0.5
    with pytest.raises(ConfigError, match=r"sparsity 70 is not a fraction below 1; for 70% write 0.7 or 70%"):
        parse_list("0.5, 70", "sweep sparsities", parse_fraction)
    with pytest.raises(ConfigError, match="'half' is not a number"):
        parse_fraction("half")
    with pytest.raises(ConfigError, match="sweep nsamples: '8.5' is not a valid value"):
        parse_list("8, 8.5", "sweep nsamples", int)


@pytest.mark.parametrize("argv", [["prune", "--sparsity", "50"], ["sweep", "--sparsities", "0.3,50"]])
def test_the_cli_refuses_a_bare_percentage_with_the_app_s_sentence(argv, capsys, tmp_path):
    from wanda_engine.cli.main import main

    assert main([*argv, "--model", str(tmp_path / "never-loaded")]) == 1
    assert "sparsity 50 is not a fraction below 1; for 50% write 0.5 or 50%" in capsys.readouterr().err
