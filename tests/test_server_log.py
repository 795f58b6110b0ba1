"""Issue 19 item 12: the server's log is for what needs attention. Every start of the worker process (spawned, so
the child re-ran the server's `__main__`, app/main.py, as `__mp_main__`) drew the whole app in bare mode: 48
"missing ScriptRunContext" warnings per session and a job runner in the child."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_worker_re_running_the_apps_main_module_draws_nothing():
    """What multiprocessing's spawn does in the child with the server's __main__ (app/main.py): run it under the
    name __mp_main__. It must import no Streamlit and say nothing."""
    probe = ("import runpy, sys; runpy.run_path('app/main.py', run_name='__mp_main__'); "
             "print(sorted(m for m in ('streamlit', 'app.ui', 'app.jobs', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]" and done.stderr == "", (done.stdout, done.stderr)


@pytest.mark.slow  # a real server, a real browser and the worker process: about 40 s
def test_a_served_sessions_log_has_no_warnings(tmp_path, tiny_model_dir):
    """A session opens the app, runs a Compare on a tiny model (the worker process starts and relays its
    progress), and the log holds no warning at all."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from app.headless import CHROMIUM, CHROMIUM_ARGS, serve, settle

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is not installed")
    log = tmp_path / "streamlit.log"
    with serve(tmp_path / "runs", log, {"WANDA_CACHE": str(tmp_path / "cache")}) as (url, _):
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
                page.set_default_timeout(60_000)
                page.goto(url)
                page.get_by_text("Prune a language model").wait_for()
                settle(page)
                page.get_by_text("Local folder").click()
                settle(page)
                box = page.get_by_role("textbox", name="Model folder")
                box.fill(str(tiny_model_dir))
                box.press("Enter")
                for label, value in (("Samples (nsamples)", 4), ("Tokens per sample (seqlen)", 32),
                                     ("Tokens per window", 64), ("Windows (0 = the whole text)", 2)):
                    field = page.get_by_label(label, exact=True)
                    field.fill(str(value))
                    field.press("Enter")
                    page.wait_for_timeout(300)
                settle(page)
                page.get_by_role("button", name="Compare magnitude vs Wanda").first.click()
                page.get_by_text(re.compile(r"Compare finished in")).first.wait_for(timeout=240_000)
                settle(page)
                assert page.locator("[data-testid='stException']").count() == 0
            finally:
                browser.close()
    text = log.read_text()
    assert "missing ScriptRunContext" not in text, text[-2000:]
    warnings = [line for line in text.splitlines() if re.search(r"\b(WARNING|ERROR|Traceback)\b", line)]
    assert not warnings, warnings[:5]
