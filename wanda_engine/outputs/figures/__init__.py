"""Records → plotly figures: pure functions, no file reading, no torch, no Streamlit.

Every figure says in its title what was measured (which matrix, method, comparison group; for
perplexity the dataset, window length and token count). `figure_data` turns any of them back into
a long-form table for CSV/JSON export. One module per subject: `matrix` (one pruned matrix), `run`
(every matrix and block of one run), `zeros` (where each run's zeros fall, runs side by side), `perplexity`,
`zeroshot`, `explain` (the Explain page's steps), `repair`, `structure` (what a structure remover took out),
`frontier` (perplexity against measured speed-up and parameters kept, every kind of pruning side by side), `style`
(shared look), `ticks` (tick labels that fit their axis), `data`.
"""
from __future__ import annotations

from .data import figure_data
from .explain import explain_cuts, explain_error_share, explain_outliers, explain_protect, explain_toy
from .frontier import frontier
from .matrix import channel_norms, density_map, mask_crop, metric_histograms, row_sparsity
from .perplexity import perplexity_bars, perplexity_vs_nsamples, perplexity_vs_sparsity
from .repair import repair_bars, repair_loss, repair_progress, repair_summary
from .run import block_progress, overlap_heatmap, owl_block_ratios, sparsity_heatmap
from .structure import heads_kept, kept_per_block, removed_blocks, structure_scores
from .style import PLOTLY_CONFIG
from .zeroshot import ZEROSHOT_METRICS, zeroshot_bars, zeroshot_table
from .zeros import zeros_where

__all__ = [
    "PLOTLY_CONFIG",
    "ZEROSHOT_METRICS",
    "block_progress",
    "channel_norms",
    "density_map",
    "explain_cuts",
    "explain_error_share",
    "explain_outliers",
    "explain_protect",
    "explain_toy",
    "figure_data",
    "frontier",
    "heads_kept",
    "kept_per_block",
    "mask_crop",
    "metric_histograms",
    "overlap_heatmap",
    "owl_block_ratios",
    "perplexity_bars",
    "perplexity_vs_nsamples",
    "perplexity_vs_sparsity",
    "removed_blocks",
    "repair_bars",
    "repair_loss",
    "repair_progress",
    "repair_summary",
    "row_sparsity",
    "sparsity_heatmap",
    "structure_scores",
    "zeroshot_bars",
    "zeroshot_table",
    "zeros_where",
]
