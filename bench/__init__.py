"""Benchmarks: `make bench` (`python -m bench`) and `make bench-smoke` (docs/PERFORMANCE.md)."""
