"""Benchmark scripts: run them from the repository root, e.g. `python -m benchmarks.model_zoo`."""
