"""Issue 19 item 12: the server's log is for what needs attention. Every start of the worker process (spawned, so
the child re-ran the server's `__main__`, app/main.py, as `__mp_main__`) drew the whole app in bare mode: 48
"missing ScriptRunContext" warnings per session and a job runner in the child."""
from __future__ import annotations

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
