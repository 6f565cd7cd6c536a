"""`backend="auto"` on a CPU: per component, whichever of OpenVINO and ONNX Runtime is faster *here*.

Which is faster depends on the CPU and the component, not on a fixed order: on an AVX2-only AMD EPYC OpenVINO runs
the small config's UNet fastest but its VAE encoder 3.4x and decoder 1.6x slower than ONNX Runtime
(`python -m benchmarks.report --config small` there). So each component is timed once on both backends at its
profile's usual shape (one warm-up, then the median of a few calls; ONNX Runtime must be 15 % faster to displace
OpenVINO, the default), per host and engine dir, and the result is
cached in a JSON file beside OpenVINO's model cache (re-measured when acsdk, OpenVINO or ONNX Runtime change).
`Synthesizer.info()["backend_choice"]` and `acsdk info` show the numbers.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path

import torch

from runtime import Engine
from runtime.dtypes import TORCH_DTYPES
from runtime.errors import ACSDKError
from runtime.files import atomic_write
from runtime.process import return_freed_memory

from ..version import __version__

log = logging.getLogger(__name__)

CHOICE_FILE = "backend_choice.json"
CPU_BACKENDS = ("openvino", "onnxruntime")
CALLS = 3  # timed calls per backend, after one warm-up call (which also compiles OpenVINO's static shape)
TIMED_SECONDS = 2.0  # ... or fewer, once the timed calls add up to this
# ONNX Runtime replaces OpenVINO only when it is this much faster: close calls keep one answer from run to run (the
# backends differ in the last bits, and processes measuring separately should pick alike; pass an explicit backend
# where outputs must be byte-identical across machines).
MARGIN = 1.15


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def sample_feed(entry: Mapping) -> dict[str, torch.Tensor]:
    """Inputs at the profile's usual ("opt") shapes, with values of the kind each input takes."""
    gen = torch.Generator().manual_seed(0)
    feed = {}
    for spec in entry["inputs"]:
        shape = entry["profile"][spec["name"]]["opt"] if spec["name"] in entry.get("profile", {}) else spec["shape"]
        dtype = TORCH_DTYPES[spec["dtype"]]
        kind = spec.get("sample", "normal")
        if kind.startswith("ids") or kind == "ones":
            t = torch.ones(shape, dtype=dtype) if kind == "ones" else torch.zeros(shape, dtype=dtype)
        elif kind == "timestep":
            t = torch.full(shape, 500.0, dtype=dtype)
        elif kind == "scale":
            t = torch.ones(shape, dtype=dtype)
        elif kind == "unit":
            t = (torch.rand(shape, generator=gen) * 2 - 1).to(dtype)
        else:
            t = torch.randn(shape, generator=gen).to(dtype)
        feed[spec["name"]] = t
    return feed


def time_engine(engine: Engine, feed: Mapping[str, torch.Tensor]) -> float:
    """Median seconds per call, after a warm-up call: CALLS calls, or fewer once they add up to TIMED_SECONDS (a
    real-size UNet call takes seconds; one of them is timed well enough, and a first load does not wait minutes)."""
    engine.run(feed)
    times: list[float] = []
    while len(times) < CALLS and sum(times) < TIMED_SECONDS:
        t0 = time.perf_counter()
        engine.run(feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class BackendChoice:
    """The measured CPU backend order per component of one engine dir on this host (see the module docstring)."""

    def __init__(self, cache: Path):
        self.file = cache / CHOICE_FILE
        self.key = {"acsdk": __version__, **{b: _version(b) for b in ("openvino", "onnxruntime", "onnxruntime-gpu")}}
        self.records: dict[str, dict] = {}
        try:
            stored = json.loads(self.file.read_text())
            if stored.get("versions") == self.key:
                self.records = dict(stored.get("components", {}))
        except (OSError, ValueError, AttributeError):
            pass  # no cache yet, or an unreadable one: measure again

    def pending(self, components: Mapping[str, Mapping]) -> bool:
        """Whether any of these components (name -> manifest entry) has yet to be timed here."""
        return any(f"{n}@{e['precision']}" not in self.records for n, e in components.items())

    def order(
        self, name: str, precision: str, open_engine: Callable[[str], Engine], entry: Mapping
    ) -> tuple[list[str], dict[str, str], Engine | None]:
        """(the CPU backends for `name` at `precision`, fastest first; {backend: why} for those that could not run
        it; the fastest one's engine when it was measured now, kept open so that it is not opened twice). Measured
        now unless cached; a measurement in which a backend failed is not cached."""
        key = f"{name}@{precision}"
        record = self.records.get(key)
        winner = None
        if record is None:
            record, winner = self._measure(name, open_engine, entry)
            self.records[key] = record
            if not record["failed"]:
                self._save()
        else:
            record = {**record, "cached": True}
            self.records[key] = record
        return list(record["order"]), dict(record["failed"]), winner

    def _measure(self, name: str, open_engine: Callable[[str], Engine], entry: Mapping) -> tuple[dict, Engine | None]:
        """Time each CPU backend, one engine held at a time. The usual winner (OpenVINO, the default order's first)
        is timed last, so that it is still open when it wins and is kept; a backend that wins after being timed
        first is opened again (holding both would double the peak: at real size each UNet holds GBs)."""
        feed = sample_feed(entry)
        seconds: dict[str, float] = {}
        failed: dict[str, str] = {}
        last: tuple[str, Engine] | None = None
        for backend in reversed(CPU_BACKENDS):
            if last is not None:  # the previous one is released before the next opens, its heap handed back
                last = None
                return_freed_memory()
            try:
                engine = open_engine(backend)
                seconds[backend] = time_engine(engine, feed)
                last = (backend, engine)
            except ACSDKError as exc:  # a backend that cannot run it goes last; loading it again says why
                failed[backend] = str(exc)
            engine = None
        order = [b for b in CPU_BACKENDS if b in seconds]  # the default order unless another is clearly faster
        if len(order) == 2 and seconds[order[1]] * MARGIN < seconds[order[0]]:
            order.reverse()
        winner = last[1] if last is not None and order and last[0] == order[0] else None
        if winner is None and last is not None:
            last = None
            return_freed_memory()
        order += [b for b in CPU_BACKENDS if b not in seconds]
        log.info("backend auto, %s: %s (ms per call: %s)", name, order[0],
                 {b: round(s * 1e3, 2) for b, s in seconds.items()})  # fmt: skip
        record = {"order": order, "ms": {b: round(s * 1e3, 3) for b, s in seconds.items()}, "failed": failed,
                  "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cached": False}  # fmt: skip
        return record, winner

    def _save(self) -> None:
        kept = {k: {**v, "cached": False} for k, v in self.records.items() if not v["failed"]}
        body = {"versions": self.key, "components": kept}
        try:
            atomic_write(self.file, json.dumps(body, indent=2))
        except OSError as exc:  # a read-only cache only costs a measurement next time
            log.warning("backend auto: could not cache the measurement in %s (%s)", self.file, exc)

    def summary(self) -> dict[str, dict]:
        return {k: dict(v) for k, v in self.records.items()}
