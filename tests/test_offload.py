"""Weights that do not fit: a model placed by accelerate's device_map (host memory or disk offload)
prunes block by block to exactly the weights of the same model pruned in memory."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import load_file

from wanda_engine.pruning.checks import sparsity_of_blocks
from wanda_engine.cli.main import main
from wanda_engine.config import OffloadConfig, PruneConfig
from wanda_engine.core.parsing import parse_size
from wanda_engine.core.errors import ConfigError
from wanda_engine.inputs.layers import find_blocks, find_linears, weight_of
from wanda_engine.inputs.models import load_model
from wanda_engine.inputs.offload import block_on_device, has_offloaded_weights, is_dispatched
from wanda_engine.pruning.pipeline import prune_model

@pytest.fixture(autouse=True)
def keep_malloc_as_it_is(monkeypatch):
    """Loading with offload fixes glibc's mmap threshold for the whole process; not in the test process."""
    import wanda_engine.inputs.models

    calls = []
    monkeypatch.setattr(wanda_engine.inputs.models, "return_freed_memory_promptly", lambda: calls.append(1))
    return calls


WINDOWS = torch.randint(0, 1000, (4, 32), generator=torch.Generator().manual_seed(0))


def pruned_weights(model) -> dict[str, torch.Tensor]:
    """Every prunable weight of the blocks, read from wherever accelerate keeps it."""
    path, blocks = find_blocks(model)
    out = {}
    for i, block in enumerate(blocks):
        with block_on_device(block, torch.device("cpu")):
            out.update({f"{path}.{i}.{n}": weight_of(l).clone() for n, l in find_linears(block).items()})
    return out


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("config", [PruneConfig(method="wanda", nsamples=4, seqlen=32),
                                    PruneConfig(method="sparsegpt", pattern="2:4", nsamples=4, seqlen=32),
                                    PruneConfig(method="wanda", sparsity=0.6, layerwise="owl", nsamples=4, seqlen=32)],
                         ids=["wanda", "sparsegpt-2:4", "owl-wanda"])
def test_disk_offloaded_model_prunes_to_the_in_memory_weights(config, tiny_model_dir, tmp_path, keep_malloc_as_it_is):
    checkpoint = tiny_model_dir / "model.safetensors"
    before = sha(checkpoint)
    plain = load_model(str(tiny_model_dir))
    offloaded = load_model(str(tiny_model_dir), offload=OffloadConfig({"cpu": "1KiB"}, str(tmp_path / "offload")))
    assert has_offloaded_weights(offloaded.model) and "disk" in offloaded.info["device_map"]
    assert keep_malloc_as_it_is  # asked for when a model is loaded with offloading

    expected = prune_model(plain.model, WINDOWS, config)
    resident = []  # bytes of weights in memory while each matrix is pruned: one block's, nothing else
    result = prune_model(offloaded.model, WINDOWS, config, on_event=lambda e: resident.append(sum(
        p.numel() * p.element_size() for p in offloaded.model.parameters() if p.device.type != "meta")))
    block_bytes = sum(p.numel() * p.element_size() for p in find_blocks(plain.model)[1][0].parameters())
    assert 0 < max(resident) <= block_bytes

    got, want = pruned_weights(offloaded.model), pruned_weights(plain.model)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert result.block_targets == expected.block_targets
    assert [r.sparsity for r in result.records] == [r.sparsity for r in expected.records]
    assert sparsity_of_blocks(offloaded.model) == sparsity_of_blocks(plain.model)
    # the pruned weights went to new files under the offload folder, never into the model's checkpoint
    assert sha(checkpoint) == before
    assert list((tmp_path / "offload").glob("pruned-*/*.safetensors"))
    # and the offloaded model still runs, with its pruned weights
    with torch.inference_mode():
        assert torch.allclose(offloaded.model(WINDOWS[:1]).logits, plain.model(WINDOWS[:1]).logits, atol=1e-5)


def test_host_offloaded_model_prunes_in_place_of_its_weights_map():
    """accelerate's cpu_offload keeps the weights in a host-memory map: pruned values are written there."""
    from accelerate import cpu_offload

    plain = tiny_model("llama")
    offloaded = cpu_offload(copy.deepcopy(plain), execution_device=torch.device("cpu"))
    assert is_dispatched(offloaded) and has_offloaded_weights(offloaded)
    config = PruneConfig(method="wanda", nsamples=4, seqlen=32)
    windows = WINDOWS % 512
    prune_model(plain, windows, config)
    prune_model(offloaded, windows, config)
    got, want = pruned_weights(offloaded), pruned_weights(plain)
    assert all(torch.equal(got[n], want[n]) for n in want)
    assert sparsity_of_blocks(offloaded)[0] == pytest.approx(0.5)


def test_a_failing_block_leaves_its_offloaded_weights_as_they_were(tiny_model_dir, tmp_path):
    loaded = load_model(str(tiny_model_dir), offload=OffloadConfig({"cpu": "1KiB"}, str(tmp_path)))
    _, blocks = find_blocks(loaded.model)
    before = pruned_weights(loaded.model)
    with pytest.raises(RuntimeError, match="boom"):
        with block_on_device(blocks[0], torch.device("cpu"), write_back=find_linears(blocks[0]).values()):
            for layer in find_linears(blocks[0]).values():
                weight_of(layer).zero_()
            raise RuntimeError("boom")
    after = pruned_weights(loaded.model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.device.type == "meta" for p in blocks[0].parameters())  # offloaded again


def test_a_block_held_without_layers_to_write_back_leaves_its_offloaded_weights(tiny_model_dir, tmp_path):
    loaded = load_model(str(tiny_model_dir), offload=OffloadConfig({"cpu": "1KiB"}, str(tmp_path)))
    _, blocks = find_blocks(loaded.model)
    before = pruned_weights(loaded.model)
    with block_on_device(blocks[0], torch.device("cpu")):  # to read it, as the OWL pass and the checks do
        for layer in find_linears(blocks[0]).values():
            weight_of(layer).zero_()
    after = pruned_weights(loaded.model)
    assert all(torch.equal(before[n], after[n]) for n in before)


@pytest.mark.slow
def test_cli_prunes_an_offloaded_model_and_saves_it(capsys, tiny_model_dir, tmp_path):
    args = ["prune", "--model", str(tiny_model_dir), "--nsamples", "4", "--seqlen", "32", "--eval-windows", "2",
            "--quiet"]
    assert main([*args, "--out", str(tmp_path / "plain"), "--save-model", str(tmp_path / "m-plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "off"), "--save-model", str(tmp_path / "m-off"),
                 "--max-memory", "cpu=1KiB", "--offload-folder", str(tmp_path / "offload")]) == 0
    capsys.readouterr()
    meta = json.loads((tmp_path / "off" / "run.json").read_text())
    plain = json.loads((tmp_path / "plain" / "run.json").read_text())
    assert meta["config"]["offload"] == {"max_memory": {"cpu": "1KiB"}, "folder": str(tmp_path / "offload")}
    assert "disk" in meta["model"]["device_map"]
    assert meta["ppl"] == pytest.approx(plain["ppl"], rel=1e-5) and meta["sparsity"] == plain["sparsity"]
    a, b = load_file(tmp_path / "m-plain" / "model.safetensors"), load_file(tmp_path / "m-off" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "offload").glob("pruned-*"))  # the run's pruned copies are gone with it


@pytest.mark.parametrize("text, expected", [("cpu=300MiB", {"cpu": 300 * 2**20}),
                                            ("cuda:0=4GiB, cpu=2GB", {0: 4 * 2**30, "cpu": 2 * 10**9}),
                                            ("1=1.5GiB", {1: int(1.5 * 2**30)})])
def test_max_memory_parses(text, expected):
    assert OffloadConfig.parse(text).accelerate_max_memory() == expected


@pytest.mark.parametrize("text, field", [("cpu", "DEVICE=SIZE"), ("cpu=lots", "memory size"), ("gpu=1GiB", "device"),
                                         ("cpu=0MiB", "positive"), ("cpu=12XB", "memory size")])
def test_bad_max_memory_names_the_problem(text, field):
    with pytest.raises(ConfigError, match=field):
        OffloadConfig.parse(text)


def test_offload_folder_alone_is_refused(capsys, tiny_model_dir, tmp_path):
    rc = main(["prune", "--model", str(tiny_model_dir), "--offload-folder", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and "--max-memory" in err and not list(tmp_path.iterdir())


def test_parse_size_units():
    assert parse_size("1KiB") == 1024 and parse_size("2 MB") == 2_000_000 and parse_size("0.5GiB") == 2**29
