"""Sparsity: where the run removed weights — per block and matrix, per output row, and across a matrix."""
from __future__ import annotations

import streamlit as st

from app import ui

st.title("Sparsity")
st.markdown("How evenly the pruning spread: the achieved sparsity of every matrix, then for one matrix the "
            "fraction pruned in each output row and a down-sampled map of which regions kept their weights.")
run = ui.require_current_run()
figs = ui.figures()
if run is not None and figs is not None:
    ui.run_caption(run)
    st.metric("Achieved sparsity over all pruned matrices", f"{run.meta.get('sparsity', 0):.2%}",
              help="Exact zeros over the decoder blocks' linear weights.")
    ui.chart(figs.sparsity_heatmap(run.records()), key="sparsity_heatmap", rows=ui.num_blocks(run))
    if (run.meta.get("config") or {}).get("layerwise") == "owl":
        st.subheader("OWL: sparsity per block")
        ui.chart(figs.owl_block_ratios(run.meta.get("blocks") or [], run.meta.get("config")), key="sparsity_owl")
    st.subheader("One matrix")
    rec = ui.pick_matrix(run, "sparsity")
    if rec is not None:
        left, right = st.columns(2)
        with left:
            ui.chart(figs.row_sparsity(rec), key="sparsity_rows", narrow=True)
        with right:
            ui.chart(figs.density_map(rec), key="sparsity_density", narrow=True)
