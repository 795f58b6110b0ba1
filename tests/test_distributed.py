"""Data-parallel calibration on torch.distributed (gloo, CPU): 2 ranks give exactly the masks of 1."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # several torchrun processes

WORKER = Path(__file__).parent / "helpers" / "distributed_prune.py"
SPECS = ["wanda", "ria", "magnitude", "wanda+owl", "sparsegpt"]


def torchrun(nproc: int, out: Path) -> tuple[dict, dict]:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([exe, "--standalone", f"--nproc-per-node={nproc}", str(WORKER), str(out), ",".join(SPECS)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out), json.loads(Path(str(out) + ".json").read_text())


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    return torchrun(1, tmp / "one.pt"), torchrun(2, tmp / "two.pt")


@pytest.mark.parametrize("spec", [s for s in SPECS if s != "sparsegpt"])
def test_two_ranks_give_exactly_the_masks_of_one(one_and_two, spec):
    (masks1, meta1), (masks2, meta2) = one_and_two
    assert meta1[spec]["world"] == 1 and meta2[spec]["world"] == 2
    assert masks1[spec].keys() == masks2[spec].keys() and len(masks1[spec]) >= 14
    for key in masks1[spec]:
        assert torch.equal(masks1[spec][key], masks2[spec][key]), f"{key}: the masks differ between 1 and 2 ranks"
    # block statistics are summed over ranks too: same block error and (for OWL) the same targets
    for b1, b2 in zip(meta1[spec]["blocks"], meta2[spec]["blocks"]):
        assert b2["block_error"] == pytest.approx(b1["block_error"], rel=1e-5)
        assert b2["target"] == b1["target"]


def test_sparsegpt_hessians_are_summed_over_ranks(one_and_two):
    """The Hessian sums in fp32 in another order on 2 ranks: masks agree up to a few near-ties."""
    (masks1, _), (masks2, _) = one_and_two
    differ = sum(int((masks1["sparsegpt"][k] != masks2["sparsegpt"][k]).sum()) for k in masks1["sparsegpt"])
    total = sum(m.numel() for m in masks1["sparsegpt"].values())
    assert differ / total < 0.002


def test_cli_under_torchrun_writes_one_run_with_the_single_rank_masks(tiny_model_dir, tmp_path):
    """`torchrun -m wanda_engine prune`: rank 0 writes the run; its saved weights match a 1-process run."""
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["prune", "--model", str(tiny_model_dir), "--nsamples", "4", "--seqlen", "32", "--batch-size", "2",
            "--eval-windows", "2", "--quiet", "--device", "cpu"]
    two = subprocess.run([exe, "--standalone", "--nproc-per-node=2", "-m", "wanda_engine", *args, "--out",
                          str(tmp_path / "two"), "--save-model", str(tmp_path / "two-model")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parents[1])
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "wanda_engine", *args, "--out", str(tmp_path / "one"), "--save-model",
                          str(tmp_path / "one-model")], capture_output=True, text=True, timeout=300, env=env,
                         cwd=Path(__file__).parents[1])
    assert one.returncode == 0, one.stderr[-3000:]
    meta = json.loads((tmp_path / "two" / "run.json").read_text())
    assert meta["status"] == "complete" and meta["world_size"] == 2
    assert json.loads((tmp_path / "one" / "run.json").read_text())["world_size"] == 1
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "one-model" / "model.safetensors"), load_file(tmp_path / "two-model" / "model.safetensors")
    pruned = [k for k in a if k.endswith("proj.weight")]
    assert pruned and all(torch.equal(a[k] == 0, b[k] == 0) for k in pruned)
