"""One notation for an input channel's activation norm wherever a reader sees it (issue 19, item 9): ‖Xⱼ‖₂, and
‖Xⱼ‖₂² squared, in every figure, page text and sentence of the argument — never ‖X_j‖, ‖X‖₂ or ‖Xⱼ‖ without its
₂; and numbers that can be small shown with significant digits, never as 0.0000."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from wanda_engine.outputs.figures.ticks import significant

ROOT = Path(__file__).resolve().parents[1]
# what a reader sees: the pages, the app's helpers, the outputs (figures, the argument, tables), the methods' names
READ = [*ROOT.glob("pages/*.py"), *ROOT.glob("app/*.py"), *ROOT.glob("wanda_engine/outputs/**/*.py"),
        ROOT / "wanda_engine" / "methods" / "table.py"]
NORM = re.compile(r"‖X[^‖]*‖(₂)?")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def user_strings(path: Path) -> list[str]:
    """The string literals of a module (f-strings' literal parts too), docstrings left out: code talks to coders."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]


def test_the_activation_norm_is_written_one_way():
    wrong = []
    for path in READ:
        for text in user_strings(path):
            wrong += [f"{path.relative_to(ROOT)}: {m.group(0)!r} in {text[:60]!r}" for m in NORM.finditer(text)
                      if m.group(0) != "‖Xⱼ‖₂"]
    assert not wrong, "\n".join(wrong)


def test_the_scan_sees_what_it_must():
    strings = [s for path in READ for s in user_strings(path)]
    assert any("‖Xⱼ‖₂" in s for s in strings)  # the figures' and pages' texts are read
    assert not any(s.startswith("Records → plotly figures") for s in strings)  # docstrings are not


@pytest.mark.parametrize("value, text", [(0.0712, "0.0712"), (0.000123, "0.000123"), (3.2e-7, "3.2×10⁻⁷"),
                                         (541.3, "541"), (0.5, "0.500"), (1.234e-5, "1.23×10⁻⁵")])
def test_small_numbers_keep_their_significant_digits(value, text):
    assert significant(value) == text
