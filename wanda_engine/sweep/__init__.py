"""Grids of runs on one loaded model (`grid`) and what a plan costs before it runs (`cost`).

Imports `runner` and what it imports; `grid` imports the runner and the model loader (torch) only when a sweep
runs, so planning, listing and costing sweeps stay torch-free for the app's server.
"""
