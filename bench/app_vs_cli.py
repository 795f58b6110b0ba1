"""Benchmark: the Compare preset in a real browser against the same magnitude + Wanda pair from the CLI.

One run measures both sides on the same machine (these VMs are noisy: read the ratio, not the seconds):

  1. warm-up: one small CLI run with the evaluation settings, so that both sides find the dense
     perplexity cached (as a user does after the first run);
  2. CLI: `python -m wanda_engine prune --method magnitude ...` then `--method wanda ...`, each its own
     process as a user would type them, with the app's default settings;
  3. app: `streamlit run app/main.py` (the repository's .streamlit/config.toml), Debian's Chromium opens
     the page, clicks "Compare magnitude vs Wanda" and waits for the comparison on screen.

Prints the seconds of each side, their ratio (target <= 1.1), the Compare against the CLI's Wanda run
alone with its evaluation (`compare_over_wanda`, issue 12's target <= 1.3: the Compare's magnitude run
prunes from the weights alone), the time to the first page, and the CPU seconds the app's server, its
worker process and Chromium used while the Compare ran.

    python bench/app_vs_cli.py                      # the app's defaults: 16x256 calibration, 10x512 evaluation
    python bench/app_vs_cli.py --nsamples 8 --seqlen 128 --eval-windows 4 --eval-seqlen 256   # quicker
    python bench/app_vs_cli.py --repeat 3     # three alternating measurements and their median ratio
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from table import print_table  # noqa: E402  (bench/ is the script's own folder)

from app.forms import DEFAULTS  # noqa: E402
from app.headless import CHROMIUM, CHROMIUM_ARGS, REPO, child_pids, cpu_seconds, serve, settle  # noqa: E402


def cli_run(method: str, args: argparse.Namespace, runs: Path, nsamples: int | None = None,
            seqlen: int | None = None, extra: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, "-m", "wanda_engine", "prune", "--model", "default", "--method", method, *extra,
           "--sparsity", "0.5", "--calib", "default", "--nsamples", str(nsamples or args.nsamples),
           "--seqlen", str(seqlen or args.seqlen), "--seed", "0", "--eval", "default",
           "--eval-windows", str(args.eval_windows), "--eval-seqlen", str(args.eval_seqlen),
           "--out", str(runs / f"{method}-{time.monotonic_ns()}")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"CLI run failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(300)


def app_compare(args: argparse.Namespace, work: Path) -> dict:
    from playwright.sync_api import sync_playwright

    with serve(work / "runs-app", work / "streamlit.log") as (url, server), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(args.timeout * 1000)
        t_open = time.monotonic()
        page.goto(url)
        page.get_by_text("Prune a language model").wait_for()
        first_page_s = time.monotonic() - t_open
        settle(page)
        for label, key, value in (("Samples (nsamples)", "nsamples", args.nsamples),
                                  ("Tokens per sample (seqlen)", "seqlen", args.seqlen),
                                  ("Tokens per window", "eval_seqlen", args.eval_seqlen),
                                  ("Windows (0 = the whole text)", "eval_windows", args.eval_windows)):
            if value != DEFAULTS[key]:
                set_number(page, label, value)
        settle(page)
        cpu_before = (cpu_seconds(server.pid), sum(cpu_seconds(c) for c in _descendants(server.pid)),
                      sum(cpu_seconds(c) for c in _browser_pids()))
        t_click = time.monotonic()
        page.get_by_role("button", name="Compare magnitude vs Wanda").click()
        page.get_by_role("heading", name=re.compile("^Magnitude vs Wanda")).first.wait_for()  # both runs on screen
        compare_s = time.monotonic() - t_click
        server_cpu = cpu_seconds(server.pid) - cpu_before[0]
        worker_cpu = sum(cpu_seconds(c) for c in _descendants(server.pid)) - cpu_before[1]
        browser_cpu = sum(cpu_seconds(c) for c in _browser_pids()) - cpu_before[2]
        browser.close()
    return {"compare_s": compare_s, "first_page_s": first_page_s, "server_cpu_s": server_cpu,
            "worker_cpu_s": worker_cpu, "browser_cpu_s": browser_cpu}


def _browser_pids() -> list[int]:
    """Chromium's processes (the page's rendering is part of what the user waits for on this machine)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(CHROMIUM).name in (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _descendants(pid: int) -> list[int]:
    out, todo = [], child_pids(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += child_pids(child)
    return out


def measure(args: argparse.Namespace, index: int) -> dict:
    """One CLI pair and one Compare in the browser, from fresh run stores."""
    with tempfile.TemporaryDirectory(prefix="app-vs-cli-") as tmp:
        work = Path(tmp)
        runs, cli_s, wanda_s = [], float("nan"), float("nan")
        if not args.app_only:
            if index == 0:
                print("warm-up: caching the dense perplexity for these evaluation settings ...", file=sys.stderr)
                cli_run("magnitude", args, work / "runs-warmup", nsamples=1, seqlen=32)
            # the Compare's own pair: its magnitude run needs no calibration passes (the mask is the weights')
            print("CLI: magnitude --no-calibration, then wanda ...", file=sys.stderr)
            t = time.monotonic()
            runs = [cli_run("magnitude", args, work / "runs-cli", extra=("--no-calibration",))]
            t_wanda = time.monotonic()
            runs.append(cli_run("wanda", args, work / "runs-cli"))
            wanda_s = time.monotonic() - t_wanda
            cli_s = time.monotonic() - t
        print("app: Compare in Chromium ...", file=sys.stderr)
        app = app_compare(args, work)
        inside = {side: round(sum(json.loads(p.read_text())["timings"]["total_s"]
                                  for p in (work / f"runs-{side}").glob("*/run.json")), 1) for side in ("cli", "app")}
    return {"calibration": f"{args.nsamples}x{args.seqlen}", "evaluation": f"{args.eval_windows}x{args.eval_seqlen}",
            "cli_pair_s": round(cli_s, 1), "app_compare_s": round(app["compare_s"], 1),
            "ratio": round(app["compare_s"] / cli_s, 3), "wanda_cli_s": round(wanda_s, 1),
            "compare_over_wanda": round(app["compare_s"] / wanda_s, 3), "first_page_s": round(app["first_page_s"], 2),
            "server_cpu_s": round(app["server_cpu_s"], 1), "worker_cpu_s": round(app["worker_cpu_s"], 1),
            "browser_cpu_s": round(app["browser_cpu_s"], 1), "cli_runs_s": inside["cli"], "app_runs_s": inside["app"],
            "cli_ppl": " / ".join(f"{r.get('ppl', 0):.2f}" for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nsamples", type=int, default=DEFAULTS["nsamples"])
    ap.add_argument("--seqlen", type=int, default=DEFAULTS["seqlen"])
    ap.add_argument("--eval-windows", type=int, default=DEFAULTS["eval_windows"])
    ap.add_argument("--eval-seqlen", type=int, default=DEFAULTS["eval_seqlen"])
    ap.add_argument("--timeout", type=float, default=1800, help="seconds the browser waits for the comparison")
    ap.add_argument("--app-only", action="store_true", help="skip the CLI side (no ratio): for trying app changes")
    ap.add_argument("--repeat", type=int, default=1, help="measure both sides this many times, alternating")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is not installed (scripts/setup.sh installs it)")

    rows = [measure(args, i) for i in range(args.repeat)]
    print_table(rows)
    if len(rows) > 1:
        for key in ("ratio", "compare_over_wanda"):
            values = sorted(r[key] for r in rows)
            print(f"\nmedian {key} over {len(rows)} alternating measurements: {values[len(values) // 2]}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
