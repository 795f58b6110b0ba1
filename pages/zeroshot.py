"""Zero-shot: accuracy of the dense and pruned models, the current run next to its comparison; the runs shown can be
scored here, on the project's own offline task or on lm-eval's."""
from __future__ import annotations

import streamlit as st

from app import ui
from app.progress import job_panel
from app.submit import ERROR, SCORE_NOTE, submit_scores
from wanda_engine.config import PAPER_TASKS
from wanda_engine.evaluation import lastword
from wanda_engine.evaluation.tasks import LASTWORD_TASK
from wanda_engine.outputs import figures
from wanda_engine.store.run_store import Run

st.title("Zero-shot accuracy")
st.markdown("Accuracy on tasks scored by EleutherAI's **lm-eval** harness, as in the Wanda paper (its table 2): for "
            "a multiple-choice task the model's answer is the choice it gives the highest log-likelihood; for "
            f"**{LASTWORD_TASK}** it must predict a passage's last word. **acc** is the paper's metric; **acc_norm** "
            "first divides each choice's log-likelihood by its length in characters. Δ = pruned − dense, in "
            "percentage points.")
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
    later = zs.extra.get("scored_later") or []
    how = "".join(f" · {', '.join(s['tasks'])} scored after the run on its pruned model "
                  f"({s['pruned_model']}; mask {'checked' if s.get('mask_verified') else 'not verified'})"
                  for s in later)
    return (f"Run **{run.name}** — lm-eval {zs.harness or '?'}, {cfg.num_fewshot}-shot, {limit}: "
            f"{tasks}{folder} · {dense}{took}{how}")


def score_controls() -> None:
    """Score the runs shown: the dense and the pruned model of each, their results added to the run."""
    st.subheader("Score the runs shown")
    st.caption(lastword.said() + " The paper's tasks download their data from the Hugging Face hub: offline they "
               "are refused within seconds.")
    c1, c2 = st.columns([2, 1])
    tasks = c1.multiselect("Tasks", [LASTWORD_TASK, *PAPER_TASKS], default=[LASTWORD_TASK], key="zs_score_tasks")
    limit = c2.number_input("Questions per task (0 = all)", 0, 1_000_000, value=50, step=10, key="zs_score_limit",
                            help="A limit makes a quick estimate; the first questions of each task are scored.")
    names = " and ".join(r.name for r in shown)
    st.button(f"Score {names}", key="zs_score", icon=":material/quiz:", disabled=not (shown and tasks),
              on_click=submit_scores, args=(shown, tuple(tasks), int(limit) or None),
              help="Each run's pruned model is its saved model, or re-created from its record with its mask checked "
                   "against the run's checksum; the dense model's results are cached per model and task settings.")
    if err := st.session_state.pop(ERROR, None):
        st.error(err)
    if note := st.session_state.pop(SCORE_NOTE, None):
        st.caption(f"Left out: {note}")
    job_panel()


def results() -> None:
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


if not shown:
    st.info("No finished run is selected. Start one on the **Prune** page (try *Compare magnitude vs Wanda*), then "
            "score it here.")
else:
    if runs:
        results()
    else:
        who = f"{shown[0].name} has no" if len(shown) == 1 else f"Neither {shown[0].name} nor {shown[1].name} has"
        st.info(f"{who} zero-shot results yet: score {'it' if len(shown) == 1 else 'them'} below (the project's own "
                f"task, {LASTWORD_TASK}, works offline), or choose tasks on the **Prune** page before a run.")
    score_controls()
