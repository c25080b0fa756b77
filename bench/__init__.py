"""The liveboard benchmark suite: see docs/benchmarks.md and ``python -m bench.run --help``."""
