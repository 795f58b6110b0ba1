"""Runs on disk, torch-free: run.json as one typed record (`run_record`), the per-matrix records
(`matrix_records`), its zero-shot results (`zeroshot_record`), what a structure remover took out and the measured
speed (`shrink_record`), the run folders and their atomic writes (`run_store`), the command that reproduces a run
(`reproduce`), a saved model's card (`model_card`) and a prompt continued side by side (`generation_record`).

Imports `core` and `config` only, so the app's pages and the figures can read every run without torch.
"""
