"""Measuring a model: perplexity over non-overlapping windows (the reference's protocol), zero-shot accuracy
with lm-eval (its task discovery is torch-free, in `tasks`), the speed of a pruned model beside the dense one
(`speed`: prefill and decode tokens/s, interleaved in one process, and the ideal speed-up by matmul FLOPs), and a
prompt continued, timed (`generate`: greedy or seeded sampling with the KV cache).

Imports `core`, `config`, `store` and `inputs`.
"""
