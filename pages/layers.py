"""Layers: one matrix of the current run — both metrics' score histograms and its input-channel norms."""
from __future__ import annotations

import streamlit as st

from app import ui
from app.overview import note_without_statistics, outlier_record
from wanda_engine.outputs import figures
from wanda_engine.outputs.figures.ticks import significant

st.title("Layers")
st.markdown("For one weight matrix: how the Wanda score |W|·‖Xⱼ‖₂ and the magnitude |W| split its weights into kept "
            "and pruned, and the activation norms of the input channels that make the two disagree. It opens on the "
            "matrix with the most lopsided input channels (largest max/median norm).")
run = ui.require_current_run()
if run is not None and run.record.structure is not None:  # a structure remover's run: no matrices to show
    note_without_statistics(run)
elif run is not None:
    ui.run_caption(run)
    note_without_statistics(run)
    rec = ui.pick_matrix(run, "layers", default=outlier_record(run))
    if rec is not None:
        masks = " and ".join(rec.mask_label(m) for m in rec.hist)
        st.caption(f"`{rec.full_name}` · shape {rec.shape[0]}×{rec.shape[1]} (out × in) · run: {rec.mask_label(rec.method)}"
                   f" · the histograms split each metric by its own mask: {masks} · achieved sparsity {rec.sparsity:.2%}"
                   + (f" · proxy error Σ ΔW²·‖Xⱼ‖₂² / Σ W²·‖Xⱼ‖₂² = {significant(rec.proxy_error)}"
                      if rec.proxy_error is not None else ""))
        ui.chart(figures.metric_histograms(rec), key="layers_hist")
        ui.chart(figures.channel_norms(rec), key="layers_channels")
        st.caption(ui.calib_caption(run.record))
