"""The benchmark script still runs (a smoke test, not a timing): every column, for each mode."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from app.headless import CHROMIUM

pytestmark = pytest.mark.slow  # benchmark smoke tests, each a process

COLUMNS = {"model", "device", "dtype", "calib", "method", "records", "dense_forward_s", "prune_s", "ratio",
           "select_share", "peak_host_mib", "peak_anon_mib", "weights_in_memory_mib", "peak_device_mib",
           "block_mib", "eval_tokens_per_s", "model_gib", "phases_s"}


def bench(tmp_path, *args: str) -> list[dict]:
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "prune_speed.py"), "--nsamples", "2", "--seqlen", "16",
                           "--eval-windows", "1", "--json", str(out), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert "| ratio |" in proc.stdout  # the printed table
    return rows


def test_random_shapes_with_and_without_records(tmp_path):
    rows = bench(tmp_path, "--random", "llama-tiny", "--methods", "wanda,owl-wanda,wanda:2:4", "--records", "both")
    assert len(rows) == 6 and all(COLUMNS <= set(r) for r in rows)
    assert {(r["method"], r["records"]) for r in rows} >= {("wanda 50%", "on"), ("wanda 50%", "off")}
    assert all(r["prune_s"] > 0 and r["ratio"] > 0 and 0 <= r["select_share"] <= 1 for r in rows)


@pytest.mark.parametrize("mode", [["--offload"], ["--max-memory", "cpu=1KiB"]], ids=["offload", "max-memory"])
def test_offloaded_modes(tmp_path, tiny_model_dir, mode):
    rows = bench(tmp_path, "--model", str(tiny_model_dir), "--methods", "wanda", *mode)
    assert len(rows) == 1 and COLUMNS <= set(rows[0])
    if mode[0] == "--max-memory":
        assert "disk" in rows[0]["model"]  # the device map is part of the model's label


def test_random_shapes_under_accelerate_offload(tmp_path):
    rows = bench(tmp_path, "--random", "llama-tiny", "--methods", "wanda,magnitude", "--max-memory", "cpu=1KiB")
    assert len(rows) == 2 and all("disk" in r["model"] and COLUMNS <= set(r) for r in rows)


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is not installed")
def test_app_against_cli_benchmark_runs(tmp_path):
    """The Compare in a real browser against the CLI pair, at tiny settings: the row has every column."""
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "app_vs_cli.py"), "--nsamples", "2", "--seqlen", "16",
                           "--eval-windows", "1", "--eval-seqlen", "32", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["app_compare_s"] > 0 and row["cli_pair_s"] > 0 and row["ratio"] > 0, row
    assert 0 < row["wanda_cli_s"] < row["cli_pair_s"] and row["compare_over_wanda"] > row["ratio"], row
    assert row["app_runs_s"] > 0 and row["cli_runs_s"] > 0  # both sides wrote their two runs
    assert "| ratio |" in proc.stdout


def test_shrink_benchmark_runs(tmp_path, tiny_model_dir):
    """bench/shrink.py at tiny settings: one row per method, the structured ones against Wanda's pruning time."""
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "shrink.py"), "--model", str(tiny_model_dir),
                           "--nsamples", "2", "--seqlen", "16", "--eval-windows", "1", "--eval-seqlen", "32",
                           "--decode-tokens", "2", "--repeats", "1", "--methods", "wanda,flap,depth", "--ratio", "0.5",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["wanda 50%", "flap+bias 50%", "block-influence 50%"]
    assert rows[0]["ideal_speedup"] == 1.0 and rows[0]["prune_vs_wanda"] == 1.0
    assert all(r["ideal_speedup"] > 1 and r["params"] < r["params_dense"] for r in rows[1:])
    assert "| prefill_speedup |" in proc.stdout
