"""Masks: how far the run's mask differs from the other method's, per matrix and weight by weight."""
from __future__ import annotations

import streamlit as st

from app import ui
from app.overview import note_without_statistics, outlier_record
from wanda_engine.outputs import figures

st.title("Masks")
st.markdown("Which weights the run pruned compared with the reference method on the *same* weights "
            "(magnitude for a Wanda run, Wanda for a magnitude run), each mask chosen in its own method's group "
            "(magnitude per matrix, Wanda per output row: in a Wanda run's records, the magnitude mask is the mask "
            "of the magnitude run at the same settings): the overlap of the two pruned sets per matrix, and a crop "
            "of one matrix with each weight coloured by who pruned it, next to its input-channel norms — the "
            "columns the two methods disagree on are the outlier channels.")
run = ui.require_current_run()
if run is not None and run.record.structure is not None:  # a structure remover's run: no matrices to show
    note_without_statistics(run)
elif run is not None:
    ui.run_caption(run)
    note_without_statistics(run)
    ui.chart(figures.overlap_heatmap(run.records()), key="masks_overlap", rows=ui.num_blocks(run))
    st.subheader("One matrix")
    rec = ui.pick_matrix(run, "masks", default=outlier_record(run))
    if rec is not None:
        # one above the other: both share the input-channel axis, and their titles need the full width
        ui.chart(figures.mask_crop(rec), key="masks_crop")
        ui.chart(figures.channel_norms(rec), key="masks_channels")
        if ov := rec.overlap:
            st.caption(f"Pruned by both: {ov.both:.1%} of the weights · only by {rec.mask_label(rec.method)}: "
                       f"{ov.only_method:.1%} · only by {rec.mask_label(ov.reference)}: {ov.only_reference:.1%} · "
                       f"Jaccard {ov.jaccard:.2f} · {ui.calib_caption(run.record)}")
