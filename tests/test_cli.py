"""The CLI contract on a tiny model folder: outputs, and one clear line for every kind of bad input."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED_WIKITEXT2

from wanda_engine.cli.main import main

FAST = ["--nsamples", "4", "--seqlen", "32", "--eval-windows", "2", "--quiet"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_prune_writes_the_run_contract(capsys, tiny_model_dir, tmp_path):
    out_dir, saved = tmp_path / "run", tmp_path / "saved"
    rc, out, err = run_cli(capsys, "prune", "--model", str(tiny_model_dir), "--method", "wanda", "--sparsity", "0.5",
                           *FAST, "--out", str(out_dir), "--save-model", str(saved))
    assert rc == 0, err
    meta = json.loads((out_dir / "run.json").read_text())
    assert meta["status"] == "complete"
    for key in ("method", "sparsity", "pattern", "variant", "calib", "nsamples", "seqlen", "seed", "device", "model"):
        assert key in meta["config"], key
    assert meta["sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert len(meta["layers"]) == 14 and all(l["sparsity"] == pytest.approx(0.5) for l in meta["layers"])
    assert meta["eval"]["dataset"] == "austen:prideprejudice" and meta["eval"]["tokens"] == 2 * 32
    assert meta["ppl"] > 0 and meta["ppl_dense"] > 0
    assert {"load_s", "prune_s", "eval_s"} <= set(meta["timings"])
    assert meta["calibration"]["nsamples"] == 4 and meta["calibration"]["seed"] == 0
    assert json.loads(out.strip().splitlines()[-1])["ppl"] == meta["ppl"]
    # the saved model loads back with its zeros
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(saved)
    q = reloaded.model.layers[0].self_attn.q_proj.weight
    assert (q == 0).float().mean().item() == pytest.approx(0.5)


def test_pinned_token_file_reproduces_the_masks(capsys, tiny_model_dir, tmp_path):
    tokens = np.random.default_rng(0).integers(0, 1000, size=(4, 32), dtype=np.int64)
    np.save(tmp_path / "calib.npy", tokens)
    for name in ("a", "b"):
        rc, _, err = run_cli(capsys, "prune", "--model", str(tiny_model_dir), "--calib", str(tmp_path / "calib.npy"),
                             "--nsamples", "4", "--seqlen", "32", "--eval", "none", "--quiet",
                             "--out", str(tmp_path / name), "--save-model", str(tmp_path / f"m{name}"))
        assert rc == 0, err
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "ma" / "model.safetensors"), load_file(tmp_path / "mb" / "model.safetensors")
    assert all(torch.equal(a[k] == 0, b[k] == 0) for k in a)
    meta = json.loads((tmp_path / "a" / "run.json").read_text())
    assert meta["calibration"]["label"] == "tokens:calib.npy" and meta["ppl"] is None


def bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "empty.txt").write_text("")
    (tmp / "binary.txt").write_bytes(b"\x00\x01\x02binary\xff" * 10)
    (tmp / "short.txt").write_text("Too short to calibrate on.")
    np.save(tmp / "wrong_shape.npy", np.zeros((3, 32), dtype=np.int64))
    np.save(tmp / "wrong_dtype.npy", np.zeros((4, 32), dtype=np.float32))
    return {
        "sparsity above 1": (["--sparsity", "1.5"], "sparsity"),
        "N >= M": (["--pattern", "4:2"], "N < M"),
        "M does not divide the width": (["--pattern", "3:7"], "does not divide"),
        "non-integer N:M": (["--pattern", "2:x"], "pattern"),
        "unknown model offline": (["--model", "no-such-org/no-such-model"], "unreachable"),
        "empty text file": (["--calib", str(tmp / "empty.txt")], "empty"),
        "binary text file": (["--calib", str(tmp / "binary.txt")], "binary"),
        "text too short": (["--calib", str(tmp / "short.txt")], "tokens"),
        "token file of the wrong shape": (["--calib", str(tmp / "wrong_shape.npy")], "shape"),
        "token file of the wrong dtype": (["--calib", str(tmp / "wrong_dtype.npy")], "integer"),
        "eval windows longer than the context": (["--eval-seqlen", "4096"], "context"),
        "more eval windows than the text has": (["--eval-windows", "100000"], "windows"),
    }


@pytest.mark.parametrize("case", list(bad_inputs(Path("/tmp")).keys()))
def test_bad_input_gets_one_clear_line_and_changes_nothing(case, capsys, tiny_model_dir, tmp_path):
    args, expected = bad_inputs(tmp_path)[case]
    base = {"--model": str(tiny_model_dir), "--nsamples": "4", "--seqlen": "32", "--eval-windows": "2"}
    for flag in args[::2]:
        base.pop(flag, None)
    argv = ["prune", *[x for kv in base.items() for x in kv], *args, "--quiet", "--out", str(tmp_path / "run"),
            "--save-model", str(tmp_path / "saved")]
    t0 = time.perf_counter()
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 1
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not (tmp_path / "run").exists() and not (tmp_path / "saved").exists()
    assert time.perf_counter() - t0 < 20


def test_wikitext2_eval_path_with_the_shared_copy(capsys, tiny_model_dir, tmp_path, monkeypatch):
    if not SHARED_WIKITEXT2.exists():
        pytest.skip("../shared/data/wikitext2-raw-test.txt is not here (it exists only for the project's CI)")
    monkeypatch.setenv("WANDA_WIKITEXT2_TEST", str(SHARED_WIKITEXT2))
    rc, _, err = run_cli(capsys, "prune", "--model", str(tiny_model_dir), "--eval", "wikitext2", *FAST,
                         "--out", str(tmp_path / "run"))
    assert rc == 0, err
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["eval"]["dataset"] == "wikitext2:test" and meta["eval"]["tokens"] == 64


@pytest.mark.slow
def test_module_entry_point_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wanda_engine", "prune", "--sparsity", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: sparsity 2 is not a fraction below 1")


def test_cancel_before_evaluation_marks_the_run_cancelled(tiny_model_dir, tmp_path):
    """A cancel request made after pruning stops the run at the next stage, and the run says so."""
    import threading

    from wanda_engine.config import EvalConfig, PruneConfig, RunRequest
    from wanda_engine.core.errors import PruneCancelled
    from wanda_engine.core.events import PruneFinished
    from wanda_engine.runner.execute import execute_run
    from wanda_engine.store.run_store import load_run

    cancel = threading.Event()

    def on_event(event):
        if isinstance(event, PruneFinished):
            cancel.set()

    request = RunRequest(model=str(tiny_model_dir), prune=PruneConfig(nsamples=4, seqlen=32),
                         eval=EvalConfig(seqlen=32, windows=2))
    with pytest.raises(PruneCancelled, match="'eval'"):
        execute_run(request, run_dir=tmp_path / "run", on_event=on_event, cancel=cancel)
    assert load_run(tmp_path / "run").status == "cancelled"


def test_rename_keeps_the_recorded_name(tmp_path):
    from wanda_engine.store.run_store import RunStore, atomic_write_json

    store = RunStore(tmp_path)
    atomic_write_json(tmp_path / "a" / "run.json", {"name": "a", "status": "complete"})
    store.rename("a", "b")
    assert store.get("b").record.name == "b"
    with pytest.raises(Exception, match="not allowed"):
        store.rename("b", "../../etc/x")
