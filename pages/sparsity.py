"""Sparsity: where the run removed weights — per block and matrix, per output row, and across a matrix."""
from __future__ import annotations

import streamlit as st

from app import ui
from wanda_engine.outputs import figures

st.title("Sparsity")
st.markdown("How evenly the pruning spread: the achieved sparsity of every matrix, then for one matrix the "
            "fraction pruned in each output row and a down-sampled map of which regions kept their weights.")
run = ui.require_current_run()
if run is not None:
    ui.run_caption(run)
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
