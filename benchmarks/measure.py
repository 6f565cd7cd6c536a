"""Timing primitives: repeated measurements with spread, and per-component call timing for overhead."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch

from runtime import Engine


@dataclass
class Stats:
    median: float
    p25: float
    p75: float
    min: float
    max: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], warmup: int = 1, repeat: int = 5) -> Stats:
    """Median and quartiles of `repeat` timed calls after `warmup` untimed ones (GPU work synchronised)."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Stats(statistics.median(times), q[0], q[2], min(times), max(times), len(times))


class TimedEngine(Engine):
    """Wraps an engine and adds each call's duration to a shared ledger (for the runtime's overhead)."""

    def __init__(self, inner: Engine, ledger: dict[str, list[float]]):
        self.inner = inner
        self.ledger = ledger
        self.name = inner.name
        self.backend = inner.backend
        self.input_names = inner.input_names
        self.output_names = inner.output_names

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        _sync()
        t0 = time.perf_counter()
        out = self.inner.run(inputs)
        _sync()
        self.ledger[self.name].append(time.perf_counter() - t0)
        return out


def instrument(engines: dict[str, Engine]) -> dict[str, list[float]]:
    """Wrap every engine of a Synthesizer in place; returns the ledger the wrappers fill."""
    ledger: dict[str, list[float]] = defaultdict(list)
    for key, engine in list(engines.items()):
        engines[key] = TimedEngine(engine, ledger)
    return ledger
