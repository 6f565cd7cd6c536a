"""Latency benchmarks (pytest-benchmark): `pytest benchmarks/ --benchmark-only`."""
