"""One whole run: prepare (every check that can fail on bad input) -> run directory -> dense results -> prune ->
evaluate -> save. The CLI, the sweep and the app all call `execute.execute_run`.

Imports every lower package: `core`, `config`, `store`, `inputs`, `pruning`, `evaluation`.
"""
