"""The project's code rules, checked on the source: no import circle (engine, app, pages), the engine's packages
importing only the layers below them, short functions and modules, no undefined name or unused import (pyflakes)."""
from __future__ import annotations

import ast
import io
from pathlib import Path

from pyflakes.api import checkPath
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "wanda_engine"
PACKAGE = "wanda_engine"
# The engine's packages from the bottom up: a module may import its own package and those listed before it
# (each package's docstring says the same). `__main__` is the module `python -m wanda_engine` runs.
LAYERS = ("core", "methods", "config", "store", "inputs", "pruning", "evaluation", "runner", "sweep", "repair",
          "outputs", "cli", "__main__")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, modules: set[str], prefixes: tuple[str, ...] = (PACKAGE,)) -> set[str]:
    """Every project module (under `prefixes`) `path` imports, at its top or inside a function (relative imports
    resolved)."""
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
            while target and target not in modules:  # `import wanda_engine.outputs.figures.run` -> the deepest module
                target = target.rpartition(".")[0]
            if target.startswith(prefixes) and target != name:
                found.add(target)
    return found


def import_graph(folders: tuple[str, ...] = (PACKAGE,)) -> dict[str, set[str]]:
    """Module -> the project modules it imports, over the packages in `folders`."""
    paths = sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imported_modules(p, modules, folders) - set(folders) for p in paths}


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
    assert "wanda_engine.pruning.pipeline" in graph and "wanda_engine.core.errors" in graph["wanda_engine.pruning.pipeline"]
    assert all(not deps or all(d.startswith(PACKAGE) for d in deps) for deps in graph.values())


def test_no_import_circle_inside_the_engine():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_import_circle_in_the_app_and_its_pages():
    cycle = find_cycle(import_graph(("app", "pages", PACKAGE)))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_every_engine_package_is_in_the_layer_list():
    assert {_layer(m) for m in import_graph() if m != PACKAGE} == set(LAYERS)


def test_engine_packages_import_only_the_layers_below_them():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [f"{m} -> {d}" for m, deps in import_graph().items() if m != PACKAGE
              for d in deps if rank[_layer(d)] > rank[_layer(m)]]
    assert not upward, "imports that point up the layers: " + "; ".join(sorted(upward))


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
