"""wanda_engine: prune causal LMs layer by layer with Wanda, magnitude, RIA or SparseGPT, or make them smaller by
removing whole heads, MLP channels or blocks (Wanda-sp, FLAP, magnitude-sp, block influence), and record why.

No Streamlit here: the app and the CLI are thin faces over this package. Its packages, from the bottom up (each may
import only those above it in this list; tests/test_code_rules.py holds the order):

    core        the shared words: errors, events, the stage table, statuses, parsing of typed values, the palette
    methods     the one table of methods, and their math: scores, selectors, SparseGPT's solver, structure scores
    config      validated settings: PruneConfig, EvalConfig, ZeroShotConfig, SpeedConfig, RunRequest, ...
    store       runs on disk, torch-free: run.json's typed record, the per-matrix records, the run store
    inputs      the model, its anatomy (blocks, linears, heads, channels), offloading, the device, texts -> token
                windows, the loader of a model whose blocks differ in width
    pruning     the one layer-by-layer loop: capture -> per block calibrate, score, select (or remove), record, propagate
    evaluation  perplexity, zero-shot accuracy, and the dense and pruned model's measured speed
    runner      one whole run, and the lifecycle every kind of run shares
    sweep       grids of runs on one loaded model, and what a plan costs
    repair      fine-tuning a pruned run with its zeros kept
    outputs     figures, their export at print size, paper tables, bundles, the Explain page's argument
    cli         python -m wanda_engine prune | sweep | export | repair | generate

Follow a run: cli.main (or the app's worker) -> runner.execute.execute_run -> pruning.pipeline.prune_model ->
store.run_record.RunRecord in run.json -> outputs.figures -> the app's pages.
"""
import os as _os

# Measured on the 2-vCPU machines this project runs on: with OpenMP's default wait policy, every
# elementwise op on a 1M-element tensor took ~8 ms with 2 threads versus ~0.7 ms with PASSIVE (threads
# sleep at once instead of spinning against the main thread); it cut the per-block mask+record time
# 4.7x. Only takes effect if set before torch is first imported; an explicit setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
