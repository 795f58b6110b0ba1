"""Zero-shot accuracy with EleutherAI's lm-eval harness, the harness the Wanda paper used.

The model is evaluated in memory (lm-eval's HFLM wrapper takes a model object). Which tasks, where
their data comes from and whether they can run offline: `tasks`.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from typing import Any

import torch

from ..config import ZeroShotConfig
from ..core.errors import DataError, EngineError
from ..inputs.hub import hub_offline
from ..inputs.offload import model_on_device
from .tasks import METRICS, TaskPlan, check_tasks, harness_version, load_task_yaml, require_lm_eval, tasks_offline


def _metric(values: dict[str, Any], name: str) -> float | None:
    """lm-eval reports 'acc,none' (metric,filter); stderr 'N/A' when it could not be computed."""
    for key, v in values.items():
        if key.split(",")[0] == name and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def evaluate_zeroshot(model: Any, tokenizer: Any, cfg: ZeroShotConfig, device: torch.device | str,
                      plans: list[TaskPlan] | None = None) -> dict[str, Any]:
    """Run `cfg`'s tasks on `model` (moved to `device` for the evaluation, then back).

    Returns {'harness', 'tasks', 'limit', 'num_fewshot', 'seconds', 'results': {task: {acc, acc_stderr,
    acc_norm, acc_norm_stderr, n, version, dataset}}}; acc_norm only where the task reports it.
    """
    t0 = time.perf_counter()
    require_lm_eval()
    plans = plans if plans is not None else check_tasks(cfg)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    specs: list[Any] = []
    by_name = [p for p in plans if p.yaml_path is None]
    for p in plans:
        if p.yaml_path is None:
            specs.append(p.name)
        else:
            # the full config (with its !function hooks) inline: no need for lm-eval's 12 s index
            specs.append({**load_task_yaml(p.yaml_path, resolve_functions=True), **p.overrides})
    manager = TaskManager(include_path=cfg.task_dir, include_defaults=True) if by_name else \
        TaskManager(include_defaults=False)

    was_training = model.training
    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    # its INFO lines and its warnings about an in-memory model and default aggregations would drown the progress
    quiet.setLevel(logging.ERROR)
    try:
        with model_on_device(model, device):  # a dispatched model stays where accelerate put it
            # a copy: HFLM may give the tokenizer a pad token, and the caller's tokenizer is shared
            lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=cfg.batch_size)
            offline = any(not p.local for p in plans) and tasks_offline()
            with torch.inference_mode(), (hub_offline() if offline else contextlib.nullcontext()):
                out = simple_evaluate(model=lm, tasks=specs, task_manager=manager, num_fewshot=cfg.num_fewshot,
                                      limit=cfg.limit, batch_size=cfg.batch_size, log_samples=False)
    except (EngineError, torch.OutOfMemoryError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - the harness raises anything; say which step failed
        raise DataError(f"zero-shot evaluation with lm-eval failed ({type(e).__name__}: {e})") from e
    finally:
        quiet.setLevel(level)
        model.train(was_training)
    results: dict[str, Any] = {}
    versions = out.get("versions") or {}
    n_samples = out.get("n-samples") or {}
    datasets = {p.name: p.dataset for p in plans}
    for name, values in (out.get("results") or {}).items():
        row: dict[str, Any] = {}
        for m in METRICS:
            v = _metric(values, m)
            if v is not None:
                row[m] = v
                row[f"{m}_stderr"] = _metric(values, f"{m}_stderr")
        if not row:
            continue  # a group's aggregate line without acc, or a task with other metrics
        n = (n_samples.get(name) or {}).get("effective")
        row.update({"n": int(n) if n is not None else None, "version": versions.get(name),
                    "dataset": datasets.get(name, "")})
        results[name] = row
    return {"harness": harness_version(), "tasks": list(cfg.tasks), "limit": cfg.limit,
            "num_fewshot": cfg.num_fewshot, "seconds": round(time.perf_counter() - t0, 3), "results": results}
