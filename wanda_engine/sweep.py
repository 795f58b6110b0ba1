"""Sweeps: a grid of runs (methods × sparsities × patterns, optionally × calibration sizes × layerwise
allocation) on one loaded model, each recorded as an ordinary run, plus a manifest naming them.

The CLI runs a sweep with `run_sweep`; the app plans it with `plan_sweep`, writes the manifest with
`write_manifest` and queues the planned requests on its job runner. Either way the manifest
`<run store>/.sweeps/<name>.json` lists the planned points and their run names, and `load_sweep`
reads each point's status back from its run directory. (A dot-folder, so the run store never lists
it as a run.)
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import LAYERWISE, METHODS, EvalConfig, PruneConfig, parse_pattern
from .errors import ConfigError, EngineError, PruneCancelled
from .events import EventCallback, StageStarted, ignore_events
from .runs import Run, RunStore, atomic_write_json, check_run_name, load_run

SWEEP_DIR = ".sweeps"
MAX_POINTS = 64  # the app's job queue holds 64 runs
MAX_NAME = 40  # leaves room in a run name (100 characters) for the point's own part
DTYPES = ("float32", "fp32", "float16", "fp16", "bfloat16", "bf16")


def parse_method(entry: str) -> tuple[str, bool]:
    """'wanda' -> ('wanda', False); 'wanda-variant' -> ('wanda', True). Raises ConfigError otherwise."""
    entry = str(entry).strip()
    name, variant = (entry[: -len("-variant")], True) if entry.endswith("-variant") else (entry, False)
    if name not in METHODS:
        raise ConfigError(f"sweep methods: {entry!r} is not one of {', '.join(METHODS)} (or wanda-variant)")
    if variant and name != "wanda":
        raise ConfigError(f"sweep methods: {entry!r}: only wanda has a variant (adaptive alpha)")
    return name, variant


def _axis(name: str, values: Any, check: Callable[[Any], Any]) -> tuple:
    """A non-empty tuple of checked values, duplicates dropped, order kept."""
    if isinstance(values, (str, int, float)) or values is None:
        values = [values]
    try:
        values = list(values)
    except TypeError:
        raise ConfigError(f"sweep {name} must be a list of values, got {values!r}") from None
    if not values:
        raise ConfigError(f"sweep {name}: give at least one value (an empty axis plans no runs)")
    out: list[Any] = []
    for v in values:
        v = check(v)
        if v not in out:
            out.append(v)
    return tuple(out)


def _sparsity(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ConfigError(f"sweep sparsities: each must be a number in [0, 1), got {v!r}")
    return round(float(v), 6)


def _pattern(v: Any) -> str:
    v = str(v).strip().replace(" ", "")
    try:
        parse_pattern(v)
    except ConfigError as e:
        raise ConfigError(f"sweep patterns: {e}") from None
    return v


def _nsamples(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"sweep nsamples: each must be a positive integer, got {v!r}")
    return v


def _layerwise(v: Any) -> str:
    if v not in LAYERWISE:
        raise ConfigError(f"sweep layerwise: each must be one of {', '.join(LAYERWISE)}, got {v!r}")
    return v


def _method(v: Any) -> str:
    parse_method(v)
    return str(v).strip()


def parse_axis(text: str, field: str, cast: Callable[[str], Any] = str) -> list:
    """'0.5, 0.6,70%' -> values for one axis, from a comma-separated string ('%' divides by 100)."""
    out = []
    for part in str(text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(cast(float(part[:-1]) / 100) if part.endswith("%") and cast is not str else cast(part))
        except ValueError:
            raise ConfigError(f"sweep {field}: {part!r} is not a valid value") from None
    return out


@dataclass(frozen=True)
class SweepConfig:
    """A grid of runs. Every axis is a list; `base` supplies every other PruneConfig field.

    `nsamples=None` keeps base.nsamples (no calibration-size axis). Lists are stored as tuples.
    """

    methods: tuple[str, ...] = ("magnitude", "wanda")
    sparsities: tuple[float, ...] = (0.5,)
    patterns: tuple[str, ...] = ("unstructured",)
    nsamples: tuple[int, ...] | None = None
    layerwise: tuple[str, ...] = ("uniform",)
    base: PruneConfig = field(default_factory=PruneConfig)
    eval: EvalConfig | None = field(default_factory=EvalConfig)
    model: str = "default"
    dtype: str = "float32"
    name: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: normalise once, here
        put("methods", _axis("methods", self.methods, _method))
        put("sparsities", tuple(sorted(_axis("sparsities", self.sparsities, _sparsity))))
        put("patterns", _axis("patterns", self.patterns, _pattern))
        if self.nsamples is not None:
            put("nsamples", _axis("nsamples", self.nsamples, _nsamples))
        put("layerwise", _axis("layerwise", self.layerwise, _layerwise))
        if not isinstance(self.base, PruneConfig):
            raise ConfigError(f"sweep base must be a PruneConfig, got {type(self.base).__name__}")
        if self.eval is not None and not isinstance(self.eval, EvalConfig):
            raise ConfigError(f"sweep eval must be an EvalConfig or None, got {type(self.eval).__name__}")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("sweep model must be 'default', a Hugging Face id, a folder or a .gguf file")
        if self.dtype not in DTYPES:
            raise ConfigError(f"sweep dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.name is not None:
            check_run_name(self.name)
            if len(self.name) > MAX_NAME:
                raise ConfigError(f"sweep name {self.name!r} is longer than {MAX_NAME} characters")

    @property
    def nsamples_axis(self) -> tuple[int, ...]:
        return self.nsamples if self.nsamples is not None else (self.base.nsamples,)

    def to_dict(self) -> dict[str, Any]:
        return {"methods": list(self.methods), "sparsities": list(self.sparsities), "patterns": list(self.patterns),
                "nsamples": list(self.nsamples) if self.nsamples is not None else None,
                "layerwise": list(self.layerwise), "base": self.base.to_dict(),
                "eval": self.eval.to_dict() if self.eval else None, "model": self.model, "dtype": self.dtype,
                "name": self.name, "trust_remote_code": self.trust_remote_code}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepConfig":
        ev = d.get("eval")
        return cls(methods=d["methods"], sparsities=d["sparsities"], patterns=d["patterns"], nsamples=d.get("nsamples"),
                   layerwise=d.get("layerwise", ("uniform",)), base=PruneConfig.from_dict(d.get("base") or {}),
                   eval=EvalConfig(**ev) if ev else None, model=d.get("model", "default"),
                   dtype=d.get("dtype", "float32"), name=d.get("name"),
                   trust_remote_code=bool(d.get("trust_remote_code", False)))


@dataclass
class SweepPlan:
    """The grid's runs in order (iterating a plan gives its RunRequests) and the combinations left out."""

    name: str | None
    requests: list[Any]  # RunRequest
    labels: list[str]
    skipped: list[tuple[str, str]]  # (label, reason)

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.requests)


def point_label(pc: PruneConfig, with_nsamples: bool) -> str:
    """'wanda 50%', 'owl-wanda 70%', 'sparsegpt 2:4', with ' · n=16' when calibration size is an axis."""
    return pc.label + (f" · n={pc.nsamples}" if with_nsamples else "")


def _point_stem(pc: PruneConfig, with_nsamples: bool) -> str:
    name = ("owl-" if pc.layerwise == "owl" else "") + pc.method + ("-variant" if pc.variant else "")
    stem = f"{name}-{pc.pattern.replace(':', 'of')}-{pc.target_sparsity:.2f}"
    return stem + (f"-n{pc.nsamples}" if with_nsamples else "")


def plan_sweep(cfg: SweepConfig) -> SweepPlan:
    """The cartesian grid as RunRequests, in order: per calibration size, pattern, sparsity, layerwise, method.

    N:M patterns fix the sparsity at N/M, so they ignore the sparsity axis (one point each). Invalid
    combinations (the Wanda variant or OWL with N:M, ...) are skipped, each with PruneConfig's reason.
    With `cfg.name` set, every request is named '<sweep>-<NN>-<point>'.
    """
    from .runner import RunRequest

    with_n = cfg.nsamples is not None and len(cfg.nsamples) > 1
    requests, labels, skipped, seen = [], [], [], set()
    for n in cfg.nsamples_axis:
        for pattern in cfg.patterns:
            nm = parse_pattern(pattern)
            for s in ([nm[0] / nm[1]] if nm else cfg.sparsities):
                for lw in cfg.layerwise:
                    for entry in cfg.methods:
                        method, variant = parse_method(entry)
                        owl = "owl-" if lw == "owl" else ""
                        what = f"{owl}{entry} {pattern if nm else f'{s:.0%}'}" + (f" · n={n}" if with_n else "")
                        try:
                            pc = replace(cfg.base, method=method, variant=variant, pattern=pattern, sparsity=s,
                                         nsamples=n, layerwise=lw)
                        except ConfigError as e:
                            if (what, str(e)) not in skipped:
                                skipped.append((what, str(e)))
                            continue
                        if pc in seen:
                            continue
                        seen.add(pc)
                        labels.append(point_label(pc, with_n))
                        name = f"{cfg.name}-{len(requests) + 1:02d}-{_point_stem(pc, with_n)}" if cfg.name else None
                        requests.append(RunRequest(model=cfg.model, prune=pc, eval=cfg.eval, dtype=cfg.dtype,
                                                   name=name, trust_remote_code=cfg.trust_remote_code))
    if len(requests) > MAX_POINTS:
        raise ConfigError(f"sweep plans {len(requests)} runs; the limit is {MAX_POINTS}: give fewer values on an axis")
    return SweepPlan(cfg.name, requests, labels, skipped)


# ---------------------------------------------------------------- estimates

def estimate_work(plan: SweepPlan, past_runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a plan costs: runs, calibration and evaluation tokens, and seconds if earlier runs allow.

    Seconds: each point's pruning from earlier complete runs of the same model and method (scaled by
    calibration tokens) plus its evaluation from earlier runs evaluated the same way; None when some
    point has no such earlier run. `past_runs` are run.json dicts.
    """
    calib = sum(r.prune.nsamples * r.prune.seqlen for r in plan.requests)
    ev = plan.requests[0].eval if plan.requests else None
    eval_tokens = ev.windows * ev.seqlen if ev is not None and ev.windows else None
    out: dict[str, Any] = {"runs": len(plan), "skipped": len(plan.skipped), "calibration_tokens": calib,
                           "eval_tokens_per_run": eval_tokens, "evaluations": len(plan) + 1 if ev else 0,
                           "seconds": None, "estimated_points": 0}
    past = [m for m in past_runs or [] if m.get("status") == "complete" and isinstance(m.get("timings"), dict)]
    total, known = 0.0, 0
    for r in plan.requests:
        same = [m for m in past if (m.get("config") or {}).get("model") == r.model
                and (m.get("config") or {}).get("method") == r.prune.method and m["timings"].get("prune_s")]
        rates = sorted(m["timings"]["prune_s"] / max(1, (m["config"].get("nsamples") or 1) * (m["config"].get("seqlen") or 1))
                       for m in same)
        if not rates:
            continue
        seconds = rates[len(rates) // 2] * r.prune.nsamples * r.prune.seqlen
        if r.eval is not None:
            evals = sorted(m["timings"]["eval_s"] for m in past if m["timings"].get("eval_s")
                           and (m.get("config") or {}).get("model") == r.model
                           and (m.get("config") or {}).get("eval") == r.eval.to_dict())
            if not evals:
                continue
            seconds += evals[len(evals) // 2]
        total += seconds
        known += 1
    out["estimated_points"] = known
    if plan.requests and known == len(plan.requests):
        out["seconds"] = round(total, 1)
    return out


# ---------------------------------------------------------------- manifests

def sweeps_dir(store: RunStore) -> Path:
    return store.root / SWEEP_DIR


def manifest_path(store: RunStore, name: str) -> Path:
    return sweeps_dir(store) / f"{check_run_name(name)}.json"


def new_sweep_name(store: RunStore) -> str:
    """'sweep-YYYYmmdd-HHMMSS', unique among the store's sweeps and runs."""
    base = time.strftime("sweep-%Y%m%d-%H%M%S")
    name, i = base, 1
    while manifest_path(store, name).exists() or any(store.root.glob(f"{name}-*")):
        i += 1
        name = f"{base}-{i}"
    return name


def _point_dict(request: Any, label: str, index: int) -> dict[str, Any]:
    pc = request.prune
    return {"index": index, "run": request.name, "label": label, "method": pc.method, "variant": pc.variant,
            "pattern": pc.pattern, "sparsity": pc.target_sparsity, "nsamples": pc.nsamples,
            "layerwise": pc.layerwise, "status": "planned", "error": None, "ppl": None}


def write_manifest(store: RunStore, cfg: SweepConfig, plan: SweepPlan, status: str = "planned",
                   points: list[dict[str, Any]] | None = None, created: str | None = None) -> Path:
    """Write (atomically) the manifest of a named sweep; refuses to overwrite another sweep's on first write."""
    if not cfg.name or plan.name != cfg.name:
        raise ConfigError("a sweep needs a name before its manifest is written (plan it with cfg.name set)")
    path = manifest_path(store, cfg.name)
    if points is None and path.exists():
        raise EngineError(f"a sweep named {cfg.name!r} already exists in {store.root}")
    if points is None:
        taken = [r.name for r in plan.requests if store.path_for(r.name).exists()]
        if taken:
            raise EngineError(f"run {taken[0]!r} already exists; choose another sweep name")
    points = points if points is not None else [_point_dict(r, lab, i) for i, (r, lab) in
                                                  enumerate(zip(plan.requests, plan.labels))]
    atomic_write_json(path, {"format": 1, "name": cfg.name, "created": created or time.strftime("%Y-%m-%dT%H:%M:%S"),
                             "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": status,
                             "model": cfg.model, "config": cfg.to_dict(), "points": points,
                             "skipped": [{"label": lab, "reason": why} for lab, why in plan.skipped]})
    return path


@dataclass
class Sweep:
    """A sweep as read from its manifest; point statuses come from the points' run directories."""

    path: Path
    manifest: dict[str, Any]
    store: RunStore

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.stem)

    @property
    def created(self) -> str:
        return self.manifest.get("created", "")

    @property
    def config(self) -> SweepConfig:
        return SweepConfig.from_dict(self.manifest["config"])

    @property
    def skipped(self) -> list[dict[str, str]]:
        return list(self.manifest.get("skipped", []))

    def runs(self) -> list[Run | None]:
        """Each point's run as on disk now, or None where it has not started (or was deleted)."""
        out: list[Run | None] = []
        for p in self.manifest.get("points", []):
            try:
                path = self.store.path_for(p["run"])
            except (ConfigError, KeyError, TypeError):
                out.append(None)
                continue
            out.append(load_run(path) if path.is_dir() else None)
        return out

    def points(self) -> list[dict[str, Any]]:
        """The manifest's points with status, ppl and error brought up to date from their run directories."""
        out = []
        for p, run in zip(self.manifest.get("points", []), self.runs()):
            p = dict(p)
            if run is not None:
                p["status"] = run.status
                p["ppl"], p["ppl_dense"] = run.meta.get("ppl"), run.meta.get("ppl_dense")
                p["error"] = run.meta.get("error")
            out.append(p)
        return out

    def complete_runs(self) -> list[Run]:
        return [r for r in self.runs() if r is not None and r.complete]

    @property
    def status(self) -> str:
        """complete | running | failed | cancelled (a sweep run to its end by the CLI) | planned (nothing
        started yet) | incomplete (some points done, others not started: queued in the app, or abandoned)."""
        statuses = [p["status"] for p in self.points()]
        if statuses and all(s == "complete" for s in statuses):
            return "complete"
        if "running" in statuses:
            return "running"
        if self.manifest.get("status") in ("complete", "failed", "cancelled"):
            return self.manifest["status"]
        if "planned" in statuses:
            return "planned" if all(s == "planned" for s in statuses) else "incomplete"
        return "cancelled" if "cancelled" in statuses else "failed"


def load_sweep(store: RunStore, name: str) -> Sweep:
    path = manifest_path(store, name)
    if not path.exists():
        raise EngineError(f"no sweep named {name!r} in {store.root}")
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("points"), list):
            raise ValueError("not a sweep manifest")
    except (ValueError, OSError) as e:
        raise EngineError(f"sweep {name!r} has an unreadable manifest ({e})") from e
    return Sweep(path, manifest, store)


def list_sweeps(store: RunStore) -> list[Sweep]:
    """Every readable sweep in the store, newest first."""
    folder = sweeps_dir(store)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.glob("*.json"):
        if p.name.startswith(".") or not re.match(r"^[A-Za-z0-9]", p.stem):
            continue
        try:
            out.append(load_sweep(store, p.stem))
        except EngineError:
            continue
    return sorted(out, key=lambda s: (s.created, s.name), reverse=True)


# ---------------------------------------------------------------- running

@dataclass
class SweepResult:
    name: str
    manifest: Path
    points: list[dict[str, Any]]
    skipped: list[tuple[str, str]]
    status: str

    def runs(self, store: RunStore) -> list[Run]:
        return [load_run(store.path_for(p["run"])) for p in self.points if p["status"] == "complete"]

    def count(self, status: str) -> int:
        return sum(p["status"] == status for p in self.points)


def preflight(loaded: Any, plan: SweepPlan) -> None:
    """Everything that would fail every point alike, checked once before any run: the patterns fit the
    model, each distinct calibration setting has enough text, the evaluation windows fit."""
    from .data import calibration_windows, eval_tokens
    from .evaluate import check_windows
    from .models import context_length
    from .pipeline import check_prunable

    limit = context_length(loaded.model)
    checked_calib, checked_prune = set(), set()
    for r in plan.requests:
        pc = r.prune
        key = (pc.pattern, pc.method, pc.resolved_group)
        if key not in checked_prune:
            checked_prune.add(key)
            check_prunable(loaded.model, pc)
        ckey = (pc.calib, pc.nsamples, pc.seqlen, pc.seed)
        if ckey not in checked_calib:
            checked_calib.add(ckey)
            calibration_windows(loaded.tokenizer, pc.calib, pc.nsamples, pc.seqlen, pc.seed)
            if limit is not None and pc.seqlen > limit:
                raise ConfigError(f"seqlen {pc.seqlen} is longer than the model's context of {limit} tokens")
    ev = plan.requests[0].eval if plan.requests else None
    if ev is not None:
        tokens, label = eval_tokens(loaded.tokenizer, ev.dataset)
        if limit is not None and ev.seqlen > limit:
            raise ConfigError(f"eval seqlen {ev.seqlen} is longer than the model's context of {limit} tokens")
        check_windows(tokens, ev.seqlen, ev.windows, label)


def run_sweep(cfg: SweepConfig, store: RunStore | None = None, loaded: Any = None,
              on_event: EventCallback = ignore_events, cancel: threading.Event | None = None,
              on_point: Callable[[dict[str, Any]], None] | None = None) -> SweepResult:
    """Run every planned point on one loaded model (loaded here unless given; each run deep-copies it).

    Bad input raises before any run directory or manifest is written. A point that fails is recorded
    with its error and the sweep goes on; a cancel request stops the sweep (the running point is marked
    cancelled, the rest stay 'planned'). The manifest is rewritten after every point. `on_point` gets
    each finished point's dict.
    """
    from .runner import execute_run

    store = store or RunStore()
    if cfg.name is None:
        cfg = replace(cfg, name=new_sweep_name(store))
    if manifest_path(store, cfg.name).exists():
        raise EngineError(f"a sweep named {cfg.name!r} already exists in {store.root}")
    plan = plan_sweep(cfg)
    if not plan.requests:
        reasons = "; ".join(f"{lab}: {why}" for lab, why in plan.skipped[:3])
        raise ConfigError(f"the sweep plans no runs: every combination is invalid ({reasons})")
    t0 = time.perf_counter()
    if loaded is None:
        from .models import load_model

        on_event(StageStarted(0.0, "load-model", cfg.model))
        loaded = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    preflight(loaded, plan)

    created = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = write_manifest(store, cfg, plan, status="running", created=created)
    points = [_point_dict(r, lab, i) for i, (r, lab) in enumerate(zip(plan.requests, plan.labels))]
    status = "running"

    def save() -> None:
        write_manifest(store, cfg, plan, status=status, points=points, created=created)

    try:
        for point, request in zip(points, plan.requests):
            if cancel is not None and cancel.is_set():
                status = "cancelled"
                break
            on_event(StageStarted(time.perf_counter() - t0, "sweep-point",
                                  f"{point['index'] + 1}/{len(points)}: {point['label']}"))
            point["status"] = "running"
            save()
            try:
                run = execute_run(request, store=store, on_event=on_event, cancel=cancel, loaded=loaded)
            except PruneCancelled as e:
                point["status"], point["error"] = "cancelled", str(e)
                status = "cancelled"
            except Exception as e:  # noqa: BLE001 - one bad point must not lose the rest of the grid
                point["status"] = "failed"
                point["error"] = str(e) if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
            else:
                m = run.meta
                point.update(status="complete", run=run.name, ppl=m.get("ppl"), ppl_dense=m.get("ppl_dense"),
                             achieved_sparsity=m.get("sparsity"), seconds=(m.get("timings") or {}).get("total_s"))
            save()
            if on_point is not None:
                on_point(dict(point))
            if status == "cancelled":
                break
        else:
            status = "complete" if all(p["status"] == "complete" for p in points) else "failed"
    except BaseException:  # KeyboardInterrupt: the manifest says so before the interrupt propagates
        status = "cancelled"
        for p in points:
            if p["status"] == "running":
                p["status"] = "cancelled"
        try:
            save()
        except OSError:
            pass
        raise
    save()
    return SweepResult(cfg.name, path, points, plan.skipped, status)


def sweep_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The sweep's figures from its complete runs' run.json dicts: 'sparsity' always, 'nsamples' when
    the runs span more than one calibration size."""
    from . import figures

    out = {"sparsity": figures.perplexity_vs_sparsity(runs)}
    if len({(m.get("config") or {}).get("nsamples") for m in runs}) > 1:
        out["nsamples"] = figures.perplexity_vs_nsamples(runs)
    return out


__all__ = ["SweepConfig", "SweepPlan", "Sweep", "SweepResult", "plan_sweep", "run_sweep", "write_manifest",
           "load_sweep", "list_sweeps", "new_sweep_name", "estimate_work", "parse_axis", "parse_method", "preflight",
           "sweep_figures"]
