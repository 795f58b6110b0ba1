"""Measuring a model: perplexity over non-overlapping windows (the reference's protocol) and zero-shot accuracy
with lm-eval (its task discovery is torch-free, in `tasks`).

Imports `core`, `config`, `store` and `inputs`.
"""
