"""One lock for the interpreter's syntax-tree conversions, on CPython 3.11 only.

CPython 3.11 counts the recursion depth of turning a syntax tree into Python objects (`ast.parse`, which numpy
calls through `ast.literal_eval` to read every .npy header) or back (`compile` of a tree: Streamlit's magic,
pytest's assertion rewriting) in ONE counter per interpreter, and raises SystemError "AST constructor recursion
depth mismatch" when the counter ends elsewhere than it started (python/cpython#106905 and its kin; 3.12 and 3.13
keep the depth per call). Two threads converting at once interleave whenever a garbage collection in the middle
runs Python code and the GIL changes hands. The threads that convert here: every session's script thread reading
a run's arrays.npz, the tests' in-process job thread reading a run's calibration.npy, a script thread compiling a
page, pytest importing a test module mid-test.

`install` wraps builtins.compile so that the calls that build or read a tree take turns on one lock: those with
PyCF_ONLY_AST (ast.parse) and those given a tree; the rest (imports, source text) pass straight through. The app
installs it before its first page (app/main.py), the tests in conftest.py; tests/test_ast_race.py reproduces the
error without it. Moving to Python 3.12 would fix it at the source, but this project's torch 2.13 CPU wheel is
on disk for 3.11 only.
"""
import __future__
import ast
import builtins
import sys
import threading
from typing import Any

# Deliberately no `from __future__ import ...` here: compile() without dont_inherit inherits the future flags of
# the frame that calls it, which `_compile` passes on from ITS caller (see below).

AFFECTED = (3, 11) <= sys.version_info[:2] < (3, 12)
_LOCK = threading.RLock()  # re-entrant: a collection inside a conversion may run code that compiles
_ORIGINAL = getattr(builtins.compile, "original", builtins.compile)  # the builtin, even if this module is re-imported
# the flags compile() inherits from its caller (CPython's PyCF_MASK): the features that still change the compiler
_FUTURE_FLAGS = sum(getattr(__future__, name).compiler_flag for name in (
    "division", "absolute_import", "with_statement", "print_function", "unicode_literals", "barry_as_FLUFL",
    "generator_stop", "annotations"))


def _compile(source: Any, filename: Any, mode: str, flags: int = 0, dont_inherit: bool = False, optimize: int = -1,
             *, _feature_version: int = -1) -> Any:
    """builtins.compile, holding the lock while a tree is built or read."""
    if not dont_inherit:  # as compile() itself would: the caller's future features, not this function's
        flags |= sys._getframe(1).f_code.co_flags & _FUTURE_FLAGS
        dont_inherit = True
    if flags & ast.PyCF_ONLY_AST or isinstance(source, ast.AST):
        with _LOCK:
            return _ORIGINAL(source, filename, mode, flags, dont_inherit, optimize, _feature_version=_feature_version)
    return _ORIGINAL(source, filename, mode, flags, dont_inherit, optimize, _feature_version=_feature_version)


_compile.original = _ORIGINAL  # type: ignore[attr-defined]


def install() -> bool:
    """Make this process's tree conversions take turns (idempotent); False on a Python that does not need it."""
    if not AFFECTED:
        return False
    if not installed():
        builtins.compile = _compile
    return True


def installed() -> bool:
    """Whether builtins.compile takes the lock (this module's wrapper, or the one an earlier import installed)."""
    return getattr(builtins.compile, "original", None) is _ORIGINAL
