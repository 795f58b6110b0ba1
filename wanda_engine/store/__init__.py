"""Runs on disk, torch-free: run.json as one typed record (`run_record`), the per-matrix records
(`matrix_records`), its zero-shot results (`zeroshot_record`), the run folders and their atomic writes
(`run_store`), and the command that reproduces a run (`reproduce`).

Imports `core` and `config` only, so the app's pages and the figures can read every run without torch.
"""
