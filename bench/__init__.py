"""Benchmarks, each a script run from the repository root with `uv run python -m bench.NAME`
(infer, floor, prep, train); each prints its ratios against a baseline measured in the same run."""
