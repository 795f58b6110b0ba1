"""Sweeps: a grid of runs (methods × sparsities × patterns, optionally × calibration sizes × layerwise
allocation × protected channels × weight update; the structure removers × their own ratios) on one loaded model,
each recorded as an ordinary run, plus a manifest naming them. With speed on, every point measures its speed beside
the dense model, so that the sweep draws the frontier (perplexity against speed-up and parameters kept).

The CLI runs a sweep with `run_sweep`; the app plans it with `plan_sweep`, writes the manifest with
`write_manifest` and queues the planned requests on its job runner. Either way the manifest
`<run store>/.sweeps/<name>.json` (a dot-folder: never listed as a run) lists the planned points and
their run names, and `load_sweep` reads each point's status back from its run directory.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import EvalConfig, PruneConfig, RunRequest, SpeedConfig, method_label, protect_suffix, update_suffix
from ..core.parsing import check_run_name, parse_pattern
from ..core.status import SweepStatus
from ..core.errors import ConfigError, EngineError, PruneCancelled
from ..core.events import EventCallback, StageStarted, ignore_events
from ..methods.table import PARAMS, Structure, get as get_method, parse_choice, removers
from ..store.run_store import Run, RunStore, atomic_write_json, load_run

SWEEP_DIR = ".sweeps"
MAX_POINTS = 64  # the app's job queue holds 64 runs
MAX_NAME = 40  # leaves room in a run name (100 characters) for the point's own part


def parse_method(entry: str) -> tuple[str, bool]:
    """'wanda' -> ('wanda', False); 'wanda-variant' -> ('wanda', True) (the table's choices). Raises ConfigError
    otherwise."""
    try:
        method, variant = parse_choice(entry)
    except ConfigError as e:
        raise ConfigError(f"sweep methods: {e}") from None
    return method.name, variant


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


def _checked(axis: str, field: str, normalise: Callable[[Any], Any] = lambda v: v,
             **others: Any) -> Callable[[Any], Any]:
    """A check of one axis value by PruneConfig's own rule for `field` (beside the settings `others`),
    its error naming the axis."""
    def check(value: Any) -> Any:
        value = normalise(value)
        try:
            PruneConfig(**others, **{field: value})
        except ConfigError as e:
            raise ConfigError(f"sweep {axis}: {e}") from None
        return value
    return check


def _method(v: Any) -> str:
    parse_method(v)
    return str(v).strip()


@dataclass(frozen=True)
class SweepConfig:
    """A grid of runs. Every axis is a list; `base` supplies every other PruneConfig field.

    `nsamples=None` keeps base.nsamples (no calibration-size axis). `ratios`: what the structure removers remove
    (None: the sparsities); `allocation`, `target` and `bias_compensation` apply to the width removers. `speed`:
    every point measures its speed (None: none does). Lists are stored as tuples.
    """

    methods: tuple[str, ...] = ("magnitude", "wanda")
    sparsities: tuple[float, ...] = (0.5,)
    ratios: tuple[float, ...] | None = None
    patterns: tuple[str, ...] = ("unstructured",)
    nsamples: tuple[int, ...] | None = None
    layerwise: tuple[str, ...] = ("uniform",)
    protect_channels: tuple[float, ...] = (0.0,)
    weight_update: tuple[str, ...] = ("none",)
    allocation: str = "uniform"
    target: str = PARAMS
    bias_compensation: bool = False
    speed: SpeedConfig | None = None
    base: PruneConfig = field(default_factory=PruneConfig)
    eval: EvalConfig | None = field(default_factory=EvalConfig)
    model: str = "default"
    dtype: str = "float32"
    name: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: normalise once, here
        put("methods", _axis("methods", self.methods, _method))
        fraction = lambda v: round(float(v), 6) if isinstance(v, (int, float)) and not isinstance(v, bool) else v  # noqa: E731
        put("sparsities", tuple(sorted(_axis("sparsities", self.sparsities, _checked("sparsities", "sparsity", fraction)))))
        # checked as any width remover of the table takes them
        any_width = next(m for m in removers() if get_method(m).removes is Structure.WIDTH)
        width = dict(method=any_width, allocation=self.allocation, target=self.target,
                     bias_compensation=self.bias_compensation)
        if self.ratios is not None:
            put("ratios", tuple(sorted(_axis("ratios", self.ratios, _checked("ratios", "sparsity", fraction, **width)))))
        _checked("structure settings", "sparsity", **width)(0.5)
        if self.speed is not None and not isinstance(self.speed, SpeedConfig):
            raise ConfigError(f"sweep speed must be a SpeedConfig or None, got {type(self.speed).__name__}")
        no_spaces = lambda v: str(v).strip().replace(" ", "")  # noqa: E731
        put("patterns", _axis("patterns", self.patterns, _checked("patterns", "pattern", no_spaces)))
        if self.nsamples is not None:
            put("nsamples", _axis("nsamples", self.nsamples, _checked("nsamples", "nsamples")))
        put("layerwise", _axis("layerwise", self.layerwise, _checked("layerwise", "layerwise")))
        # at sparsity 0 only the fraction's range is checked: the plan skips the sparsities it leaves no room for
        protect = _checked("protect_channels", "protect_channels", fraction, sparsity=0.0)
        put("protect_channels", tuple(sorted(_axis("protect_channels", self.protect_channels, protect))))
        put("weight_update", _axis("weight_update", self.weight_update,
                                   _checked("weight_update", "weight_update", lambda v: str(v).strip())))
        if not isinstance(self.base, PruneConfig):
            raise ConfigError(f"sweep base must be a PruneConfig, got {type(self.base).__name__}")
        try:  # the model, evaluation and dtype, checked as every point's request checks them
            self.request(self.base)
        except ConfigError as e:
            raise ConfigError(f"sweep {e}") from None
        if self.name is not None:
            check_run_name(self.name)
            if len(self.name) > MAX_NAME:
                raise ConfigError(f"sweep name {self.name!r} is longer than {MAX_NAME} characters")

    def request(self, prune: PruneConfig, name: str | None = None) -> RunRequest:
        """One point's request: `prune` on the sweep's model, evaluated as the sweep says."""
        return RunRequest(model=self.model, prune=prune, eval=self.eval, dtype=self.dtype, name=name,
                          trust_remote_code=self.trust_remote_code, speed=self.speed)

    def amounts(self, method: str) -> tuple[float, ...]:
        """What `method` is swept over: a structure remover's ratios (if given), else the sparsities."""
        return self.ratios if self.ratios is not None and get_method(method).removes else self.sparsities

    def structure_settings(self, method: str) -> dict[str, Any]:
        """The sweep's allocation, target and bias compensation where `method` takes them: the width removers."""
        if get_method(method).removes is not Structure.WIDTH:
            return {}
        return dict(allocation=self.allocation, target=self.target, bias_compensation=self.bias_compensation)

    def to_dict(self) -> dict[str, Any]:
        return {"methods": list(self.methods), "sparsities": list(self.sparsities),
                "ratios": list(self.ratios) if self.ratios is not None else None, "patterns": list(self.patterns),
                "nsamples": list(self.nsamples) if self.nsamples is not None else None,
                "layerwise": list(self.layerwise), "protect_channels": list(self.protect_channels),
                "weight_update": list(self.weight_update), "allocation": self.allocation, "target": self.target,
                "bias_compensation": self.bias_compensation, "speed": self.speed.to_dict() if self.speed else None,
                "base": self.base.to_dict(),
                "eval": self.eval.to_dict() if self.eval else None, "model": self.model, "dtype": self.dtype,
                "name": self.name, "trust_remote_code": self.trust_remote_code}


@dataclass
class SweepPlan:
    """The grid's runs in order (iterating a plan gives its RunRequests) and the combinations left out."""

    name: str | None
    requests: list[RunRequest]
    labels: list[str]
    skipped: list[tuple[str, str]]  # (label, reason)

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[RunRequest]:
        return iter(self.requests)


def _with_n(text: str, nsamples: int, with_nsamples: bool, sep: str) -> str:
    return text + (f"{sep}{nsamples}" if with_nsamples else "")


def _grid(cfg: SweepConfig) -> Iterator[tuple[int, str, float, str, str, float, str]]:
    """(nsamples, pattern, sparsity, layerwise, method, protect_channels, weight_update) in plan order; an N:M
    pattern at its own N/M only, each method at its own amounts (`SweepConfig.amounts`)."""
    amounts = sorted(set(cfg.sparsities) | set(cfg.ratios or ()))
    for n, pattern in itertools.product(cfg.nsamples or (cfg.base.nsamples,), cfg.patterns):
        nm = parse_pattern(pattern)
        yield from ((n, pattern, *rest) for rest in itertools.product(
            [nm[0] / nm[1]] if nm else amounts, cfg.layerwise, cfg.methods, cfg.protect_channels, cfg.weight_update)
            if nm or rest[0] in cfg.amounts(parse_method(rest[2])[0]))


def plan_sweep(cfg: SweepConfig) -> SweepPlan:
    """The cartesian grid as RunRequests, in order: per calibration size, pattern, sparsity, layerwise,
    method, protected channels, weight update.

    N:M patterns fix the sparsity at N/M, so they ignore the sparsity axis (one point each). Invalid
    combinations (the Wanda variant, OWL or protected channels with N:M, protected channels with
    SparseGPT, the OBS update with SparseGPT, ...) are skipped, each with PruneConfig's reason.
    With `cfg.name` set, every request is named '<sweep>-<NN>-<point>'.
    """
    with_n = cfg.nsamples is not None and len(cfg.nsamples) > 1
    requests, labels, skipped, seen = [], [], [], set()
    for n, pattern, s, lw, entry, protect, update in _grid(cfg):
        method, variant = parse_method(entry)
        try:
            pc = replace(cfg.base, method=method, variant=variant, pattern=pattern, sparsity=s, nsamples=n, layerwise=lw,
                         protect_channels=protect, weight_update=update, **cfg.structure_settings(method))
        except ConfigError as e:
            named = ("owl-" if lw == "owl" else "") + entry + protect_suffix(protect) + update_suffix(update)
            what = _with_n(method_label(named, pattern, s), n, with_n, " · n=")
            if (what, str(e)) not in skipped:
                skipped.append((what, str(e)))
            continue
        if pc in seen:
            continue
        seen.add(pc)
        labels.append(_with_n(pc.label, n, with_n, " · n="))
        name = f"{cfg.name}-{len(requests) + 1:02d}-{_with_n(pc.stem, n, with_n, '-n')}" if cfg.name else None
        requests.append(cfg.request(pc, name))
    if len(requests) > MAX_POINTS:
        raise ConfigError(f"sweep plans {len(requests)} runs; the limit is {MAX_POINTS}: give fewer values on an axis")
    return SweepPlan(cfg.name, requests, labels, skipped)


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


def _points(plan: SweepPlan) -> list[dict[str, Any]]:
    """The manifest's entry of each planned point, before it runs."""
    return [{"index": i, "run": r.name, "label": label, "method": r.prune.method, "variant": r.prune.variant,
             "pattern": r.prune.pattern, "sparsity": r.prune.target_sparsity, "nsamples": r.prune.nsamples,
             "layerwise": r.prune.layerwise, "protect_channels": r.prune.protect_channels,
             "weight_update": r.prune.weight_update, "status": SweepStatus.PLANNED,
             "error": None, "ppl": None}
            for i, (r, label) in enumerate(zip(plan.requests, plan.labels))]


def write_manifest(store: RunStore, cfg: SweepConfig, plan: SweepPlan, status: str = SweepStatus.PLANNED,
                   points: list[dict[str, Any]] | None = None, created: str | None = None) -> Path:
    """Write (atomically) the manifest of a named sweep; refuses to overwrite another sweep's on first write."""
    if not cfg.name or plan.name != cfg.name:
        raise ConfigError("a sweep needs a name before its manifest is written (plan it with cfg.name set)")
    path = manifest_path(store, cfg.name)
    if points is None:
        if path.exists():
            raise EngineError(f"a sweep named {cfg.name!r} already exists in {store.root}")
        taken = [r.name for r in plan.requests if store.path_for(r.name).exists()]
        if taken:
            raise EngineError(f"run {taken[0]!r} already exists; choose another sweep name")
        points = _points(plan)
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

    def runs(self) -> list[Run | None]:
        """Each point's run as on disk now, or None where it has not started (or was deleted)."""
        out: list[Run | None] = []
        for p in self.manifest.get("points", []):
            try:
                path: Path | None = self.store.path_for(p["run"])
            except (ConfigError, KeyError, TypeError):
                path = None
            out.append(load_run(path) if path is not None and path.is_dir() else None)
        return out

    def points(self) -> list[dict[str, Any]]:
        """The manifest's points with status, ppl and error brought up to date from their run directories."""
        out = []
        for p, run in zip(self.manifest.get("points", []), self.runs()):
            p = dict(p)
            if run is not None:
                p["status"] = run.status
                p["ppl"], p["ppl_dense"] = (run.record.ppl, run.record.ppl_dense) if run.record else (None, None)
                p["error"] = run.error or None
            out.append(p)
        return out

    def complete_runs(self) -> list[Run]:
        return [r for r in self.runs() if r is not None and r.complete]

    @property
    def status(self) -> SweepStatus:
        """complete | running | failed | cancelled (a sweep run to its end by the CLI) | planned (nothing
        started yet) | incomplete (some points done, others not started: queued in the app, or abandoned)."""
        statuses = [p["status"] for p in self.points()]
        if statuses and all(s == SweepStatus.COMPLETE for s in statuses):
            return SweepStatus.COMPLETE
        if SweepStatus.RUNNING in statuses:
            return SweepStatus.RUNNING
        if self.manifest.get("status") in (SweepStatus.COMPLETE, SweepStatus.FAILED, SweepStatus.CANCELLED):
            return SweepStatus(self.manifest["status"])
        if SweepStatus.PLANNED in statuses:
            return SweepStatus.PLANNED if all(s == SweepStatus.PLANNED for s in statuses) else SweepStatus.INCOMPLETE
        return SweepStatus.CANCELLED if SweepStatus.CANCELLED in statuses else SweepStatus.FAILED


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
        return [load_run(store.path_for(p["run"])) for p in self.points if p["status"] == SweepStatus.COMPLETE]

    def count(self, status: str) -> int:
        return sum(p["status"] == status for p in self.points)


def preflight(loaded: Any, plan: SweepPlan) -> None:
    """Everything that would fail every point alike, checked once before any run: each distinct
    pruning and calibration setting is prepared as its run would be (nothing is written)."""
    first: dict[tuple, RunRequest] = {}
    for r in plan.requests:
        first.setdefault((r.prune.pattern, r.prune.method, r.prune.resolved_group, r.prune.calib, r.prune.nsamples,
                          r.prune.seqlen, r.prune.seed, r.prune.protect_channels), r)
    from ..runner.execute import prepare  # torch: only when a sweep runs (the app's server plans and lists them)

    for request in first.values():
        prepare(request, loaded)


def _run_point(point: dict[str, Any], request: RunRequest, store: RunStore, on_event: EventCallback,
               cancel: threading.Event | None, loaded: Any) -> bool:
    """Run one point, recording its outcome in `point`; True when it was cancelled."""
    from ..runner.execute import execute_run  # torch: only when a sweep runs

    try:
        run = execute_run(request, store=store, on_event=on_event, cancel=cancel, loaded=loaded)
    except PruneCancelled as e:
        point["status"], point["error"] = SweepStatus.CANCELLED, str(e)
        return True
    except Exception as e:  # noqa: BLE001 - one bad point must not lose the rest of the grid
        point["status"] = SweepStatus.FAILED
        point["error"] = str(e) if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
    else:
        r = run.record
        point.update(status=SweepStatus.COMPLETE, run=run.name, ppl=r.ppl, ppl_dense=r.ppl_dense, achieved_sparsity=r.sparsity,
                     seconds=r.timings.get("total_s"))
    return False


def _planned(cfg: SweepConfig, store: RunStore) -> tuple[SweepConfig, SweepPlan]:
    """The named config and its plan; EngineError or ConfigError before anything is written."""
    if cfg.name is None:
        cfg = replace(cfg, name=new_sweep_name(store))
    if manifest_path(store, cfg.name).exists():
        raise EngineError(f"a sweep named {cfg.name!r} already exists in {store.root}")
    plan = plan_sweep(cfg)
    if not plan.requests:
        reasons = "; ".join(f"{lab}: {why}" for lab, why in plan.skipped[:3])
        raise ConfigError(f"the sweep plans no runs: every combination is invalid ({reasons})")
    return cfg, plan


def run_sweep(cfg: SweepConfig, store: RunStore | None = None, loaded: Any = None,
              on_event: EventCallback = ignore_events, cancel: threading.Event | None = None,
              on_point: Callable[[dict[str, Any]], None] | None = None) -> SweepResult:
    """Run every planned point on one loaded model (loaded here unless given; each run deep-copies it).

    Bad input raises before any run directory or manifest is written. A point that fails is recorded
    with its error and the sweep goes on; a cancel request stops the sweep (the running point is marked
    cancelled, the rest stay 'planned'). The manifest is rewritten after every point. `on_point` gets
    each finished point's dict.
    """
    store = store or RunStore()
    cfg, plan = _planned(cfg, store)
    t0 = time.perf_counter()
    if loaded is None:
        from ..inputs.models import load_model  # torch: only when a sweep runs

        on_event(StageStarted(0.0, "load-model", cfg.model))
        loaded = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    preflight(loaded, plan)

    created = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = write_manifest(store, cfg, plan, status=SweepStatus.RUNNING, created=created)
    points, status = _points(plan), SweepStatus.RUNNING

    def save() -> None:
        write_manifest(store, cfg, plan, status=status, points=points, created=created)

    try:
        for point, request in zip(points, plan.requests):
            if cancel is not None and cancel.is_set():
                status = SweepStatus.CANCELLED
                break
            on_event(StageStarted(time.perf_counter() - t0, "sweep-point",
                                  f"{point['index'] + 1}/{len(points)}: {point['label']}"))
            point["status"] = SweepStatus.RUNNING
            save()
            cancelled = _run_point(point, request, store, on_event, cancel, loaded)
            save()
            if on_point is not None:
                on_point(dict(point))
            if cancelled:
                status = SweepStatus.CANCELLED
                break
        else:
            status = SweepStatus.COMPLETE if all(p["status"] == SweepStatus.COMPLETE for p in points) else SweepStatus.FAILED
    except BaseException:  # KeyboardInterrupt: the manifest says so before the interrupt propagates
        status = SweepStatus.CANCELLED
        for p in points:
            if p["status"] == SweepStatus.RUNNING:
                p["status"] = SweepStatus.CANCELLED
        with contextlib.suppress(OSError):
            save()
        raise
    save()
    return SweepResult(cfg.name, path, points, plan.skipped, status)
