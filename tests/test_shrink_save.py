"""A structurally pruned model saved and loaded again: uniform widths and removed blocks load with plain
`from_pretrained` in a process that imports nothing of the project and give the in-memory logits with the recorded
parameter count; widths that differ per block load with the project's loader and are refused by plain transformers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
from test_shrink import config, tiny, windows

from wanda_engine.inputs.shrunk import LOADER, SHRINK_FILE, load_shrunk, save_pruned
from wanda_engine.pruning.pipeline import prune_model

# Runs in a fresh interpreter: transformers alone, then proves the project stayed out of it.
LOAD_ALONE = """
import json, sys
import torch, transformers
from safetensors.torch import load_file, save_file
folder, ids_file, out_file = sys.argv[1:4]
model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
with torch.no_grad():
    logits = model(load_file(ids_file)["ids"]).logits
save_file({"logits": logits.contiguous()}, out_file)
assert not [m for m in sys.modules if m.startswith("wanda_engine")], "the project was imported"
c = model.config
print(json.dumps({"params": sum(p.numel() for p in model.parameters()), "layers": c.num_hidden_layers,
                  "heads": c.num_attention_heads, "kv_heads": getattr(c, "num_key_value_heads", None)}))
"""


class _Tokenizer:
    """save_pretrained's stand-in: these tests load the weights alone."""

    def save_pretrained(self, folder: str) -> None:
        pass


def load_alone(folder: Path, tokens: torch.Tensor, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """`from_pretrained(folder)` in a fresh process started outside the repository, without the project on its path."""
    save_file({"ids": tokens.contiguous()}, str(tmp_path / "ids.safetensors"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", LOAD_ALONE, str(folder), str(tmp_path / "ids.safetensors"),
                           str(tmp_path / "logits.safetensors")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    return done, json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 else {}


def prune_and_save(arch: str, tmp_path: Path, layers: int = 2, **settings) -> tuple:
    model = tiny(arch, layers=layers)
    result = prune_model(model, windows(), config(**settings))
    folder = tmp_path / "model"
    loader = save_pruned(model, _Tokenizer(), folder, width=result.structure.structure == "width")
    return model, result.structure, folder, loader


SLOW = pytest.mark.slow  # a fresh interpreter each: the first family runs in the quick suite, the rest with `slow`


@pytest.mark.parametrize("arch,settings", [
    pytest.param("llama", dict(method="flap", ratio=0.3, bias_compensation=True), id="llama-flap-compensated"),
    pytest.param("qwen2", dict(method="wanda-sp", ratio=0.5, target="per-block"), id="qwen2-wanda-sp", marks=SLOW),
    pytest.param("gemma2", dict(method="magnitude-sp", ratio=0.3), id="gemma2-magnitude-sp", marks=SLOW),
    pytest.param("mistral", dict(method="flap", ratio=0.3), id="mistral-flap", marks=SLOW),
])
def test_a_uniform_width_model_reloads_with_from_pretrained_alone(arch, settings, tmp_path):
    model, record, folder, loader = prune_and_save(arch, tmp_path, **settings)
    assert loader == "from_pretrained" and not (folder / SHRINK_FILE).exists()
    tokens = windows(2)
    done, loaded = load_alone(folder, tokens, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        torch.testing.assert_close(load_file(str(tmp_path / "logits.safetensors"))["logits"], model(tokens).logits,
                                   rtol=1e-5, atol=1e-5)
    assert loaded["params"] == record.model_params_kept == sum(p.numel() for p in model.parameters())
    assert loaded["heads"] % loaded["kv_heads"] == 0 and loaded["kv_heads"] < 2 * loaded["heads"]
    dense_bytes = sum(p.numel() * 4 for p in tiny(arch).parameters())
    assert (folder / "model.safetensors").stat().st_size < dense_bytes  # fewer tensors stored, not zeros


def test_removed_blocks_reload_with_from_pretrained_alone(tmp_path):
    model, record, folder, loader = prune_and_save("qwen2", tmp_path, layers=4, method="block-influence", ratio=0.5)
    assert loader == "from_pretrained" and len(record.removed_blocks) == 2
    saved = json.loads((folder / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2 and len(saved["layer_types"]) == 2
    tokens = windows(2)
    done, loaded = load_alone(folder, tokens, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert loaded["layers"] == 2 and loaded["params"] == record.model_params_kept
    with torch.no_grad():
        torch.testing.assert_close(load_file(str(tmp_path / "logits.safetensors"))["logits"], model(tokens).logits,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,settings", [
    ("llama", dict(method="flap", ratio=0.3, allocation="global", bias_compensation=True)),
    ("opt", dict(method="wanda-sp", ratio=0.3)),  # OPT's config derives head_dim from hidden_size / heads
], ids=["llama-global", "opt-uniform"])
def test_widths_no_config_can_say_load_with_the_project_loader_and_plain_transformers_refuse(arch, settings,
                                                                                             tmp_path):
    model, record, folder, loader = prune_and_save(arch, tmp_path, **settings)
    assert loader == LOADER and (folder / SHRINK_FILE).exists()
    if arch == "llama":
        assert len({b.channels_kept for b in record.blocks}) > 1  # global allocation: blocks differ
    tokens = windows(2)
    with torch.no_grad():
        expected = model(tokens).logits
        torch.testing.assert_close(load_shrunk(folder)(tokens).logits, expected, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in load_shrunk(folder).parameters()) == record.model_params_kept
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # transformers refuses, never loads it wrong
        AutoModelForCausalLM.from_pretrained(folder)


def test_the_loader_refuses_weights_that_do_not_match_its_widths(tmp_path):
    from wanda_engine.core.errors import ModelLoadError

    _, _, folder, _ = prune_and_save("llama", tmp_path, method="flap", ratio=0.3, allocation="global")
    spec = json.loads((folder / SHRINK_FILE).read_text())
    spec["blocks"][0]["channels"] -= 1
    (folder / SHRINK_FILE).write_text(json.dumps(spec))
    with pytest.raises(ModelLoadError, match="do not match the widths"):
        load_shrunk(folder)
