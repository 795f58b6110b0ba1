"""The Runs page's table and the figures it can export. No Streamlit."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from wanda_engine.records import MatrixRecord
from wanda_engine.runs import Run

FIGURES = {
    "perplexity": "Perplexity: current vs compare run",
    "ppl_vs_sparsity": "Perplexity versus sparsity (all runs of the model)",
    "zeroshot": "Zero-shot accuracy: current vs compare run",
    "blocks": "Sparsity and output error per block",
    "sparsity_heatmap": "Sparsity of every matrix",
    "overlap": "Mask overlap with the reference method, every matrix",
    "histograms": "Score histograms of one matrix",
    "channels": "Input-channel norms of one matrix",
    "row_sparsity": "Row sparsity of one matrix",
    "density": "Density map of one matrix",
    "mask_crop": "Mask crop of one matrix",
}
MATRIX_FIGURES = ("histograms", "channels", "row_sparsity", "density", "mask_crop")
STATUS_MARK = {"complete": "✔ complete", "failed": "✘ failed", "cancelled": "■ cancelled", "running": "… running",
               "interrupted": "✘ interrupted", "corrupt": "✘ corrupt"}


def build_figure(which: str, run: Run, compare: Run | None, record: MatrixRecord | None, complete: list[Run]):
    from wanda_engine import figures as f

    if which == "perplexity":
        return f.perplexity_bars([r.meta for r in (compare, run) if r is not None])
    if which == "zeroshot":
        return f.zeroshot_bars([r.meta for r in (compare, run) if r is not None])
    if which == "ppl_vs_sparsity":
        model = run.config.get("model")
        return f.perplexity_vs_sparsity([run.meta] + [r.meta for r in complete
                                                      if r.config.get("model") == model and r.name != run.name])
    if which == "blocks":
        return f.block_progress(run.blocks)
    if which == "sparsity_heatmap":
        return f.sparsity_heatmap(run.records())
    if which == "overlap":
        return f.overlap_heatmap(run.records())
    if record is None:
        raise ValueError(f"figure {which!r} needs a matrix")
    return {"histograms": f.metric_histograms, "channels": f.channel_norms, "row_sparsity": f.row_sparsity,
            "density": f.density_map, "mask_crop": f.mask_crop}[which](record)


def _status(run: Run, active_name: str | None) -> str:
    # Run.status itself reads 'interrupted' once the process writing a 'running' run is gone,
    # so a CLI run still working on this machine shows as running.
    return STATUS_MARK.get(run.status, run.status)


def runs_table(runs: list[Run], active_name: str | None = None) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for run in runs:
        m, cfg = run.meta, run.config
        ev = m.get("eval") or {}
        cfg_ev = cfg.get("eval") or {}
        done = run.complete
        calib = str(cfg.get("calib", ""))
        model = (m.get("model") or {}).get("label") or cfg.get("model", "")
        rows.append({
            "name": run.name,
            "status": _status(run, active_name),
            "method": cfg.get("method", "") + ("-variant" if cfg.get("variant") else ""),
            "target": cfg.get("target_sparsity"),
            "pattern": cfg.get("pattern", ""),
            "group": cfg.get("resolved_group", cfg.get("group")),
            "achieved": m.get("sparsity") if done else None,
            "perplexity": m.get("ppl") if done else None,
            "dense ppl": m.get("ppl_dense") if done else None,
            "eval": (f"{ev.get('dataset')} {ev.get('windows')}×{ev.get('seqlen')} = {ev.get('tokens', 0):,} tok"
                     if done and ev else (f"{cfg_ev.get('dataset')} ×{cfg_ev.get('seqlen')}" if cfg_ev else "none")),
            "calibration": f"{Path(calib).name if '/' in calib else calib} {cfg.get('nsamples')}×{cfg.get('seqlen')}, seed {cfg.get('seed')}",
            "model": str(model).split(" (")[0],
            "created": m.get("created", ""),
            "time (s)": (m.get("timings") or {}).get("total_s"),
            "error": m.get("error") or "",
        })
    return pd.DataFrame(rows)
