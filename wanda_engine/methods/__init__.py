"""The pruning methods and their math: the one table of methods (`table`: what each method is, accepts and looks
like), scores per weight (magnitude, Wanda, RIA), mask selectors (per row, per matrix, N:M, Wanda's adaptive
alpha, protected channels), SparseGPT's solver, and the structure removers' scores and counts (`structure`: per input
channel of an output projection, per KV group, per block; FLAP's standardization and global budget).

Pure tensor functions of a weight and its input statistics; imports only `core`. The table is torch-free and
names the math lazily. The pipeline (`pruning`) calls them; nothing here knows about blocks, models or runs.
"""
