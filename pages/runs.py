"""Runs & export: every run with its settings and status; delete, rename; export figures and their data."""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from app import ui
from app.bundle_controls import export_all_controls
from app.export_controls import export_controls
from app.progress import watch
from app.runs_table import build_figure, runs_table
from wanda_engine.outputs.bundle import build_bundle, same_model_runs
from wanda_engine.core.errors import ConfigError, EngineError
from wanda_engine.outputs.figures import catalog
from wanda_engine.outputs.figures.catalog import FIGURES, MATRIX_FIGURES
from wanda_engine.store.run_store import Run

st.title("Runs & export")
runner = ui.job_runner()
active = runner.current()
active_name = active.run_name if active else None
runs = ui.all_runs()

st.subheader("All runs")
if not runs:
    st.info(f"No runs yet in `{ui.store().root}`. Start one on the Prune page.")
else:
    df = runs_table(runs)
    st.dataframe(df, hide_index=True, width="stretch",
                 column_config={"perplexity": st.column_config.NumberColumn(format="%.2f"),
                                "dense ppl": st.column_config.NumberColumn(format="%.2f"),
                                "achieved": st.column_config.NumberColumn(format="%.4f")})
    st.caption(f"Stored in `{ui.store().root}`. Runs that did not finish are marked and never shown as results; "
               "perplexity is listed only for complete runs.")

    with st.expander("Delete or rename a run"):
        names = [r.name for r in runs]
        target = st.selectbox("Run", names, key="manage_run")
        c1, c2 = st.columns(2)
        new_name = c1.text_input("New name", key="manage_new_name", placeholder="letters, digits, . _ -")
        if c1.button("Rename", key="b_rename"):
            try:
                if target == active_name:
                    raise EngineError("this run is still being written; rename it after it finishes")
                ui.store().rename(target, new_name.strip())
                for key in (ui.CURRENT, ui.COMPARE):
                    if st.session_state.get(key) == target:
                        ui.select_runs(**{"current" if key == ui.CURRENT else "compare": new_name.strip()})
                st.success(f"Renamed {target} to {new_name.strip()}.")
                st.rerun()
            except EngineError as e:
                st.error(str(e))
        confirm = c2.checkbox("Yes, delete it for good", key="manage_confirm")
        if c2.button("Delete", key="b_delete", disabled=not confirm, type="primary"):
            try:
                if target == active_name:
                    raise EngineError("this run is still being written; cancel it first")
                ui.store().delete(target)
                st.rerun()
            except EngineError as e:
                st.error(str(e))

# --- export -------------------------------------------------------------------------------------------
def save_again(run: Run, folder: str) -> None:
    """Queue `run` again with a folder (inside the store's saved-models folder) to save the pruned model in."""
    path = ui.store().saved_model_path(folder)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{str(path)!r} already exists and is not an empty folder")
    # the same request, so the same mask; but never a repository's own code, and no zero-shot scoring again
    request = replace(run.record.request, save_model=str(path), name=None, trust_remote_code=False, zeroshot=None)
    job = runner.submit(request, owner=ui.session_id(), label=f"{run.record.label()} → save")
    watch([job.id], "single")
    st.success(f"Queued; the model will be saved in {path}. Progress is in the sidebar.")


def figure_preview(run: Run, compare: Run | None) -> None:
    """The catalog's figures this run can draw (the others named, with why), the chosen one and its export."""
    without = {w: catalog.missing(w, run.record, run.records(), compare=compare.record if compare else None)
               for w in FIGURES}
    c1, c2 = st.columns([2, 3])
    which = c1.selectbox("Figure", [w for w in FIGURES if not without[w]], format_func=FIGURES.get,
                         key="export_figure")
    if any(without.values()):
        c1.caption("Not drawn for this run: " + "; ".join(f"{FIGURES[w].lower()} ({why})"
                                                            for w, why in without.items() if why) + ".")
    record = None
    if which in MATRIX_FIGURES:
        with c2:
            record = ui.pick_matrix(run, "export")
        if record is None or catalog.missing(which, run.record, matrix=record):
            st.info(f"{FIGURES[which]}: " + (catalog.missing(which, run.record, matrix=record) if record else
                                             "pick a matrix") + ".")
            return
    fig = build_figure(which, run, compare, record, ui.complete_runs())
    ui.chart(fig, key="export_preview")
    data = export_controls(fig, f"{run.name}-{which}" + (f"-b{record.block}-{record.name}" if record else ""), "export")
    with st.expander("The data behind this figure"):
        st.dataframe(data, hide_index=True, width="stretch")


st.subheader("Export a figure of the current run")
run = ui.require_current_run()
if run is not None:
    ui.run_caption(run)
    figure_preview(run, ui.compare_run())

    # --- export all: every figure, the tables, the windows and the reproducibility card in one .zip ---
    st.subheader("Export all")
    compare = ui.compare_run()
    bundled = [run] + ([compare] if compare is not None and compare.complete and compare.name != run.name else [])
    st.caption(("The current and the compare run, side by side and each on its own" if len(bundled) > 1 else
                "The current run (pick a compare run in the sidebar to bundle a comparison)")
               + ": every figure that has data at print size (the rest named in the card), the data behind each, the "
               "tables as LaTeX / Markdown / CSV, the calibration windows and REPRODUCE.md, with the command that "
               "re-creates each run bit for bit.")
    export_all_controls("-vs-".join(r.name for r in bundled), "export_all", lambda **kw: build_bundle(
        bundled, model_runs=same_model_runs(bundled, ui.complete_runs()), **kw))

    # --- saving the pruned model: runs keep records, not weights; re-run with a folder to save into ---
    st.subheader("Save the pruned model")
    st.caption("A run keeps its records, not the pruned weights. This queues the same run again (same model, "
               "method, calibration windows and seed, so the same mask) and saves the pruned model with "
               f"`save_pretrained` into a folder inside `{ui.store().saved_models_dir}`.")
    with st.form("save_model"):
        folder = st.text_input("Folder to save into", value=str(ui.store().saved_models_dir / run.name),
                               key="save_folder")
        go = st.form_submit_button("Re-run and save")
    if go:
        try:
            save_again(run, folder)
        except EngineError as e:
            st.error(str(e))
