"""Grids of runs on one loaded model (`grid`) and what a plan costs before it runs (`cost`).

Imports `runner` and what it imports.
"""
