"""Issue 19 item 13: CPython 3.11's race on its syntax-tree conversion counter (python/cpython#106905 and kin), the
SystemError "AST constructor recursion depth mismatch" that failed test_repair_app once on a fresh machine.

The stress runs, at once, what converts syntax trees in this project's threads: a script thread compiling a page as
Streamlit's ScriptCache did with magic on (the project turns magic off now; the lock must hold without that), a job
thread reading a run's calibration.npy as a repair does (numpy parses every .npy header with ast.literal_eval), a second session reading a
run's arrays.npz, and pytest rewriting a test module (a tree compiled). The race needs a thread switch in the middle
of a conversion, which happens when a garbage collection there runs Python code: the stress makes that frequent (a
gc callback, a low collection threshold, a tiny switch interval) so that seconds show what a fresh machine hit once
in many runs. Without app.ast_lock it fails within a second on Python 3.11; with it, never.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import gc
import io
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app import ast_lock

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def switches_inside_conversions() -> Iterator[None]:
    """Python code in every collection, collections every 50 allocations, a thread switch at every chance."""
    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    callback = lambda phase, info: None  # noqa: E731 - Python code the collector runs: there the GIL can move
    gc.callbacks.append(callback)
    gc.set_threshold(50, 5, 5)
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*threshold)
        gc.callbacks.remove(callback)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def stress(seconds: float, stop_at_first: bool = False) -> tuple[list[str], dict[str, int]]:
    """Run the four converting threads for `seconds`; returns the SystemErrors they met and each one's count."""
    from streamlit.runtime.scriptrunner import magic

    calibration = _npy(np.arange(16 * 256, dtype=np.int64).reshape(16, 256))  # a run's calibration.npy
    arrays = _npz({f"{b}/mlp.down_proj/{k}": np.zeros(64, np.float32) for b in range(4)
                   for k in ("density", "channel_norms")})  # a run's arrays.npz: one header per array
    rewritten = ast.parse((REPO / "tests" / "test_explain.py").read_text())  # what pytest compiles after rewriting
    page = REPO / "pages" / "explain.py"
    source = page.read_text()

    def page_compile() -> None:  # Streamlit's ScriptCache with magic on, as the server compiled pages before
        compile(magic.add_magic(source, str(page)), str(page), "exec", dont_inherit=True)

    def job_thread() -> None:
        np.load(io.BytesIO(calibration), allow_pickle=False)

    def session_thread() -> None:
        with np.load(io.BytesIO(arrays), allow_pickle=False) as npz:
            for key in npz.files:
                npz[key]

    def pytest_rewrite() -> None:
        compile(rewritten, "test_explain.py", "exec", dont_inherit=True)

    errors: list[str] = []
    counts = {f.__name__: 0 for f in (page_compile, job_thread, session_thread, pytest_rewrite)}
    deadline = time.monotonic() + seconds

    def loop(work) -> None:
        while time.monotonic() < deadline and not (stop_at_first and errors):
            try:
                work()
            except SystemError as e:
                errors.append(f"{work.__name__}: {e}")
            counts[work.__name__] += 1

    threads = [threading.Thread(target=loop, args=(w,), name=w.__name__)
               for w in (page_compile, job_thread, session_thread, pytest_rewrite)]
    with switches_inside_conversions():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return errors, counts


needs_311 = pytest.mark.skipif(not ast_lock.AFFECTED, reason="only CPython 3.11 shares the counter between threads")


@needs_311
def test_the_stress_reproduces_the_race_without_the_lock(monkeypatch):
    """The test below fails for the right reason: without the lock the same threads meet the SystemError."""
    monkeypatch.setattr(builtins, "compile", ast_lock._ORIGINAL)
    errors, counts = stress(20.0, stop_at_first=True)
    assert errors and "AST constructor recursion depth mismatch" in errors[0], counts


@needs_311
def test_with_the_lock_the_threads_never_meet_the_race():
    assert ast_lock.installed()  # conftest installs it, as app/main.py does in the server
    errors, counts = stress(3.0)
    assert not errors, errors[:3]
    assert all(n > 10 for n in counts.values()), counts  # every thread converted, many times


def test_the_lock_keeps_the_callers_future_features_and_refuses_nothing_new():
    """The wrapper is compile() itself for its callers: the caller's __future__ flags are inherited as compile()
    inherits them, errors are compile()'s own."""
    assert ast_lock.install() is ast_lock.AFFECTED  # idempotent: conftest installed it already
    code = compile("def f(x: undefined_name) -> None: pass\nf.__annotations__", "<test>", "exec")
    namespace: dict = {}
    exec(code, namespace)  # this module has `from __future__ import annotations`: the annotation stays a string
    assert namespace["f"].__annotations__ == {"x": "undefined_name", "return": "None"}
    with pytest.raises(SyntaxError):
        compile("def (", "<test>", "exec")
    tree = compile("1 + 1", "<test>", "eval", ast.PyCF_ONLY_AST)
    assert eval(compile(tree, "<test>", "eval")) == 2


def test_the_app_compiles_its_pages_from_their_text():
    """Streamlit's magic parses a page into a tree and compiles the tree; the project turns it off (its pages call
    st.* for everything they show), so a page's compilation builds no tree at all."""
    from streamlit import config

    assert config.get_option("runner.magicEnabled") is False
