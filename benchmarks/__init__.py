"""Benchmarks of the harness against the bare NeMo flow it drives: `python -m benchmarks.<name> [--smoke]`.

Each prints its figures and, last, the ratio against its target; results live in benchmarks/RESULTS.md.
"""
