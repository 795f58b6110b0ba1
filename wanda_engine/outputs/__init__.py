"""What a user carries away, torch-free: figures (pure functions from records to plotly figures), their export
at screen or print size, paper tables, bundles (Export all) and the Explain page's argument.

Imports `core`, `config`, `store` and the repair's record types; never the pipeline or torch.
"""
