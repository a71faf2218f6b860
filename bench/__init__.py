"""Benchmarks: `make bench` (`python -m bench`), each subject timed against a baseline of
the same run, and `make bench-smoke`, the same code on tiny counts."""
