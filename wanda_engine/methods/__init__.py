"""The pruning methods and their math: the one table of methods (`table`: what each method is, accepts and looks
like), scores per weight (magnitude, Wanda, RIA), mask selectors (per row, per matrix, N:M, Wanda's adaptive
alpha, protected channels) and SparseGPT's solver.

Pure tensor functions of a weight and its input statistics; imports only `core`. The table is torch-free and
names the math lazily. The pipeline (`pruning`) calls them; nothing here knows about blocks, models or runs.
"""
