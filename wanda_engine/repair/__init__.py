"""Repair of a pruned run, the zeros kept: sparse full fine-tuning and LoRA with a masked merge.

config.py  RepairConfig, RepairRequest (torch-free)       record.py  RepairRecord in repairs/<name>/repair.json (torch-free)
events.py  RepairStep, RepairEval                          estimate.py  estimate_seconds (torch-free, for the page)
run.py     execute_repair: validate, start, train, evaluate, write the record
start.py   the pruned model a repair starts from (saved, or re-created and checked against the mask checksum)
train.py   the training loop (sparse fine-tuning keeps every pruned weight at exactly zero)
lora.py    peft adapters and the masked merge W + (B A · scaling) ⊙ (W ≠ 0)

Imports `runner` (the lifecycle a repair shares with a run) and what it imports.
"""
