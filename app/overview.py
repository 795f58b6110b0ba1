"""The first page's payoff: dense vs magnitude vs Wanda perplexity, and why (the outlier channels)."""
from __future__ import annotations

import streamlit as st

from app import ui
from wanda_engine.outputs import figures
from wanda_engine.store.run_record import RunRecord
from wanda_engine.store.matrix_records import MatrixRecord
from wanda_engine.store.run_store import Run


def outlier_record(run: Run) -> MatrixRecord | None:
    """The matrix whose input channels are the most lopsided (largest max/median activation norm)."""
    best, best_ratio = None, -1.0
    for rec in run.records():
        ch = rec.channels or {}
        ratio = ch.get("max_over_median")
        if isinstance(ratio, (int, float)) and ratio > best_ratio and "channel_norms" in rec.arrays:
            best, best_ratio = rec, float(ratio)
    return best


def note_without_statistics(run: Run) -> None:
    """One sentence where the run holds no activation statistics (pruned from the weights alone) or no per-matrix
    records at all (a structure remover's run)."""
    if run.record.structure is not None:
        st.info(f"This run ({run.record.label()}) removed whole heads, MLP channels or blocks: it keeps no per-matrix "
                "masks or statistics to show here. The **Shrink** page shows what it removed.")
    elif not run.record.request.prune.calibrate:
        st.info("This magnitude run was pruned from the weights alone, without calibration, so it holds no activation "
                "norms and no Wanda mask to compare with; the Wanda run of the comparison shows both.")


def _evaluated_alike(a: RunRecord, b: RunRecord) -> bool:
    def setting(r: RunRecord) -> tuple | None:
        return (r.eval.dataset, r.eval.seqlen, r.eval.windows, r.eval.tokens) if r.eval else None

    return setting(a) == setting(b)


def _why(rec: MatrixRecord, source: Run) -> str:
    """Why Wanda keeps what magnitude prunes, told with this matrix's own numbers."""
    ch = rec.channels or {}
    top = (ch.get("top_index") or ["?"])[0]
    ratio = ch.get("max_over_median")
    ratio_txt = f"{ratio:.0f}× the median norm" if isinstance(ratio, (int, float)) else "far above the median"
    text = (f"**Why:** the inputs of `{rec.full_name}` are dominated by a few *outlier channels* — channel {top} "
            f"is {ratio_txt}. A weight that multiplies such a channel matters far more than its "
            "size suggests. Magnitude pruning sees only |W|, so it prunes the weights of these columns as readily as "
            "any others; Wanda multiplies |W| by ‖Xⱼ‖₂ and keeps them, so the pruned model stays close to the dense one.")
    if rec.overlap is not None:
        text += (f" In this matrix the two methods agree on only {rec.overlap.jaccard:.0%} of the pruned weights "
                 f"(Jaccard index of the two masks: {rec.mask_label(rec.method)}; {rec.mask_label(rec.overlap.reference)})"
                 ".")
    return text


def overview() -> None:
    cur, cmp = ui.current_run(), ui.compare_run()
    if cur is None:
        if ui.job_runner().busy:
            st.info("The results appear here when the run finishes.")
        else:
            st.info("No finished run yet. Press **Compare magnitude vs Wanda** above: the results appear here.")
        return
    runs = [r for r in (cmp, cur) if r is not None]
    by_method = {r.record.request.prune.method: r for r in runs}
    wanda, magnitude = by_method.get("wanda"), by_method.get("magnitude")
    if wanda is not None and magnitude is not None:
        st.header("Magnitude vs Wanda: same sparsity, very different damage")
    else:
        st.header("Current run" + (" vs comparison" if cmp is not None else ""))

    cols = st.columns(len(runs) + 1)
    dense = cur.record.ppl_dense
    cols[0].metric("Dense model perplexity", f"{dense:.2f}" if dense is not None else "—",
                   help="The unpruned model, measured on the same windows.")
    for col, run in zip(cols[1:], runs):
        ppl = run.record.ppl
        delta = f"{ppl - dense:+.2f} vs dense" if ppl is not None and dense is not None else None
        col.metric(f"{run.record.label()} perplexity", f"{ppl:.2f}" if ppl is not None else "—", delta,
                   delta_color="inverse", help=f"Run {run.name}; achieved sparsity {run.record.sparsity or 0:.2%}")
    if cmp is not None and not _evaluated_alike(cur.record, cmp.record):
        st.warning("The two runs were evaluated on different text or windows; their perplexities are not comparable.")

    left, right = st.columns(2, gap="medium")
    with left:
        ui.chart(figures.perplexity_bars([r.record for r in runs]), key="overview_ppl", narrow=True)
        st.caption(ui.measured_on(cur.record))
    source = wanda or cur
    rec = outlier_record(source)
    with right:
        if rec is None:
            st.info("This run recorded no activation statistics, so there are no channel norms to show."
                    if source.record.structure is None else "This run removed whole heads, MLP channels or blocks: "
                    "it records no channel norms. The **Shrink** page shows what it removed.")
        else:
            ui.chart(figures.channel_norms(rec), key="overview_channels", narrow=True)
            st.caption(f"{ui.calib_caption(source.record)} · run {source.name}")
    if rec is not None:
        st.markdown(_why(rec, source))
        st.caption("Why, step by step and with a test you can run: the **Explain** page. Explore every layer on the "
                   "**Layers**, **Sparsity** and **Masks** pages.")
