"""Benchmarks that write the rows of `benchmarks/RESULTS.md`. Run each from the repository root with the project
venv's Python, `python -m benchmarks.NAME` (workers run in the reference venv too: keep this file import-free)."""
