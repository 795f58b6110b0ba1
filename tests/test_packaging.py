"""The project installs as Python users expect: pyproject.toml names the package, its `wanda-engine` command and
its dependencies (every third-party module the engine imports is declared, with requirements.txt's tested pin as
its lower bound); installed editable into a fresh environment, the command a bundle's REPRODUCE.md writes runs, as
written, from the unzipped bundle in a folder outside the repository and gives the run's masks again."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from test_bundle import fake_render, make_store
from test_reproduce import _fresh_cache
from wanda_engine.outputs import bundle as bundles
from wanda_engine.store.run_store import load_run

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins() -> dict[str, str]:
    """requirements.txt's pins: distribution name (normalised) -> version."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split(" #")[0].strip()  # pip's comments
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_normal(name.split("[")[0])] = version.strip()
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, str]:
    """pyproject's dependencies and extras: distribution name (normalised) -> lower bound."""
    project = PYPROJECT["project"]
    specs = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    out = {}
    for spec in specs:
        name, bound = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?>=(\S+)", spec).groups()
        out[_normal(name)] = bound
    return out


def _engine_imports() -> set[str]:
    """The top-level third-party modules wanda_engine imports anywhere (at the top or inside a function)."""
    found = set()
    for path in (REPO / "wanda_engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "wanda_engine"}


def test_pyproject_declares_the_package_its_command_and_every_dependency_at_the_tested_pins():
    project = PYPROJECT["project"]
    assert project["name"] == "wanda-engine" and project["scripts"]["wanda-engine"] == "wanda_engine.cli.main:main"
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "wanda_engine.__version__"}
    declared, pins = _declared(), _pins()
    assert all(pins[name] == bound for name, bound in declared.items()), \
        {n: (b, pins.get(n)) for n, b in declared.items() if pins.get(n) != b}
    providers = importlib.metadata.packages_distributions()
    for module in _engine_imports():
        assert {_normal(d) for d in providers.get(module, [module])} & set(declared), f"{module} is not declared"


def _installed_venv(root: Path) -> Path:
    """A new virtual environment with the project installed editable, as scripts/setup.sh does; its
    dependencies come from this interpreter's site-packages (a .pth line), so nothing is downloaded."""
    venv = root / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; "
                                   "print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True,
                                  text=True).stdout.strip())
    (purelib / "tested-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                           "--no-deps", "--no-build-isolation", "--no-index", "-e", str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return venv


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir) -> Path:
    return make_store(tmp_path_factory, tiny_model_dir)


@pytest.mark.slow
def test_the_cards_command_runs_from_an_unzipped_bundle_outside_the_repository(store, tmp_path):
    venv = _installed_venv(tmp_path)
    run = load_run(store / "wanda")
    folder = tmp_path / "downloads" / "wanda-bundle"
    assert not folder.resolve().is_relative_to(REPO)
    with zipfile.ZipFile(bundles.build_bundle([run], render=fake_render, formats=("svg",)).write(
            tmp_path / "wanda-bundle.zip")) as z:
        z.extractall(folder)
    card = (folder / "REPRODUCE.md").read_text()
    commands = [c for c in re.findall(r"```sh\n(.*?)\n```", card, re.S) if " prune " in c]
    assert len(commands) == 1 and commands[0].startswith("python -m wanda_engine prune")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", WANDA_CACHE=str(_fresh_cache(tmp_path)),
               WANDA_RUNS=str(tmp_path / "runs"), VIRTUAL_ENV=str(venv))  # as `source .venv/bin/activate` does
    where = subprocess.run(["python", "-c", "import wanda_engine; print(wanda_engine.__file__)"], cwd=folder,
                           env=env, capture_output=True, text=True, timeout=120)
    assert Path(where.stdout.strip()).is_relative_to(REPO / "wanda_engine"), where.stderr[-2000:]
    done = subprocess.run(["bash", "-c", commands[0]], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)  # the card's line, pasted into a shell
    assert done.returncode == 0, done.stderr[-2000:]
    again = json.loads((folder / "reproduced" / run.name / "run.json").read_text())
    assert again["mask_sha256"] == run.record.mask_sha256 and again["ppl"] == run.record.ppl
    console = subprocess.run(["wanda-engine", "export", "--help"], cwd=folder, env=env, capture_output=True,
                             text=True, timeout=120)
    assert console.returncode == 0 and "--preset" in console.stdout
