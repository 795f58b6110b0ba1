"""The one layer-by-layer loop (`pipeline.prune_model`): capture block 0's inputs, then per block calibrate ->
score -> select -> record -> propagate, emitting events. What each kind shares per block is in `blocks`; the
structure removers' step (remove heads, channels or blocks physically) in `structure`, their records in
`shrink_records`. Also what each pruned matrix leaves behind (`recording`), the checks over weights and joining
torch.distributed.

Imports `core`, `methods`, `config`, `store` (the record types) and `inputs` (model anatomy, offload).
"""
