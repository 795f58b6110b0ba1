"""Measuring a model: perplexity over non-overlapping windows (the reference's protocol), zero-shot accuracy
with lm-eval (its task discovery is torch-free, in `tasks`), and the speed of a pruned model beside the dense one
(`speed`: prefill and decode tokens/s, interleaved in one process, and the ideal speed-up by matmul FLOPs).

Imports `core`, `config`, `store` and `inputs`.
"""
