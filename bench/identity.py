"""Bit-identity check for refactors: every method pruned on the embedded model through the CLI, and a sha256 of
what it produced (the saved weights tensor by tensor, the masks' checksum, the perplexities: bit for bit; the
records to within 1e-5 relative: fp32 sums taken in another order differ by a few ulps).

Run it before a change and after it, then compare the two JSON files:

    python bench/identity.py --out /tmp/before.json
    ... change the code ...
    python bench/identity.py --out /tmp/after.json --compare /tmp/before.json

Not a test (it takes minutes); it prints what differs and exits 1 if anything does.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--nsamples", "8", "--seqlen", "128", "--eval-windows", "3", "--eval-seqlen", "256", "--quiet"]
CASES = {
    "magnitude": ["--method", "magnitude"],
    "magnitude-weights-only": ["--method", "magnitude", "--no-calibration"],
    "wanda": ["--method", "wanda"],
    "wanda-2of4": ["--method", "wanda", "--pattern", "2:4"],
    "wanda-matrix": ["--method", "wanda", "--group", "matrix"],
    "sparsegpt": ["--method", "sparsegpt"],
    "sparsegpt-2of4": ["--method", "sparsegpt", "--pattern", "2:4"],
    "ria": ["--method", "ria"],
    "wanda-variant": ["--method", "wanda", "--variant"],
    "owl-wanda": ["--method", "wanda", "--layerwise", "owl", "--sparsity", "0.6"],
    "magnitude-protect": ["--method", "magnitude", "--protect-channels", "0.01"],
    "wanda-obs": ["--method", "wanda", "--weight-update", "obs"],
}


def tensor_digests(folder: Path) -> dict[str, str]:
    from safetensors import safe_open

    digests = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for key in sorted(f.keys()):
                t = f.get_tensor(key).contiguous()
                digests[key] = hashlib.sha256(t.numpy().tobytes()).hexdigest()
    return digests


def numbers_differ(a, b, rel: float = 1e-5) -> str | None:
    """Where two records' JSON differ beyond float rounding: the first path, or None."""
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            same = a == b or abs(a - b) <= rel * max(abs(a), abs(b)) or (a != a and b != b)
            return None if same else f"{a!r} != {b!r}"
        return f"{a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"keys {sorted(a.keys() ^ b.keys())}"
        return next((f"{k}.{why}" for k in a if (why := numbers_differ(a[k], b[k], rel))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"lengths {len(a)} != {len(b)}"
        return next((f"[{i}].{why}" for i, (x, y) in enumerate(zip(a, b)) if (why := numbers_differ(x, y, rel))), None)
    return None if a == b else f"{a!r} != {b!r}"


def run_case(name: str, args: list[str], work: Path) -> dict:
    out, saved = work / name, work / f"{name}-model"
    cmd = [sys.executable, "-m", "wanda_engine", "prune", *args, *SMALL, "--out", str(out), "--save-model", str(saved)]
    subprocess.run(cmd, cwd=ROOT, check=True)
    run = json.loads((out / "run.json").read_text())
    records = json.loads((out / "records.json").read_text())
    weights = tensor_digests(saved)
    return {"ppl": run["ppl"], "ppl_dense": run["ppl_dense"], "sparsity": run["sparsity"],
            "mask_sha256": run["mask_sha256"],
            "weights_sha256": hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest(),
            "records": records,
            "blocks": [[b["sparsity"], b.get("block_error")] for b in run["blocks"]]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--compare", help="an earlier --out to compare with")
    parser.add_argument("--only", help="comma-separated case names")
    a = parser.parse_args()
    names = a.only.split(",") if a.only else list(CASES)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = run_case(name, CASES[name], Path(tmp))
            print(name, results[name]["ppl"], results[name]["weights_sha256"][:12], flush=True)
    Path(a.out).write_text(json.dumps(results))
    if not a.compare:
        return 0
    before = json.loads(Path(a.compare).read_text())
    differ = []
    for n in (n for n in names if n in before):
        for k in results[n]:
            why = (numbers_differ(before[n].get(k), results[n][k]) if k == "records"
                   else None if results[n][k] == before[n].get(k) else f"{before[n].get(k)!r} -> {results[n][k]!r}")
            if why:
                differ.append((n, k))
                print(f"DIFFERS: {n} {k}: {why}"[:400])
    print("identical" if not differ else f"{len(differ)} differences")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
