"""Sparsity: where the run removed weights — where the zeros fall in the runs the sidebar holds, side by side;
then per block and matrix, per output row, and across a matrix."""
from __future__ import annotations

import streamlit as st

from app import ui
from app.overview import note_without_statistics
from wanda_engine.outputs import figures
from wanda_engine.outputs.figures.catalog import outlier_matrix

st.title("Sparsity")
st.markdown("How evenly the pruning spread. First, for one matrix type in every block, the share pruned of each "
            "output row and each input channel in the runs the sidebar holds, on one colour scale: a per-matrix "
            "comparison group prunes some rows far more than others, and Wanda spares the weights of the loud input "
            "channels. Then the current run's achieved sparsity of every matrix, and one matrix up close.")
run = ui.require_current_run()
if run is not None and run.record.structure is not None:
    note_without_statistics(run)
    run = None
if run is not None:
    # a structure remover's run has no masks to compare with
    shown = [r for r in (run, ui.compare_run()) if r is not None and r.record.structure is None]
    names = list(dict.fromkeys(r.name for r in run.records()))
    if names:
        loudest = outlier_matrix(run.records())
        name = st.selectbox("Matrix type", names, key="sparsity_zeros_matrix",
                            index=names.index(loudest.name) if loudest is not None else 0,
                            help="First shown: the type of the matrix with the strongest outlier channel.")
        for r in shown:
            ui.run_caption(r)
        labels = [r.record.label() for r in shown]
        if len(set(labels)) < len(labels):  # two runs labelled alike (wanda 50% twice): their names tell them apart
            labels = [f"{label} ({r.name})" for label, r in zip(labels, shown)]
        ui.chart(figures.zeros_where(list(zip(labels, (r.records() for r in shown))), name), key="sparsity_zeros",
                 rows=2 * ui.num_blocks(run))
    st.subheader("Every matrix of the current run")
    st.metric("Achieved sparsity over all pruned matrices", f"{run.record.sparsity or 0:.2%}",
              help="Exact zeros over the decoder blocks' linear weights.")
    ui.chart(figures.sparsity_heatmap(run.records()), key="sparsity_heatmap", rows=ui.num_blocks(run))
    if run.record.request.prune.layerwise == "owl":
        st.subheader("OWL: sparsity per block")
        ui.chart(figures.owl_block_ratios(run.record.blocks, run.record.request.prune), key="sparsity_owl")
    st.subheader("One matrix")
    rec = ui.pick_matrix(run, "sparsity")
    if rec is not None:
        left, right = st.columns(2)
        with left:
            ui.chart(figures.row_sparsity(rec), key="sparsity_rows", narrow=True)
        with right:
            ui.chart(figures.density_map(rec), key="sparsity_density", narrow=True)
