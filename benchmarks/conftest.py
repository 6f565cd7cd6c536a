"""Fixtures for `pytest benchmarks/ --benchmark-only`; ACSDK_BENCH_CONFIG picks tiny (default) or small."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def bench_config() -> str:
    return os.environ.get("ACSDK_BENCH_CONFIG", "tiny")


@pytest.fixture(scope="session")
def bench_paths(bench_config):
    from benchmarks.configs import checkpoint, engines

    return checkpoint(bench_config), engines(bench_config)


@pytest.fixture(scope="session")
def synthesizers(bench_paths):
    from benchmarks.report import backends_for

    ckpt, edir = bench_paths
    return {name: make() for name, make in backends_for(ckpt, edir).items()}
