"""Runs & export: every run with its settings and status; delete, rename; export figures and their data."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import ui
from app.progress import watch
from app.runs_table import FIGURES, MATRIX_FIGURES, build_figure, runs_table
from wanda_engine.config import EvalConfig, PruneConfig
from wanda_engine.errors import ConfigError, EngineError
from wanda_engine.runner import RunRequest
from wanda_engine.runs import safe_file_stem

st.title("Runs & export")
runner = ui.job_runner()
active = runner.current()
active_name = active["run_name"] if active else None
runs = ui.all_runs()

st.subheader("All runs")
if not runs:
    st.info(f"No runs yet in `{ui.store().root}`. Start one on the Prune page.")
else:
    df = runs_table(runs, active_name)
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
st.subheader("Export a figure of the current run")
run = ui.require_current_run()
figs = ui.figures()
if run is not None and figs is not None:
    ui.run_caption(run)
    c1, c2 = st.columns([2, 3])
    which = c1.selectbox("Figure", list(FIGURES), format_func=FIGURES.get, key="export_figure")
    record = None
    if which in MATRIX_FIGURES:
        with c2:
            record = ui.pick_matrix(run, "export")
    fig = build_figure(which, run, ui.compare_run(), record, ui.complete_runs())
    ui.chart(fig, key="export_preview")
    try:
        from wanda_engine import export as exporter
        formats = list(exporter.FORMATS)
    except ImportError as e:
        exporter, formats = None, []
        st.info(f"Image export is not available yet: wanda_engine.export could not be imported ({e}).")
    stem = safe_file_stem(f"{run.name}-{which}" + (f"-b{record.block}-{record.name}" if record is not None else ""))
    c1, c2, c3, c4 = st.columns(4)
    fmt = c1.selectbox("Format", formats or ["png"], key="export_fmt", disabled=exporter is None, format_func=str.upper)
    width = c2.number_input("Width (px)", 200, 4000, 1000, step=50, key="export_w")
    height = c3.number_input("Height (px)", 150, 4000, 600, step=50, key="export_h")
    scale = c4.number_input("Scale", 0.5, 8.0, 2.0, step=0.5, key="export_scale",
                            help="Pixel multiplier for PNG; vector formats ignore it.")
    spec = (run.name, which, record.key if record is not None else None, fmt, int(width), int(height), float(scale))
    rendered = st.session_state.get("_export")
    b1, b2, b3, b4 = st.columns(4)
    if b1.button(f"Render {fmt.upper()}", key="b_render", disabled=exporter is None):
        try:
            with st.spinner("Rendering with Kaleido…"):
                try:
                    ui.export_server()  # a kept-open browser makes later exports fast
                except Exception:  # noqa: BLE001 - export_figure then starts a browser for this one export
                    pass
                data = exporter.export_figure(fig, fmt, width=int(width), height=int(height), scale=float(scale))
            st.session_state["_export"] = rendered = (spec, data)
        except Exception as e:  # noqa: BLE001 - Kaleido or its browser: show, don't crash the page
            st.error(f"Export failed: {e}")
    if rendered is not None and rendered[0] == spec:
        b2.download_button(f"Download {fmt.upper()} ({len(rendered[1]) / 1024:.0f} KB)", rendered[1],
                           file_name=f"{stem}.{fmt}", mime=exporter.MIME.get(fmt, "application/octet-stream"),
                           on_click="ignore", key="dl_image", type="primary")
    data = figs.figure_data(fig)
    b3.download_button("Data as CSV", data.to_csv(index=False), file_name=f"{stem}.csv", mime="text/csv",
                       on_click="ignore", key="dl_csv")
    b4.download_button("Data as JSON", data.to_json(orient="records", indent=1, default_handler=str),
                       file_name=f"{stem}.json", mime="application/json", on_click="ignore", key="dl_json")
    with st.expander("The data behind this figure"):
        st.dataframe(data, hide_index=True, width="stretch")

    # --- saving the pruned model: runs keep records, not weights; re-run with a folder to save into ---
    st.subheader("Save the pruned model")
    st.caption("A run keeps its records, not the pruned weights. This queues the same run again (same model, "
               "method, calibration windows and seed, so the same mask) and saves the pruned model with "
               "`save_pretrained` into a folder.")
    with st.form("save_model"):
        folder = st.text_input("Folder to save into", value=str(ui.store().root / ".saved-models" / run.name), key="save_folder")
        go = st.form_submit_button("Re-run and save")
    if go:
        try:
            path = Path(folder.strip()).expanduser()
            if not folder.strip():
                raise ConfigError("enter a folder to save the pruned model into")
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise ConfigError(f"{str(path)!r} already exists and is not an empty folder")
            cfg = run.config
            ev = EvalConfig(**cfg["eval"]) if cfg.get("eval") else None
            req = RunRequest(model=cfg.get("model", "default"), prune=PruneConfig.from_dict(cfg), eval=ev,
                             dtype=cfg.get("dtype", "float32"), save_model=str(path.resolve()))
            job = runner.submit(req, owner=ui.session_id(), label=f"{PruneConfig.from_dict(cfg).label} → save")
            watch([job.id], "single")
            st.success(f"Queued; the model will be saved in {path.resolve()}. Progress is in the sidebar.")
        except (EngineError, TypeError) as e:
            st.error(str(e))
