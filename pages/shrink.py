"""Shrink: remove whole attention heads, MLP channels or blocks (a smaller, faster model); see what each run took
out, and every run of the model on the frontier of perplexity against measured speed-up and parameters kept."""
from __future__ import annotations

import streamlit as st

from app import forms, ui
from app.export_controls import export_controls
from app.progress import job_panel
from app.submit import ERROR, ensure_shrink_defaults, form_values, shrink_time_sentence, submit_shrink
from wanda_engine.methods import table
from wanda_engine.outputs import figures, tables
from wanda_engine.outputs.bundle import same_model_runs
from wanda_engine.outputs.figures import catalog
from wanda_engine.outputs.figures.frontier import AXES, frontier_gap, speed_protocol
from wanda_engine.store.run_store import Run

st.title("Shrink a language model")
st.markdown(
    "A model pruned to 50% unstructured zeros is exactly as large as the dense one, and on dense kernels exactly as "
    "slow: the zeros are stored and multiplied. **Structured pruning** removes whole attention heads (a KV head with "
    "the query heads that share it), MLP channels or decoder blocks, so the saved model *is* smaller and faster. "
    "**Wanda-sp** scores a channel by Wanda's |W|·‖Xⱼ‖₂ summed over its output rows, **FLAP** by how much its input "
    "fluctuates times its weights' norm (and can put the removed channels' mean back as a bias), **magnitude-sp** by "
    "the weights alone, and **block influence** (ShortGPT) removes the blocks that change their input least.")
ensure_shrink_defaults()
v = form_values()
model = v["model_text"] if v["model_kind"] != "default" else "the embedded SmolLM2-135M"
st.caption(f"Model, calibration and evaluation come from the **Prune** page: {model} · calibration {v['nsamples']} × "
           f"{v['seqlen']} tokens of {forms.CALIB_SOURCES.get(v['calib'], v['calib'])}, seed {v['seed']} · perplexity "
           f"on {forms.EVAL_SOURCES.get(v['eval_dataset'], v['eval_dataset'])}, {v['eval_windows'] or 'all'} windows × "
           f"{v['eval_seqlen']} tokens.")

# --- settings ------------------------------------------------------------------------------------------
removers = table.choices(structures=True)
c1, c2, c3 = st.columns(3, gap="large")
c1.selectbox("Method", list(removers), format_func=removers.get, key="s_method")
depth = table.get(st.session_state.s_method).removes is table.Structure.DEPTH
c1.slider("Ratio to remove", 0.05, 0.9, step=0.05, key="s_ratio",
          help="The fraction removed, counted as the target says; achieved exactly as recorded.")
c1.radio("Counted as a fraction", list(forms.TARGETS), format_func=forms.TARGETS.get, key="s_target")
c2.selectbox("Allocation", list(forms.ALLOCATIONS), format_func=forms.ALLOCATIONS.get, key="s_allocation",
             disabled=depth, help="Uniform keeps a standard config (plain from_pretrained); global lets every block's "
                                  "standardized scores compete for one budget, as FLAP does (widths differ per block).")
c2.checkbox("Bias compensation (FLAP)", key="s_bias", disabled=depth,
            help="Adds W[:, removed]·mean(x_removed) to the output projection's bias: the removed channels' average "
                 "contribution stays.")
c3.checkbox("Measure the speed beside the dense model", key="s_speed",
            help="Prefill of one evaluation window and greedy decoding with the KV cache, dense and pruned taking "
                 "turns in one process; a copy of the dense model is kept in memory meanwhile.")
c3.number_input("Tokens decoded", 1, 1024, step=8, key="s_decode_tokens", disabled=not st.session_state.s_speed)
c3.number_input("Rounds (median kept)", 1, 50, step=1, key="s_repeats", disabled=not st.session_state.s_speed)
b1, b2, b3 = st.columns([1, 1.6, 2.4])
b1.button("Shrink", type="primary", icon=":material/compress:", key="b_shrink", on_click=submit_shrink,
          args=("single",), help="Prune with the remover and settings above; the run appears below when it is done.")
b2.button("Compare every remover at this ratio", icon=":material/stacked_line_chart:", key="b_shrink_compare",
          on_click=submit_shrink, args=("compare",),
          help="Queues Wanda-sp, FLAP with bias compensation, magnitude-sp and block influence at this ratio and "
               "unstructured Wanda at 50%, each with its speed measured: the frontier below fills in.")
b3.caption(shrink_time_sentence())
if err := st.session_state.pop(ERROR, None):
    st.error(err)
job_panel()


# --- what the current run removed ----------------------------------------------------------------------
def removed_views(run: Run) -> None:
    record = run.record
    s, speed = record.structure, record.speed
    ui.run_caption(run)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Block parameters removed", f"{s.removed_fraction:.2%}", help=f"asked {s.ratio:g}, counted as {s.target}; "
              f"{s.block_params_dense - s.block_params_kept:,} of {s.block_params_dense:,}")
    m2.metric("Model parameters", f"{s.model_params_kept / 1e6:.1f} M", f"{s.model_params_kept - s.model_params_dense:,}",
              delta_color="inverse", help=f"the dense model has {s.model_params_dense:,}")
    ppl, dense = record.ppl, record.ppl_dense
    m3.metric("Perplexity", f"{ppl:.2f}" if ppl is not None else "—",
              f"{ppl - dense:+.2f} vs dense" if ppl is not None and dense is not None else None, delta_color="inverse",
              help=ui.eval_caption(record))
    if speed is not None:
        m4.metric("Prefill speed-up", f"{speed.prefill_speedup:.2f}×", help=f"ideal {speed.ideal_speedup:.2f}× "
                  f"(matmul FLOPs per token); decode {speed.decode_speedup:.2f}×")
        st.caption(f"Speed: {speed_protocol(speed)}; ideal {speed.ideal_speedup:.2f}× = the dense model's matmul "
                   f"FLOPs per token over the pruned one's. Decode {speed.decode_speedup:.2f}×.")
    else:
        m4.metric("Prefill speed-up", "—", help="this run did not measure its speed")
    st.caption(f"How heads were removed: {s.grouping}." if s.structure == "width" else "Whole decoder blocks removed.")
    for which in catalog.STRUCTURE_FIGURES:
        why = catalog.missing(which, record)
        if why:
            st.caption(f"{catalog.FIGURES[which]}: {why}.")
            continue
        fig = catalog.build_figure(which, record)
        ui.chart(fig, key=f"shrink_{which}", rows=len(s.blocks) if which == "heads_kept" else None)
        with st.expander(f"Export: {catalog.FIGURES[which].lower()}"):
            export_controls(fig, f"{run.name}-{which}", f"shrink_exp_{which}")


st.divider()
st.header("What the current run removed")
current = ui.current_run()
if current is None:
    st.info("No finished run is selected: shrink one above, then pick it as the current run in the sidebar.")
elif current.record.structure is None:
    st.info(f"The current run ({current.record.label()}) zeroes weights: it removed no heads, channels or blocks. "
            "Pick a structure remover's run in the sidebar; the frontier below shows both kinds.")
else:
    removed_views(current)

# --- the frontier: every run of the model --------------------------------------------------------------
def frontier_view(run: Run) -> None:
    model_runs = same_model_runs([run], ui.complete_runs())
    axis = st.radio("Against", list(AXES), horizontal=True, key="shrink_axis",
                    format_func=lambda a: AXES[a][1].split(" (")[0])
    count = f"{len(model_runs)} finished run{'s' * (len(model_runs) != 1)}"
    if gap := frontier_gap(model_runs, axis):  # an empty chart says nothing: say what is missing and how to get it
        st.info(f"Nothing to draw yet among the {count} of this model: {gap}. Shrink with *Measure the speed beside "
                "the dense model* ticked, or press *Compare every remover at this ratio*.")
        return
    fig = figures.frontier(model_runs, axis)
    ui.chart(fig, key="shrink_frontier")
    st.caption(f"{count} of {run.record.model.label or run.record.request.model}; a mask's zeros count as removed "
               "parameters, though they are stored and multiplied.")
    with st.expander("Export the frontier and its table"):
        export_controls(fig, f"frontier-{axis}", "shrink_exp_frontier")
        made = tables.frontier_table(model_runs)
        st.dataframe(made.frame, width="stretch")
        d1, d2, d3 = st.columns(3)
        d1.download_button("Table as LaTeX", tables.to_latex(made), file_name="frontier.tex", key="shrink_tex")
        d2.download_button("Table as Markdown", tables.to_markdown(made), file_name="frontier.md", key="shrink_md")
        d3.download_button("Table as CSV", tables.to_csv(made), file_name="frontier.csv", key="shrink_csv")
        st.caption(made.caption)
    st.caption("The same prompt through these models, side by side: the **Generate** page.")


st.header("The frontier: what each kind of pruning buys")
if current is not None:
    frontier_view(current)
else:
    st.info("The frontier draws every finished run of the current run's model.")
