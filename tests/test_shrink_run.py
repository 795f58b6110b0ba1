"""A structured run through the CLI on a tiny model folder: its records in run.json, the speed record's shape (dense
and pruned measured in this very process), the saved folder with its model card, the command that reproduces it,
and one sentence with nothing written for every kind of bad input the issue lists."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import transformers
from conftest import tiny_model
from test_protect import one_sentence

from wanda_engine.cli.main import build_parser, main, _request
from wanda_engine.store.run_store import load_run
from wanda_engine.store.shrink_record import SpeedRecord, StructureRecord

FAST = ["--nsamples", "4", "--seqlen", "32", "--eval-windows", "2", "--quiet", "--speed-decode-tokens", "4",
        "--speed-repeats", "3"]


def prune(capsys, model: Path, out: Path, *args: str) -> tuple[int, str, str]:
    rc = main(["prune", "--model", str(model), *FAST, "--out", str(out), *args])
    printed = capsys.readouterr()
    return rc, printed.out, printed.err


def saved_run(capsys, model: Path, tmp_path: Path, *args: str) -> tuple:
    """A run of `args` that saves its model: (its record, the saved folder, what it printed)."""
    saved = tmp_path / "saved"
    rc, out, err = prune(capsys, model, tmp_path / "run", *args, "--save-model", str(saved))
    assert rc == 0, err
    return load_run(tmp_path / "run").record, saved, out


def test_a_structured_run_records_what_it_removed_and_its_speed(capsys, tiny_model_dir, tmp_path):
    record, saved, out = saved_run(capsys, tiny_model_dir, tmp_path, "--method", "flap", "--structure", "width",
                                   "--ratio", "0.3", "--bias-compensation")
    structure, speed = record.structure, record.speed
    assert isinstance(structure, StructureRecord) and isinstance(speed, SpeedRecord)
    assert structure.method == "flap" and structure.bias_compensation and structure.loader == "from_pretrained"
    assert structure.model_params_kept == sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(
        saved).parameters())
    # the speed record: both models, every round kept, measured by this process (the CLI ran in it)
    assert speed.dense.pid == speed.pruned.pid == os.getpid()
    assert speed.repeats == 3 and all(len(s.prefill_s) == len(s.decode_s) == 3 for s in (speed.dense, speed.pruned))
    assert speed.prefill_tokens == 32 and speed.decode_tokens == 4 and speed.threads >= 1 and speed.dtype == "float32"
    assert speed.device.startswith("cpu") and "interleaved" in speed.order
    assert speed.dense.params > speed.pruned.params == structure.model_params_kept
    assert speed.ideal_speedup == speed.dense.flops_per_token / speed.pruned.flops_per_token > 1
    assert speed.pruned.kv_cache_bytes < speed.dense.kv_cache_bytes  # fewer KV heads: a smaller cache
    assert all(x > 0 for s in (speed.dense, speed.pruned) for x in (s.prefill_tokens_per_s, s.decode_tokens_per_s))
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["structure"]["removed_fraction"] == round(structure.removed_fraction, 6)
    assert summary["speed"]["ideal_speedup"] == round(speed.ideal_speedup, 3)
    # typed records read back as written
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert StructureRecord.from_json(meta["structure"]) == structure and SpeedRecord.from_json(meta["speed"]) == speed
    assert meta["config"]["allocation"] == "uniform" and meta["config"]["speed"] == {"decode_tokens": 4, "repeats": 3}
    card = (saved / "README.md").read_text()
    assert card.startswith("---\n") and 'method: "flap+bias"' in card and "Pride and Prejudice (Austen)" in card
    assert f"ppl {record.ppl}" not in card and f"{record.ppl:.3f}" in card


def test_an_unstructured_run_measures_its_speed_too_and_its_ideal_is_one(capsys, tiny_model_dir, tmp_path):
    rc, _, err = prune(capsys, tiny_model_dir, tmp_path / "run", "--method", "wanda", "--speed", "--eval", "none")
    assert rc == 0, err
    record = load_run(tmp_path / "run").record
    assert record.structure is None and record.speed.ideal_speedup == 1.0
    assert record.speed.dense.params == record.speed.pruned.params
    assert record.speed.prefill_tokens == 32  # without evaluation: a calibration window


def test_depth_through_the_cli_and_the_saved_folder_loads_in_the_engine(capsys, tiny_model_dir, tmp_path):
    from wanda_engine.inputs.models import load_model

    record, saved, _ = saved_run(capsys, tiny_model_dir, tmp_path, "--structure", "depth", "--ratio", "0.5",
                                 "--no-speed")
    assert record.request.prune.method == "block-influence" and record.speed is None
    assert len(record.structure.removed_blocks) == 1 and record.structure.scored_dense_first
    assert load_model(str(saved)).info["num_blocks"] == 1


def test_global_allocation_saves_a_folder_the_engine_loads(capsys, tiny_model_dir, tmp_path):
    from wanda_engine.inputs.models import load_model

    record, saved, _ = saved_run(capsys, tiny_model_dir, tmp_path, "--method", "flap", "--allocation", "global",
                                 "--ratio", "0.3", "--no-speed")
    assert record.structure.loader == "wanda_engine.inputs.shrunk.load_shrunk" and (saved / "shrink.json").exists()
    assert load_model(str(saved)).info["params"] == record.structure.model_params_kept
    assert "load_shrunk(FOLDER)" in (saved / "README.md").read_text()


def test_the_reproduce_command_rebuilds_a_structured_request(capsys, tiny_model_dir, tmp_path):
    from wanda_engine.store.reproduce import prune_command

    for extra in (["--method", "flap", "--allocation", "global", "--bias-compensation", "--target", "params"],
                  ["--method", "wanda-sp", "--target", "per-block", "--no-speed"]):
        args = build_parser().parse_args(["prune", "--model", str(tiny_model_dir), *FAST, "--ratio", "0.5", *extra])
        request = _request(args)
        rc, _, err = prune(capsys, tiny_model_dir, tmp_path / extra[1], "--ratio", "0.5", "--eval", "none", *extra)
        assert rc == 0, err
        record = load_run(tmp_path / extra[1]).record
        rebuilt = _request(build_parser().parse_args(prune_command(record, record.request.prune.calib)[3:]))
        assert rebuilt.prune == record.request.prune and rebuilt.speed == record.request.speed
        assert (request.speed is None) == ("--no-speed" in extra)


@pytest.fixture(scope="module")
def fused_model_dirs(tmp_path_factory, embedded_tokenizer_dir) -> dict[str, Path]:
    """GPT-2 and GPT-NeoX folders: attention with one fused q/k/v projection."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(embedded_tokenizer_dir)
    folders = {}
    for arch in ("gpt2", "gpt_neox"):
        folder = tmp_path_factory.mktemp(arch)
        tiny_model(arch, vocab_size=len(tokenizer)).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[arch] = folder
    return folders


BAD = {
    "ratio 0": (["--method", "flap", "--ratio", "0"], "must be a number in (0, 1)"),
    "ratio 1": (["--method", "flap", "--ratio", "1"], "ratio 1 is not a fraction below 1"),
    "every head of a block": (["--method", "flap", "--ratio", "0.8"], "would remove all 2 KV head groups"),
    "every block": (["--structure", "depth", "--ratio", "0.8"], "would remove every decoder block of 2"),
    "no block": (["--structure", "depth", "--ratio", "0.1"], "would remove no decoder block of 2"),
    "GQA divisibility": (["--method", "wanda-sp", "--target", "per-block", "--ratio", "0.25"],
                         "not a whole number of KV groups"),
    "N:M": (["--method", "flap", "--ratio", "0.5", "--pattern", "2:4"], "pattern '2:4' does not apply to method 'flap'"),
    "protect channels": (["--method", "flap", "--ratio", "0.3", "--protect-channels", "0.01"],
                         "protect_channels does not apply to method 'flap'"),
    "weight update": (["--method", "wanda-sp", "--ratio", "0.3", "--weight-update", "obs"],
                      "weight_update 'obs' does not apply to method 'wanda-sp'"),
    "OWL": (["--method", "flap", "--ratio", "0.3", "--layerwise", "owl"], "layerwise 'owl' does not apply"),
    "variant": (["--method", "flap", "--ratio", "0.3", "--variant"], "variant (adaptive alpha) applies only"),
    "structure and method disagree": (["--method", "flap", "--structure", "depth"], "does not go with --method flap"),
    "allocation on a mask method": (["--method", "wanda", "--allocation", "global"],
                                    "allocation applies only to the structure removers"),
    "compensation on depth": (["--structure", "depth", "--ratio", "0.5", "--bias-compensation"],
                              "bias_compensation does not apply to method 'block-influence'"),
    "per-block target with global allocation": (["--method", "flap", "--target", "per-block", "--allocation", "global"],
                                                "needs allocation 'uniform'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_structured_input_gets_one_sentence_and_writes_nothing(case, capsys, tiny_model_dir, tmp_path):
    args, words = BAD[case]
    rc, _, err = prune(capsys, tiny_model_dir, tmp_path / "run", *args)
    line = err.strip().removeprefix("error: ")
    assert rc == 1 and words in line and one_sentence(line), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arch,layer", [("gpt2", "attn.c_attn"), ("gpt_neox", "attention.query_key_value")])
def test_an_attention_layout_without_separate_heads_is_named_and_refused(arch, layer, fused_model_dirs, capsys,
                                                                        tmp_path):
    rc, _, err = prune(capsys, fused_model_dirs[arch], tmp_path / "run", "--method", "wanda-sp", "--ratio", "0.3")
    line = err.strip().removeprefix("error: ")
    assert rc == 1 and "cannot map" in line and layer in line and one_sentence(line), err
    assert not (tmp_path / "run").exists()
    rc, _, err = prune(capsys, fused_model_dirs[arch], tmp_path / "depth", "--structure", "depth", "--ratio", "0.5",
                       "--eval", "none", "--no-speed")
    assert rc == 0, err  # depth needs no heads: whole blocks go


def test_compensation_where_no_config_flag_gives_a_bias_is_refused(capsys, tmp_path, embedded_tokenizer_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(embedded_tokenizer_dir)
    folder = tmp_path / "qwen2"
    tiny_model("qwen2", vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rc, _, err = prune(capsys, folder, tmp_path / "run", "--method", "flap", "--ratio", "0.3", "--bias-compensation")
    line = err.strip().removeprefix("error: ")
    assert rc == 1 and "bias compensation needs a bias on model.layers.0.mlp.down_proj" in line and one_sentence(line)
    assert not (tmp_path / "run").exists()


def test_the_records_and_the_model_card_are_read_without_torch():
    import subprocess
    import sys

    code = ("import sys; import wanda_engine.store.shrink_record, wanda_engine.store.model_card, "
            "wanda_engine.store.run_record; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
