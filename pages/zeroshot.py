"""Zero-shot: lm-eval accuracy of the dense and pruned models, the current run next to its comparison."""
from __future__ import annotations

import streamlit as st

from app import ui
from wanda_engine.outputs import figures
from wanda_engine.store.run_store import Run

st.title("Zero-shot accuracy")
st.markdown("Accuracy on multiple-choice tasks scored by EleutherAI's **lm-eval** harness, as in the Wanda paper "
            "(its table 2): the model's answer is the choice it gives the highest log-likelihood. **acc** is the "
            "paper's metric; **acc_norm** first divides each choice's log-likelihood by its length in characters. "
            "Δ = pruned − dense, in percentage points.")
cur, cmp = ui.current_run(), ui.compare_run()
shown = [r for r in (cmp, cur) if r is not None]
runs = [r for r in shown if r.record.zeroshot]


def measured_on(run: Run) -> str:
    zs = run.record.zeroshot
    cfg = zs.config
    tasks = ", ".join(f"{t} (n={r.n})" for t, r in zs.pruned.results.items())
    limit = f"at most {cfg.limit} questions per task" if cfg.limit else "every question"
    folder = f" · task folder {cfg.task_dir}" if cfg.task_dir else ""
    dense = "dense results from the cache" if zs.dense_cached else "dense model scored in this run"
    seconds = zs.pruned.seconds
    took = f" · {ui.fmt_seconds(seconds)} for the pruned model" if seconds is not None else ""
    return (f"Run **{run.name}** — lm-eval {zs.harness or '?'}, {cfg.num_fewshot}-shot, {limit}: "
            f"{tasks}{folder} · {dense}{took}")


if not runs:
    st.info("Neither the current run nor its comparison has zero-shot results. On the **Prune** page, open "
            "*Zero-shot accuracy (lm-eval)*, choose tasks and run. The paper's tasks download their data from "
            "the Hugging Face hub; offline, give a folder of local lm-eval task files.")
else:
    if len(runs) < len(shown):
        missing = ", ".join(r.name for r in shown if r not in runs)
        st.caption(f"Without zero-shot results, left out: {missing}.")
    metric = st.radio("Metric", list(figures.ZEROSHOT_METRICS), horizontal=True, key="zs_metric",
                      format_func=lambda m: f"{m} ({figures.ZEROSHOT_METRICS[m]})")
    records = [r.record for r in runs]
    ui.chart(figures.zeroshot_bars(records, metric=metric), key="zs_bars")
    table = figures.zeroshot_table(records)
    view = table[table["metric"] == metric].drop(columns=["metric"]).copy()
    for col in ("dense", "pruned", "delta", "pruned_stderr"):
        view[col] = view[col] * 100
    if view.empty:
        st.info(f"These runs' tasks report no {metric}.")
    else:
        st.dataframe(view, hide_index=True, width="stretch", column_config={
            "dense": st.column_config.NumberColumn("dense (%)", format="%.1f"),
            "pruned": st.column_config.NumberColumn("pruned (%)", format="%.1f"),
            "delta": st.column_config.NumberColumn("Δ (points)", format="%+.1f"),
            "pruned_stderr": st.column_config.NumberColumn("± stderr (points)", format="%.1f"),
            "n": st.column_config.NumberColumn("n", format="%d", help="questions scored"),
        })
    st.download_button("Download the table (CSV)", table.to_csv(index=False), file_name="zeroshot.csv",
                       mime="text/csv", key="zs_csv", icon=":material/download:")
    for r in reversed(runs):
        st.caption(measured_on(r))
    st.caption("Image export (PNG, SVG, PDF) of this chart: **Runs & export** → *Zero-shot accuracy*.")
