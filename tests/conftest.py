"""Shared fixtures: tiny random models built from configs (breadth), the embedded model (end to end)."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see wanda_engine/__init__.py

from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_WIKITEXT2 = REPO.parent / "shared" / "data" / "wikitext2-raw-test.txt"

# Tiny configs, one per architecture family the engine must handle without per-model code.
TINY_CONFIGS = {
    "llama": ("LlamaConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=256)),
    "mistral": ("MistralConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=256, sliding_window=None)),
    "qwen2": ("Qwen2Config", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=256)),
    "opt": ("OPTConfig", dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                              word_embed_proj_dim=64, max_position_embeddings=256)),
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_positions=256)),
    # alternating sliding-window and global layers: each layer gets its own attention mask
    "gemma2": ("Gemma2Config", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, head_dim=16, max_position_embeddings=256, sliding_window=8)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, max_position_embeddings=256)),
}
TINY_VOCAB = 512


def tiny_model(arch: str, vocab_size: int = TINY_VOCAB, seed: int = 0):
    """A randomly initialised causal LM of the given family, in eval mode, fp32."""
    import transformers

    cls_name, kwargs = TINY_CONFIGS[arch]
    config = getattr(transformers, cls_name)(vocab_size=vocab_size, **kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    model.config.use_cache = False
    return model


@pytest.fixture(scope="session")
def embedded():
    """The embedded default model (SmolLM2-135M-Instruct, fp32), loaded once per test session."""
    from wanda_engine.inputs.models import load_model

    return load_model("default")


@pytest.fixture(scope="session")
def embedded_tokenizer_dir() -> Path:
    from wanda_engine.inputs.models import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer_dir) -> Path:
    """A 2-block LLaMA with random weights and the embedded model's tokenizer, saved as a folder.

    Loadable by `load_model(str(path))`: the app and CLI tests use it as a fast stand-in.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_dir)
    model = tiny_model("llama", vocab_size=len(tokenizer))
    model.config.max_position_embeddings = 2048
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """An empty run store for the test, also exported as WANDA_RUNS."""
    path = tmp_path / "runs"
    monkeypatch.setenv("WANDA_RUNS", str(path))
    return path


@pytest.fixture
def app_env(runs_dir, tiny_model_dir, tmp_path, monkeypatch):
    """Runs and the dense-perplexity cache in temp folders, offline hub, fresh Streamlit resources."""
    import streamlit as st

    monkeypatch.setenv("WANDA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st.cache_resource.clear()
    yield SimpleNamespace(runs=runs_dir, model=tiny_model_dir)
    from app import ui

    ui.job_runner().cancel_all()
    ui.job_runner().wait_idle(60)
    ui.job_runner().close()
    st.cache_resource.clear()


# Syntax-tree conversions take turns in this process, as in the app's server (app/ast_lock.py): the tests run page
# scripts and in-process jobs on threads at once.
from app import ast_lock  # noqa: E402

ast_lock.install()
