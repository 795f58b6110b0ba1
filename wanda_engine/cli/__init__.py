"""python -m wanda_engine prune | sweep | export | repair | generate: argument parsing and a progress bar fed by events.

The top of the import graph: it may import every package; nothing imports it.
"""
