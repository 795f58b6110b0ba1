"""The first page's payoff: dense vs magnitude vs Wanda perplexity, and why (the outlier channels)."""
from __future__ import annotations

from typing import Any

import streamlit as st

from app import ui
from wanda_engine.runs import Run


def _method(run: Run) -> str:
    cfg = run.config
    return cfg.get("method", "?") + ("-variant" if cfg.get("variant") else "")


def outlier_record(run: Run) -> Any | None:
    """The matrix whose input channels are the most lopsided (largest max/median activation norm)."""
    best, best_ratio = None, -1.0
    for rec in run.records():
        ch = rec.channels or {}
        ratio = ch.get("max_over_median")
        if isinstance(ratio, (int, float)) and ratio > best_ratio and "channel_norms" in rec.arrays:
            best, best_ratio = rec, float(ratio)
    return best


def _same_eval(a: dict, b: dict) -> bool:
    ea, eb = a.get("eval") or {}, b.get("eval") or {}
    return all(ea.get(k) == eb.get(k) for k in ("dataset", "seqlen", "windows", "tokens"))


def overview() -> None:
    cur, cmp = ui.current_run(), ui.compare_run()
    if cur is None:
        if ui.job_runner().busy:
            st.info("The results appear here when the run finishes.")
        else:
            st.info("No finished run yet. Press **Compare magnitude vs Wanda** above: the results appear here.")
        return
    runs = [r for r in (cmp, cur) if r is not None]
    methods = {_method(r): r for r in runs}
    wanda = methods.get("wanda") or methods.get("wanda-variant")
    magnitude = methods.get("magnitude")
    if wanda is not None and magnitude is not None:
        st.header("Magnitude vs Wanda: same sparsity, very different damage")
    else:
        st.header("Current run" + (" vs comparison" if cmp is not None else ""))
    figs = ui.figures()

    cols = st.columns(len(runs) + 1)
    dense = cur.meta.get("ppl_dense")
    cols[0].metric("Dense model perplexity", f"{dense:.2f}" if isinstance(dense, (int, float)) else "—",
                   help="The unpruned model, measured on the same windows.")
    for col, run in zip(cols[1:], runs):
        ppl = run.meta.get("ppl")
        delta = f"{ppl - dense:+.2f} vs dense" if isinstance(ppl, (int, float)) and isinstance(dense, (int, float)) else None
        col.metric(f"{figs.run_label(run.meta) if figs else _method(run)} perplexity",
                   f"{ppl:.2f}" if isinstance(ppl, (int, float)) else "—", delta, delta_color="inverse",
                   help=f"Run {run.name}; achieved sparsity {run.meta.get('sparsity', 0):.2%}")
    if cmp is not None and not _same_eval(cur.meta, cmp.meta):
        st.warning("The two runs were evaluated on different text or windows; their perplexities are not comparable.")

    if figs is None:
        return
    left, right = st.columns(2, gap="medium")
    with left:
        ui.chart(figs.perplexity_bars([r.meta for r in runs]), key="overview_ppl", narrow=True)
        st.caption(ui.measured_on(cur.meta))
    source = wanda or cur
    rec = outlier_record(source)
    with right:
        if rec is None:
            st.info("This run recorded no activation statistics, so there are no channel norms to show.")
        else:
            ui.chart(figs.channel_norms(rec), key="overview_channels", narrow=True)
            st.caption(f"{ui.calib_caption(source.meta)} · run {source.name}")
    if rec is not None:
        ch = rec.channels or {}
        top = (ch.get("top_index") or ["?"])[0]
        ratio = ch.get("max_over_median")
        ov = rec.overlap or {}
        ratio_txt = f"{ratio:.0f}× the median norm" if isinstance(ratio, (int, float)) else "far above the median"
        text = (f"**Why:** the inputs of `{rec.full_name}` are dominated by a few *outlier channels* — channel {top} "
                f"is {ratio_txt}. A weight that multiplies such a channel matters far more than its "
                "size suggests. Magnitude pruning sees only |W|, so it prunes the weights of these columns as readily as "
                "any others; Wanda multiplies |W| by ‖X_j‖₂ and keeps them, so the pruned model stays close to the dense one.")
        if isinstance(ov.get("jaccard"), (int, float)):
            text += (f" In this matrix the two methods agree on only {ov['jaccard']:.0%} of the pruned weights "
                     f"(Jaccard index of the {source.config.get('method')} and {ov.get('reference')} masks).")
        st.markdown(text)
        st.caption("Explore every layer on the **Layers**, **Sparsity** and **Masks** pages.")
