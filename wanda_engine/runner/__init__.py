"""One whole run: prepare (every check that can fail on bad input) -> run directory -> dense results -> prune ->
evaluate -> speed (dense and pruned, if asked) -> save (with a model card). The CLI, the sweep and the app all call `execute.execute_run`.

execute.py    the run's steps, top to bottom
lifecycle.py  what every kind of run shares: StageClock, out-of-memory sentences, versions and time stamps, and
              `record_lifecycle`, a record in its own folder from 'running' to 'complete', 'failed' or 'cancelled'
              (run.json here, repair.json in `repair`)
dense.py      the dense model's perplexity and zero-shot results, cached per model and settings
recreate.py   a finished run's pruned model again (its saved model, or pruned anew from its record, mask checked)
score.py      an existing run scored on zero-shot tasks;  generate.py: a prompt through the dense model and runs

Imports every lower package: `core`, `config`, `store`, `inputs`, `pruning`, `evaluation`.
"""
