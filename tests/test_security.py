"""Security: no code from model repositories, only safe weight formats, loopback only, no path traversal."""
from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import REPO

from wanda_engine.core.errors import ConfigError, DataError, EngineError, ModelLoadError
from wanda_engine.inputs.models import load_model


# --- code from model repositories -------------------------------------------------------------------

def test_remote_code_is_off_by_default_everywhere():
    import inspect

    from app import forms
    from wanda_engine.cli.main import build_parser
    from wanda_engine.config import RunRequest
    from wanda_engine.store.run_store import RunStore

    assert inspect.signature(load_model).parameters["trust_remote_code"].default is False
    assert RunRequest().trust_remote_code is False
    assert build_parser().parse_args(["prune"]).trust_remote_code is False
    # the app has no way to turn it on: a browser visitor must never run code on the server
    request = forms.build_request({"trust_remote_code": True}, RunStore("/nonexistent-store"))
    assert request.trust_remote_code is False


def _evil_module(folder: Path, module: str, marker: Path, base: str) -> None:
    (folder / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').write('code from the model repository ran')\n"
        f"from transformers import {base}\n"
        f"class Evil({base}):\n    pass\n")


@pytest.mark.parametrize("model_type", ["llama", "evil-arch"])
def test_code_in_a_model_folder_never_runs(model_type, tiny_model_dir, tmp_path):
    """A folder whose config.json and tokenizer_config.json point at its own Python files (auto_map)."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "PWNED"
    _evil_module(folder, "evil_config", marker, "LlamaConfig")
    _evil_module(folder, "evil_model", marker, "LlamaForCausalLM")
    _evil_module(folder, "evil_tokenizer", marker, "PreTrainedTokenizerFast")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "evil_config.Evil",
                                                   "AutoModelForCausalLM": "evil_model.Evil"})
    (folder / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config["auto_map"] = {"AutoTokenizer": [None, "evil_tokenizer.Evil"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config))
    if model_type == "llama":  # a known architecture: transformers' own class is used, not the folder's
        loaded = load_model(str(folder))
        assert type(loaded.model).__module__.startswith("transformers.models.llama")
    else:
        with pytest.raises(ModelLoadError):
            load_model(str(folder))
    assert not marker.exists()


def test_the_cli_warns_when_remote_code_is_turned_on(tmp_path, capsys):
    from wanda_engine.cli.main import main

    rc = main(["prune", "--model", str(tmp_path / "no-such-model"), "--trust-remote-code", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "warning: --trust-remote-code runs Python code from the model repository" in err


# --- weight formats ------------------------------------------------------------------------------------

class _Exploit:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickled_folder(tiny_model_dir: Path, folder: Path, extra=None, keep_safetensors: bool = False) -> dict:
    from safetensors.torch import load_file

    shutil.copytree(tiny_model_dir, folder)
    state = load_file(folder / "model.safetensors")
    if not keep_safetensors:
        (folder / "model.safetensors").unlink()
    torch.save({**state, **(extra or {})}, folder / "pytorch_model.bin")
    return state


def test_a_pickled_checkpoint_cannot_run_code(tiny_model_dir, tmp_path):
    marker = tmp_path / "PWNED"
    _pickled_folder(tiny_model_dir, tmp_path / "model", extra={"payload": _Exploit(marker)})
    with pytest.raises(ModelLoadError, match="could not load"):
        load_model(str(tmp_path / "model"))
    assert not marker.exists()


def test_a_plain_pickled_checkpoint_loads_as_weights_only(tiny_model_dir, tmp_path):
    state = _pickled_folder(tiny_model_dir, tmp_path / "model")
    loaded = load_model(str(tmp_path / "model"))
    assert torch.equal(loaded.model.state_dict()["model.layers.1.mlp.up_proj.weight"], state["model.layers.1.mlp.up_proj.weight"])


def test_safetensors_is_preferred_over_a_pickle(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    real = load_file(folder / "model.safetensors")
    torch.save({k: torch.zeros_like(v) for k, v in real.items()}, folder / "pytorch_model.bin")
    loaded = load_model(str(folder))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(loaded.model.state_dict()[key], real[key]) and real[key].abs().sum() > 0


SOURCES = [p for d in ("wanda_engine", "app", "pages") for p in sorted((REPO / d).rglob("*.py"))]
UNSAFE = {
    r"torch\.load\((?![^)]*weights_only\s*=\s*True)": "torch.load without weights_only=True",
    r"\bpickle\.loads?\(": "pickle.load",
    r"allow_pickle\s*=\s*True": "np.load(allow_pickle=True)",
    r"trust_remote_code\s*=\s*True": "trust_remote_code=True",
    r"(?<![\w.])(eval|exec)\(": "eval/exec",
    r"shell\s*=\s*True": "a shell command",
}


def test_no_unsafe_deserialisation_or_code_execution_in_the_sources():
    assert len(SOURCES) > 20
    found = [f"{p.relative_to(REPO)}: {what}" for p in SOURCES for pattern, what in UNSAFE.items()
             if re.search(pattern, p.read_text())]
    assert not found, found


# --- the server ------------------------------------------------------------------------------------------

def test_the_server_binds_to_loopback_and_sends_no_usage_statistics():
    from app import forms

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["browser"]["gatherUsageStats"] is False
    assert config["server"]["maxUploadSize"] * 2**20 == forms.MAX_UPLOAD_BYTES
    run_line = next(line for line in (REPO / "Makefile").read_text().splitlines() if "streamlit run" in line)
    assert "--server.address" not in run_line  # `make run` uses the config above
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Reliability and security"):]
    assert "--server.address 0.0.0.0" in section and "authenticating" in section


# --- uploads and names ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../etc/passwd.txt", "/etc/cron.d/evil.txt", "..\\..\\windows\\evil.txt",
                                  "a/../../../b.txt", "\x00evil.txt", "...txt", "", "~/.bashrc", "notes.txt.exe"])
def test_an_upload_is_stored_under_the_data_folder_whatever_its_name(name, tmp_path):
    from app import forms
    from wanda_engine.store.run_store import RunStore

    store = RunStore(tmp_path / "runs")
    path = forms.save_upload(forms.Upload(name, b"Calibration text, plain and simple.\n" * 5), store)
    assert path.resolve().parent == (store.root / ".uploads").resolve()
    assert path.name.endswith(".txt") and not path.name.startswith(".") and path.read_bytes().startswith(b"Calibration")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [path.name]


@pytest.mark.parametrize("data, words", [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"), (b"\xff\xfe\xfa not utf-8", "not valid UTF-8"), (b"  \n\t", "empty"),
])
def test_an_upload_must_be_text(data, words, tmp_path):
    from app import forms
    from wanda_engine.store.run_store import RunStore

    with pytest.raises(DataError, match=words):
        forms.save_upload(forms.Upload("x.txt", data), RunStore(tmp_path / "runs"))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_an_upload_over_the_size_cap_is_refused(tmp_path):
    from app import forms
    from wanda_engine.store.run_store import RunStore

    with pytest.raises(DataError, match="the limit is 50 MB"):
        forms.save_upload(forms.Upload("big.txt", b"a" * (forms.MAX_UPLOAD_BYTES + 1)), RunStore(tmp_path / "runs"))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_an_upload_folder_that_leads_outside_is_refused(tmp_path):
    from app import forms
    from wanda_engine.store.run_store import RunStore

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / ".uploads").symlink_to(outside)
    with pytest.raises(DataError, match="outside the data folder"):
        forms.save_upload(forms.Upload("x.txt", b"some text"), RunStore(tmp_path / "runs"))
    assert list(outside.iterdir()) == []


BAD_NAMES = ["../../etc/x", "..", ".", "/etc/x", "a/b", "a\\b", ".hidden", "", "x" * 101, "x\x00y", "name\n",
             "-rf", "~root", "run name", "a..b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_run_names_with_path_parts_are_refused_everywhere(name, tmp_path):
    from wanda_engine.config import RunRequest
    from wanda_engine.core.parsing import check_run_name
    from wanda_engine.store.run_store import RunStore, atomic_write_json

    store = RunStore(tmp_path / "runs")
    atomic_write_json(store.root / "good" / "run.json", {"name": "good", "status": "complete"})
    with pytest.raises(ConfigError, match="is not allowed"):
        check_run_name(name)
    with pytest.raises(ConfigError):
        store.path_for(name)
    with pytest.raises(ConfigError):
        RunRequest(name=name)
    with pytest.raises(EngineError):
        store.rename("good", name)
    with pytest.raises(EngineError):
        store.delete(name)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["good", "run.json", "runs"]


@pytest.mark.parametrize("name", ["../../etc/x", "/etc/x", "a/b", ".hidden", "run name"])
def test_the_prune_form_refuses_a_run_name_with_path_parts(name, tmp_path):
    from app import forms
    from wanda_engine.store.run_store import RunStore

    with pytest.raises(ConfigError, match="is not allowed"):
        forms.build_request({"run_name": name}, RunStore(tmp_path / "runs"))


@pytest.mark.parametrize("name", ["run-1", "a.b_c", "20260101-120000-default-wanda-unstructured-0.50"])
def test_plain_run_names_are_accepted(name, tmp_path):
    from wanda_engine.core.parsing import check_run_name
    from wanda_engine.store.run_store import RunStore

    assert check_run_name(name) == name
    assert RunStore(tmp_path).path_for(name) == tmp_path.resolve() / name


@pytest.mark.parametrize("text", ["../../etc/x-blocks", "/abs/path", "run\x00name-histograms-b0-self_attn.q_proj",
                                  "..", "a b/c\\d"])
def test_export_file_names_are_sanitised(text):
    from wanda_engine.store.run_store import safe_file_stem

    stem = safe_file_stem(text)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem), stem
    assert "/" not in stem and "\\" not in stem and not stem.startswith(".")


@pytest.mark.parametrize("folder", ["/etc/x", "../outside", "a/../../b", "", "   ", "linked/deeper", "linked"])
def test_a_saved_model_goes_only_into_the_stores_saved_models_folder(folder, tmp_path):
    from wanda_engine.core.errors import ConfigError
    from wanda_engine.store.run_store import RunStore

    store = RunStore(tmp_path / "runs")
    store.saved_models_dir.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (store.saved_models_dir / "linked").symlink_to(tmp_path / "elsewhere")  # a link out of the folder
    with pytest.raises(ConfigError, match="saved model folder"):
        store.saved_model_path(folder)


def test_a_saved_model_folder_name_resolves_inside_the_store(tmp_path):
    from wanda_engine.store.run_store import RunStore

    store = RunStore(tmp_path / "runs")
    inside = store.saved_models_dir.resolve()
    assert store.saved_model_path("wanda-50") == inside / "wanda-50"
    assert store.saved_model_path(str(inside / "b" / "c")) == inside / "b" / "c"
    assert store.saved_models_dir.name.startswith(".")  # never listed as a run
