"""The zero-shot tasks of EleutherAI's lm-eval harness: their names, local task folders, where their
data comes from, and the offline check; torch-free, so the app's server can list them cheaply.
`zeroshot.evaluate_zeroshot` runs them. lm-eval is an optional dependency, imported only when tasks
are checked or run.

Offline, the paper's tasks cannot download their data from the Hugging Face hub: `check_tasks`
says so within seconds. Local tasks work anywhere: a folder (`task_dir`) of lm-eval YAML task
configs whose `dataset_path: json` points at local JSON/JSONL files, e.g.

    task: my_qa
    dataset_path: json
    dataset_kwargs: {data_files: {validation: my_qa.jsonl}}   # relative to the YAML file (or absolute)
    validation_split: validation
    output_type: multiple_choice
    doc_to_text: "Question: {{question}}\\nAnswer:"
    doc_to_choice: choices
    doc_to_target: label
    metric_list: [{metric: acc}, {metric: acc_norm}]
"""
from __future__ import annotations

import difflib
import functools
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

from ..config import PAPER_TASKS, ZeroShotConfig
from ..core.errors import ConfigError, DataError
from ..inputs.hub import hub_offline, hub_reachable
from ..core.paths import cache_dir
from ..store.run_store import atomic_write_json
from .lastword import LASTWORD_TASK, ensure_task

LM_EVAL_PIN = "lm-eval[hf]==0.4.13"
# The project's own task, built from text it already has (evaluation/lastword.py): works offline on the default.
PROJECT_TASKS = (LASTWORD_TASK,)
METRICS = ("acc", "acc_norm")
# `datasets` builders that read local files: a task using one of these needs no hub.
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas")
_OFFLINE_MEMO_S = 60.0


def parse_tasks(text: str) -> tuple[str, ...]:
    """'paper' -> the paper's tasks; 'boolq, rte' -> ('boolq', 'rte')."""
    names = [t.strip() for t in re.split(r"[,\s]+", text or "") if t.strip()]
    out: list[str] = []
    for n in names:
        for t in (PAPER_TASKS if n == "paper" else (n,)):
            if t not in out:
                out.append(t)
    if not out:
        raise ConfigError("zero-shot tasks: name at least one lm-eval task, or 'paper' for the paper's seven")
    return tuple(out)


# ---------------------------------------------------------------- the harness

def require_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as e:
        raise DataError(f"zero-shot evaluation needs EleutherAI's lm-eval harness, which is not installed "
                        f"({e}); install it with: pip install '{LM_EVAL_PIN}'") from e
    return lm_eval


def harness_version() -> str | None:
    """The installed lm-eval version, or None if it is not installed."""
    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------- finding tasks

@dataclass(frozen=True)
class TaskPlan:
    """One task as it will be run: where its config and data come from."""

    name: str
    yaml_path: str | None  # None: a group, tag or Python task, loaded by name through the full index
    local: bool  # data from local files (needs no hub)
    dataset: str  # 'hub:<id>', 'local:<first data file>', or what else it is
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)
    files: tuple[str, ...] = ()  # its local data files


_TASK_LINE = re.compile(r"^['\"]?task['\"]?:[ \t]*['\"]?([^\s'\"#\[{]+)", re.M)
_ANY_NAME = re.compile(r"^[ \t]*(?:- )?['\"]?(?:task|group|tag)['\"]?:[ \t]*['\"]?([^\s'\"#\[{]+)", re.M)


def _yaml_texts(root: Path, max_files: int | None = None, every_file: bool = False) -> Iterator[tuple[str, str]]:
    """(path, text) of the YAML files under `root`; `every_file`: also included templates without a .yaml suffix."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            if f.endswith((".yaml", ".yml")) or (every_file and not f.endswith((".pyc", ".md"))):
                seen += 1
                if max_files is not None and seen > max_files:
                    return
                p = os.path.join(dirpath, f)
                try:
                    with open(p, "rb") as fh:
                        text = fh.read(1 << 20).decode("utf-8", "replace")
                except OSError:
                    continue
                yield p, text


def local_task_names(task_dir: str | None) -> list[str]:
    """The task names a folder of lm-eval YAMLs defines (a quick scan, for choosing; `check_tasks` decides)."""
    if not task_dir or not Path(task_dir).expanduser().is_dir():
        return []
    return sorted({n for _, text in _yaml_texts(Path(task_dir).expanduser(), 2000) for n in _TASK_LINE.findall(text)})


def _builtin_root() -> Path:
    return Path(require_lm_eval().__file__).parent / "tasks"


@functools.lru_cache(maxsize=1)
def _builtin_fast() -> tuple[dict[str, str], frozenset[str]]:
    """(name -> YAML path of each built-in task named on its file's top-level `task:` line, every task, group
    and tag name found on any line).

    A text scan of lm-eval's ~14k YAML files takes ~0.4 s; its own index parses them all (~12 s).
    """
    tasks: dict[str, str] = {}
    names: set[str] = set()
    for path, text in _yaml_texts(_builtin_root()):
        for name in _TASK_LINE.findall(text):
            tasks.setdefault(name, path)
        names.update(_ANY_NAME.findall(text))
    return tasks, frozenset(names)


def _mentioned(name: str) -> bool:
    """Whether any built-in task file contains `name` at all (a name nowhere in them is surely unknown)."""
    return any(name in text for _, text in _yaml_texts(_builtin_root(), every_file=True))


_full_lock = threading.Lock()
_full_index: dict[str, tuple[str, str | None]] | None = None


def _builtin_full() -> dict[str, tuple[str, str | None]]:
    """name -> (kind, YAML path) from lm-eval's own index of its tasks, groups and tags.

    Slow to build (~12 s), so it is cached on disk per lm-eval version; only needed for names the
    fast scan does not find (generated task variants, groups, tags, typos).
    """
    global _full_index
    with _full_lock:
        if _full_index is not None:
            return _full_index
        path = cache_dir() / f"lm_eval_tasks-{harness_version()}.json"
        try:
            _full_index = {k: (v[0], v[1]) for k, v in json.loads(path.read_text()).items()}
            return _full_index
        except (OSError, ValueError, TypeError, IndexError):
            pass
        from lm_eval.tasks import TaskManager

        index = TaskManager().task_index
        _full_index = {k: (e.kind.name, str(e.yaml_path) if e.yaml_path else None) for k, e in index.items()}
        try:
            atomic_write_json(path, _full_index)
        except OSError:
            pass  # a read-only cache only costs rebuilding next time
        return _full_index


def load_task_yaml(path: str | Path, resolve_functions: bool = False) -> dict[str, Any]:
    """A task's YAML as the harness reads it (`include:` merged, `!function` tags kept or resolved).

    lm-eval 0.4.13 (pinned) has no public loader for one task's config: its TaskManager only builds whole Task
    objects, which fetch their datasets (offline: a failure, not a plan). So this is the one private import of
    the harness, here and nowhere else: the loader its own TaskManager uses."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=resolve_functions)


def _local_index(task_dir: str) -> dict[str, Any]:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=task_dir, include_defaults=False).task_index


def _resolve_data_files(files: Any, base: Path) -> tuple[Any, list[str]]:
    """Relative data file paths resolved against `base` where they exist there; and the files that exist nowhere."""
    missing: list[str] = []

    def one(f: Any) -> Any:
        if not isinstance(f, str) or "://" in f or any(c in f for c in "*?["):
            return f
        p = Path(f).expanduser()
        if p.is_absolute() or p.exists():
            if not p.exists():
                missing.append(f)
            return str(p)
        if (base / p).exists():
            return str((base / p).resolve())
        missing.append(f)
        return f

    if isinstance(files, dict):
        out = {k: ([one(x) for x in v] if isinstance(v, list) else one(v)) for k, v in files.items()}
    elif isinstance(files, list):
        out = [one(x) for x in files]
    else:
        out = one(files)
    return out, missing


def _flatten(files: Any) -> list[str]:
    if isinstance(files, dict):
        return [f for v in files.values() for f in _flatten(v)]
    if isinstance(files, list):
        return [f for v in files for f in _flatten(v)]
    return [str(files)]


def _plan_yaml(name: str, yaml_path: str) -> TaskPlan:
    """Where a YAML-defined task's data comes from; local data files must exist."""
    cfg = load_task_yaml(yaml_path)
    ds = cfg.get("dataset_path")
    base = Path(yaml_path).parent
    if cfg.get("custom_dataset") is not None:
        return TaskPlan(name, yaml_path, True, "custom dataset function")
    if isinstance(ds, str) and ds in LOCAL_BUILDERS:
        kwargs = dict(cfg.get("dataset_kwargs") or {})
        if "data_files" not in kwargs and "data_dir" not in kwargs:
            raise ConfigError(f"zero-shot task {name!r} ({yaml_path}) reads '{ds}' files but names none in "
                              "dataset_kwargs.data_files")
        overrides: dict[str, Any] = {}
        if "data_files" in kwargs:
            files, missing = _resolve_data_files(kwargs["data_files"], base)
            if missing:
                raise DataError(f"zero-shot task {name!r}: data file {missing[0]!r} does not exist "
                                f"(relative paths are looked up next to {Path(yaml_path).name} and in the working folder)")
            if files != kwargs["data_files"]:
                overrides["dataset_kwargs"] = {**kwargs, "data_files": files}
        found = _flatten(files) if "data_files" in kwargs else [str(kwargs["data_dir"])]
        return TaskPlan(name, yaml_path, True, f"local:{found[0] if found else '?'}", overrides, tuple(found))
    if isinstance(ds, str) and (Path(ds).expanduser().is_absolute() and Path(ds).expanduser().exists()):
        return TaskPlan(name, yaml_path, True, f"local:{ds}")
    if isinstance(ds, str) and (base / ds).exists():
        return TaskPlan(name, yaml_path, True, f"local:{(base / ds).resolve()}",
                        {"dataset_path": str((base / ds).resolve())})
    return TaskPlan(name, yaml_path, False, f"hub:{ds}")


_offline_memo: tuple[float, bool] | None = None


def tasks_offline() -> bool:
    """True when the hub is off limits: offline mode is set, or it does not answer (probed at most once a minute)."""
    global _offline_memo
    truthy = ("1", "true", "yes", "on")
    if any(os.environ.get(k, "").lower() in truthy for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    now = time.monotonic()
    if _offline_memo is not None and now - _offline_memo[0] < _OFFLINE_MEMO_S:
        return _offline_memo[1]
    _offline_memo = (now, not hub_reachable())
    return _offline_memo[1]


def _in_hub_cache(yaml_path: str) -> bool:
    """Whether a hub task's dataset loads from the local `datasets` cache alone."""
    import datasets  # here, not at the top: 1.3 s to import, and only hub tasks need it

    cfg = load_task_yaml(yaml_path)
    kwargs = {k: v for k, v in (cfg.get("dataset_kwargs") or {}).items() if k != "trust_remote_code"}
    try:
        with hub_offline():
            datasets.load_dataset(cfg["dataset_path"], cfg.get("dataset_name"), **kwargs)
        return True
    except Exception:  # noqa: BLE001 - any failure means: not usable offline
        return False


def check_tasks(cfg: ZeroShotConfig) -> list[TaskPlan]:
    """Validate the tasks before any work: names exist, local data files exist, hub data is reachable.

    Raises ConfigError (unknown task, bad folder) or DataError (data unavailable, lm-eval missing).
    """
    require_lm_eval()
    local: dict[str, Any] = {}
    if cfg.task_dir is not None:
        folder = Path(cfg.task_dir).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"zero-shot task_dir {cfg.task_dir!r} is not a folder")
        local = _local_index(str(folder.resolve()))
        if not local:
            raise ConfigError(f"zero-shot task_dir {cfg.task_dir!r} holds no lm-eval task YAML files")
    plans: list[TaskPlan] = []
    for name in cfg.tasks:
        if name in PROJECT_TASKS and name not in local:  # a folder's own task of that name would come first
            plans.append(_plan_yaml(name, str(ensure_task())))  # written once, from the novel, under the cache
            continue
        if name in local:
            entry = local[name]
            if entry.kind.name == "TASK" and entry.yaml_path:
                plans.append(_plan_yaml(name, str(entry.yaml_path)))
            else:
                plans.append(TaskPlan(name, None, True, f"lm-eval {entry.kind.name.lower()} in {cfg.task_dir}"))
            continue
        fast, names = _builtin_fast()
        if name in fast and load_task_yaml(fast[name]).get("task") == name:
            plans.append(_plan_yaml(name, fast[name]))
            continue
        # lm-eval's own index is slow to build: consult it only for names its files mention somewhere
        full = _builtin_full() if name in names or _mentioned(name) else {}
        if name not in full:
            known = sorted(names | set(full) | set(local))
            close = difflib.get_close_matches(name, known, n=6, cutoff=0.6)
            hint = f"; close names: {', '.join(close)}" if close else f"; the paper's tasks are {', '.join(PAPER_TASKS)}"
            where = f" nor in {cfg.task_dir}" if cfg.task_dir else " (pass task_dir for a folder of local task YAMLs)"
            raise ConfigError(f"zero-shot task {name!r} is not an lm-eval task{where}{hint}")
        kind, path = full[name]
        if kind == "TASK" and path:
            plans.append(_plan_yaml(name, path))
        else:
            plans.append(TaskPlan(name, None, False, f"lm-eval {kind.lower()}"))
    hub = [p for p in plans if not p.local]
    if hub and tasks_offline():
        for p in hub:
            if p.yaml_path is None or not _in_hub_cache(p.yaml_path):
                raise DataError(
                    f"zero-shot task {p.name!r} needs its data ({p.dataset.removeprefix('hub:')}) downloaded from the "
                    "Hugging Face hub, which is not reachable from here; for offline use, put lm-eval task YAMLs "
                    "whose dataset_path is 'json' with local JSON/JSONL data_files in a folder and pass it as "
                    "task_dir (--task-dir)")
    return plans


def plans_stamp(plans: list[TaskPlan]) -> str:
    """Sizes and times of local task configs and data: editing them invalidates cached dense results."""
    paths = []
    for p in plans:
        if p.local and p.yaml_path:
            paths += [Path(p.yaml_path)] + [Path(f) for f in p.files]
    parts = []
    for path in paths:
        try:
            st = path.stat()
            parts.append(f"{path}:{st.st_size}:{int(st.st_mtime)}")
        except OSError:
            parts.append(f"{path}:?")
    return ",".join(parts)
