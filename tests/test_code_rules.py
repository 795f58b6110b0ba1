"""The project's code rules, checked on the source: no import circle, short functions and modules, no
undefined name or unused import (pyflakes)."""
from __future__ import annotations

import ast
import io
from pathlib import Path

from pyflakes.api import checkPath
from pyflakes.reporter import Reporter

ENGINE = Path(__file__).resolve().parents[1] / "wanda_engine"
PACKAGE = "wanda_engine"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """Every wanda_engine module `path` imports, at its top or inside a function (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from . import x` and `from .pkg import mod` name modules; `from .mod import f` names mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import wanda_engine.figures.run` -> the deepest module
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(ENGINE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imported_modules(p, modules) - {PACKAGE} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}  # 'open' while on the current path, 'done' after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]  # the open nodes are exactly the current path
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "wanda_engine.pipeline" in graph and "wanda_engine.errors" in graph["wanda_engine.pipeline"]
    assert all(not deps or all(d.startswith(PACKAGE) for d in deps) for deps in graph.values())


def test_no_import_circle_inside_the_engine():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.relative_to(ENGINE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_engine_function_over_80_lines():
    offenders = [line for path in sorted(ENGINE.rglob("*.py")) for line in _long_functions(path)]
    assert not offenders, "functions over 80 lines: " + "; ".join(offenders)


def test_no_engine_module_over_500_lines():
    offenders = [f"{p.relative_to(ENGINE.parent)} ({n} lines)" for p in sorted(ENGINE.rglob("*.py"))
                 if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not offenders, "modules over 500 lines: " + "; ".join(offenders)


def test_no_undefined_names_or_unused_imports():
    """pyflakes over the engine, the app and the pages: a misspelt name fails here, not on a user's path."""
    out = io.StringIO()
    files = [p for folder in ("wanda_engine", "app", "pages") for p in sorted((ENGINE.parent / folder).rglob("*.py"))]
    for path in files:
        checkPath(str(path), Reporter(out, out))
    assert not out.getvalue(), out.getvalue()
