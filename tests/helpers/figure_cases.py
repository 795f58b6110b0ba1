"""Every figure the project draws, from real runs of the embedded model (30 blocks, channels in the hundreds and
thousands, log axes), for the legibility test: the catalog of a comparison and of a sweep, the Explain page's
steps, the Repair page's figures, and the Shrink page's (what a structure remover took out, the frontier).

The runs are small (2 × 64 calibration tokens, 2 × 64 evaluation tokens; repairs of 2 steps): the figures'
labels are what a user's runs give (block numbers, matrix names, channel numbers, perplexities in the
hundreds), only the numbers are noisier.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import plotly.graph_objects as go

from wanda_engine.config import EvalConfig, PruneConfig, RunRequest, SpeedConfig
from wanda_engine.outputs import explain
from wanda_engine.outputs import figures as F
from wanda_engine.outputs.figures import catalog
from wanda_engine.store.run_store import Run, RunStore

CALIB = dict(nsamples=2, seqlen=64, device="cpu")
EVAL = EvalConfig(seqlen=64, windows=2)


@dataclass(frozen=True)
class Case:
    """One figure to check: `name` says which, `screen` lists the on-screen widths (px) the app shows it at."""

    name: str
    build: Callable[[], go.Figure]
    screen: tuple[int, ...] = (1100,)  # the main column at a 1500-px window; 540: a half-width column
    rows: int | None = None  # a heatmap's rows, which the app gives room on screen (style.on_screen)


def _request(name: str, **prune) -> RunRequest:
    return RunRequest(prune=PruneConfig(**{**CALIB, **prune}), eval=EVAL, name=name)


def make_runs(store_root: Path, loaded) -> dict[str, Run]:
    """The Compare's pair (Wanda, and magnitude from the weights alone as the app's Compare runs it), a second
    sparsity of each and a second calibration size (the sweep's lines), an OWL run, and step 5's protected
    magnitude run."""
    from wanda_engine.runner.execute import execute_run

    store = RunStore(store_root)
    magnitude = _request("magnitude", method="magnitude", calibrate=False)
    requests = [_request("wanda", method="wanda"), magnitude,
                _request("wanda-70", method="wanda", sparsity=0.7),
                _request("magnitude-70", method="magnitude", sparsity=0.7, calibrate=False),
                _request("wanda-n4", method="wanda", nsamples=4),
                _request("owl-wanda", method="wanda", layerwise="owl", sparsity=0.7),
                replace(explain.protect_requests(magnitude, (0.01,))[0], name="magnitude-protect")]
    speed = SpeedConfig(decode_tokens=2, repeats=1)  # the frontier's runs: structure removers and a mask, measured
    requests += [replace(_request("flap", method="flap", sparsity=0.2, allocation="global", bias_compensation=True),
                         speed=speed),
                 replace(_request("flap-30", method="flap", sparsity=0.3, bias_compensation=True), speed=speed),
                 replace(_request("depth", method="block-influence", sparsity=0.2), speed=speed),
                 replace(_request("wanda-speed", method="wanda"), speed=speed)]
    return {r.name: execute_run(r, store=store, loaded=loaded) for r in requests}


def make_repairs(run: Run, loaded) -> list:
    """Two-step repairs of `run`: sparse fine-tuning, LoRA, and the dense model fine-tuned alike (the reference)."""
    from wanda_engine.repair.config import RepairConfig, RepairRequest
    from wanda_engine.repair.run import execute_repair

    fast = dict(steps=2, batch_size=1, seqlen=64, eval_every=1, warmup_steps=0)
    configs = [RepairConfig(method="finetune", **fast), RepairConfig(method="lora", **fast),
               RepairConfig(method="finetune", dense=True, **fast)]
    return [execute_repair(RepairRequest(run=str(run.path), config=c), loaded=loaded) for c in configs]


def catalog_cases(runs: dict[str, Run]) -> list[Case]:
    """Every figure the catalog draws for the Compare's pair (side by side, then each run's own) and for a sweep."""
    pair = [runs["wanda"], runs["magnitude"]]
    model_runs = [r.record for r in runs.values()]
    specs = catalog.catalog([r.record for r in pair], {r.name: r.records() for r in pair}, model_runs=model_runs)
    owl = runs["owl-wanda"]
    owl_story = catalog.story_matrix([owl.record], {owl.name: owl.records()})
    specs += [s for s in catalog.run_figures(owl.record, owl.records(), "owl-", owl_story)[0] if s.stem == "owl-owl_ratios"]
    sweep = [r.record for name, r in runs.items() if name in ("wanda", "magnitude", "wanda-70", "magnitude-70",
                                                             "wanda-n4", "owl-wanda")]
    specs += [replace(s, stem=f"sweep-{s.stem}") for s in catalog.catalog(sweep, {}, sweep=True)]
    return [Case(spec.stem, spec.build, _screen(spec.stem), 30 if spec.stem.endswith(HEATMAPS) else None)
            for spec in specs]


HEATMAPS = ("sparsity_heatmap", "overlap")


def _screen(stem: str) -> tuple[int, ...]:
    """The widths the pages show a catalog figure at: the Sparsity page's row and density views in half a page,
    the Prune page's overview (perplexity, channel norms) in half a page too."""
    kinds = {kind for kind in catalog.FIGURES if f"-{kind}-" in f"-{stem}-"}
    if kinds & {"row_sparsity", "density"}:
        return (540,)
    if kinds & {"perplexity", "channels"}:
        return (1100, 540)
    return (1100,)


def shrink_cases(runs: dict[str, Run]) -> list[Case]:
    """The Shrink page's figures: what the global FLAP run and the depth run removed, and the frontier of every run
    (the structure removers, Wanda with its speed, and the masks without)."""
    flap, depth = runs["flap"].record, runs["depth"].record
    records = [r.record for r in runs.values()]
    cases = [Case(f"flap-{which}", lambda w=which: catalog.build_figure(w, flap),
                  rows=30 if which == "heads_kept" else None)
             for which in ("heads_kept", "kept_per_block", "structure_scores")]
    cases += [Case(f"depth-{which}", lambda w=which: catalog.build_figure(w, depth))
              for which in ("removed_blocks", "structure_scores")]
    return cases + [Case(f"frontier-{axis}", lambda a=axis: F.frontier(records, a)) for axis in ("prefill", "params")]


def sparsity_cases(runs: dict[str, Run]) -> list[Case]:
    """The Sparsity page's side-by-side view of the Compare's pair, on the matrix type with the loudest channel."""
    pair = [runs["wanda"], runs["magnitude"]]
    loudest = catalog.outlier_matrix(pair[0].records())
    return [Case(f"zeros-{name}", lambda n=name: F.zeros_where([(r.record.label(), r.records()) for r in pair], n),
                 rows=60) for name in dict.fromkeys((loudest.name, "self_attn.q_proj"))]


def explain_cases(runs: dict[str, Run]) -> list[Case]:
    """Step 1's toy at the slider's ends and default, and steps 2–5 on the Compare's pair (step 5 before and
    after its test ran)."""
    wanda, magnitude = runs["wanda"], runs["magnitude"]
    records, record = wanda.records(), wanda.record
    cases = [Case(f"explain_toy-{scale}", lambda s=scale: F.explain_toy(explain.toy(s)), (1050, 1400))
             for scale in (1, 30, 100)]
    steps = (("explain_outliers", explain.outliers, F.explain_outliers),
             ("explain_cuts", explain.outlier_cuts, F.explain_cuts),
             ("explain_error_share", explain.error_share, F.explain_error_share))
    cases += [Case(name, lambda e=evidence, f=figure: f(e(records, record)), (1050, 1400))
              for name, evidence, figure in steps]
    protected = [runs["magnitude-protect"].record]
    cases.append(Case("explain_protect", lambda: F.explain_protect(
        explain.intervention(magnitude.record, record, protected)), (1050, 1400)))
    cases.append(Case("explain_protect-not-run", lambda: F.explain_protect(
        explain.intervention(magnitude.record, record, [])), (1050, 1400)))
    return cases


def repair_cases(run: Run, repairs: list, obs_run: Run | None) -> list[Case]:
    """The Repair page's bars (with and without the dense reference), its loss curves and a running repair's."""
    record = run.record
    mine = [r for r in repairs if not r.request.config.dense]
    obs = obs_run.record if obs_run is not None else None
    return [Case("repair_bars", lambda: F.repair_bars(record, repairs, obs)),
            Case("repair_bars-no-reference", lambda: F.repair_bars(record, mine, None)),
            Case("repair_loss", lambda: F.repair_loss(mine)),
            Case("repair_loss-one", lambda: F.repair_loss(mine[0])),
            Case("repair_progress", lambda: F.repair_progress(mine[0].losses[:1], mine[0].evals[:1],
                                                              mine[0].request.config, record))]
