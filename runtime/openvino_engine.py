"""OpenVINO backend: Intel CPUs (and iGPUs / NPUs by device name), static shapes compiled once per call shape.

The engine dir's ONNX (or OpenVINO IR) is read once; each new set of input shapes gets a static-shape copy
compiled for the device (OpenVINO's CPU kernels are fastest on static shapes) and kept (the `max_shapes` most
recently used), with a small pool of infer requests per compiled shape so threads do not share one. Weight files
are memory-mapped (OpenVINO's default, ONNX external data included): their pages need not stay in RAM. OpenVINO's
model cache (`cache_dir`, bounded by runtime/model_cache.py when the engine holds a lease on it) makes a second
process skip compilation. Inputs are handed over without copies; outputs
are written by OpenVINO directly into torch tensors.

Precision: `precision` is the engine's ("fp32", "fp16", "int8"). fp32 and int8 run with f32 inference precision
(OpenVINO's CPU plugin otherwise picks bf16 on CPUs that have it, which would change fp32 results); fp16 runs at
bf16 where the CPU has bf16 (AMX / AVX-512 BF16), else f32.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .dtypes import TORCH_DTYPES
from .engine import Engine
from .errors import BackendUnavailableError
from .model_cache import CacheLease

log = logging.getLogger(__name__)


def openvino_usable() -> tuple[bool, str]:
    """(True, "") when OpenVINO imports here, else (False, why): `auto` skips it, `openvino` explains."""
    try:
        import openvino  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library under it
        why = f"openvino is not importable ({type(exc).__name__}: {exc})"
        return False, f"{why}; install it: pip install 'acsdk[openvino]'"
    return True, ""


# Compiled static-shape copies kept per engine. Each holds its own copy of the weights laid out for the CPU's kernels
# and the activation buffers of its shape (a 512 px UNet in fp32: 3.5 GB + 0.2 GB), so a low-memory engine keeps one.
MAX_COMPILED_SHAPES = 4


def _brief(exc: BaseException) -> str:
    """OpenVINO's multi-line message on one line (its last lines say what went wrong), bounded."""
    text = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    return text if len(text) <= 600 else "... " + text[-600:]


def _core():
    import openvino as ov

    return ov.Core()


def check_device(name: str, device: str) -> None:
    """BackendUnavailableError where OpenVINO is not installed or has no `device` (a check before any model is
    read)."""
    ok, why = openvino_usable()
    if not ok:
        raise BackendUnavailableError(f"{name}: backend 'openvino' unavailable: {why}")
    available = _core().available_devices
    if device.split(".")[0] not in {d.split(".")[0] for d in available}:
        raise BackendUnavailableError(f"{name}: OpenVINO has no device {device!r} here (it has {', '.join(available)})")


class OpenVINOEngine(Engine):
    """One model on one OpenVINO device; thread-safe (one infer request per call, pooled)."""

    backend = "openvino"

    def __init__(
        self,
        name: str,
        path: Path,
        inputs: Sequence[Mapping],
        outputs: Sequence[Mapping],
        device: str = "CPU",
        precision: str = "fp32",
        cache_dir: Path | None = None,
        threads: int | None = None,
        max_shapes: int = MAX_COMPILED_SHAPES,
        cache_lease: CacheLease | None = None,
    ):
        """`cache_lease` (model_cache.use): the cache entry `cache_dir` is, held while the engine lives so that no
        process evicts the folder OpenVINO writes its blobs into."""
        check_device(name, device)
        self.max_shapes = max_shapes
        self.name = name
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.input_names = tuple(i["name"] for i in inputs)
        self.output_names = tuple(o["name"] for o in outputs)
        self.core = _core()
        self.device = device
        self.precision = precision
        self.cache_lease = cache_lease
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(self.cache_dir)})
        try:
            self.model = self.core.read_model(os.fspath(path))
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text: typed, so `auto` falls back
            raise BackendUnavailableError(f"{name}: OpenVINO cannot read '{path}': {_brief(exc)}") from exc
        ports = {n for o in self.model.outputs for n in o.get_names()}
        missing = [n for n in self.output_names if n not in ports]
        if missing:
            raise BackendUnavailableError(f"{name}: '{path}' has no outputs named {missing} (it has {sorted(ports)})")
        self.config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
        if device.startswith("CPU"):
            self.config["INFERENCE_NUM_THREADS"] = str(threads or torch.get_num_threads())
            self.config["INFERENCE_PRECISION_HINT"] = self._cpu_precision(precision)
        self._compiled: OrderedDict[tuple, tuple[object, queue.SimpleQueue]] = OrderedDict()
        self._lock = threading.Lock()

    def _cpu_precision(self, precision: str) -> str:
        if precision == "fp16" and "BF16" in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            return "bf16"
        return "f32"

    def _compiled_for(self, shapes: tuple[tuple[int, ...], ...]):
        with self._lock:
            entry = self._compiled.get(shapes)
            if entry is not None:
                self._compiled.move_to_end(shapes)
                return entry
            while len(self._compiled) >= self.max_shapes:  # the least recently used shape goes first, so that two
                self._compiled.popitem(last=False)  # never coexist beyond the bound (it recompiles from the cache)
            model = self.model.clone()
            model.reshape({n: list(s) for n, s in zip(self.input_names, shapes, strict=True)})
            try:
                compiled = self._compile(model)
            except Exception as exc:
                raise BackendUnavailableError(
                    f"{self.name}: OpenVINO cannot compile it for input shapes {list(shapes)} on {self.device}: "
                    f"{_brief(exc)}"
                ) from exc
            entry = (compiled, queue.SimpleQueue())
            self._compiled[shapes] = entry
            log.info("%s: compiled for %s on %s", self.name, shapes, self.device)
            return entry

    def _compile(self, model):
        try:
            return self.core.compile_model(model, self.device, self.config)
        except Exception as exc:
            if self.cache_dir is None or self.cache_dir.is_dir():
                raise
            # The cache folder vanished while OpenVINO wrote a blob into it (deleted by hand, or evicted by a process
            # that does not honour leases): OpenVINO fails that compile, and compiles uncached once it is gone.
            why = _brief(exc)
            log.warning("%s: OpenVINO's cache %s vanished during a compile (%s); compiling uncached", self.name,
                        self.cache_dir, why)  # fmt: skip
            return self.core.compile_model(model, self.device, self.config)

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import openvino as ov

        feeds = {
            s["name"]: inputs[s["name"]].detach().to("cpu", TORCH_DTYPES[s["dtype"]]).contiguous() for s in self.inputs
        }
        compiled, pool = self._compiled_for(tuple(tuple(t.shape) for t in feeds.values()))
        try:
            request = pool.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            for name, t in feeds.items():
                request.set_tensor(name, ov.Tensor(t.numpy(), shared_memory=True))
            outs = {}
            for spec in self.outputs:  # by name, as every backend binds them, never by position
                port = compiled.output(spec["name"])
                out = torch.empty(tuple(port.get_shape()), dtype=TORCH_DTYPES[spec["dtype"]])
                request.set_tensor(port, ov.Tensor(out.numpy(), shared_memory=True))
                outs[spec["name"]] = out
            request.infer()
        except Exception as exc:
            raise BackendUnavailableError(f"{self.name}: OpenVINO inference failed: {_brief(exc)}") from exc
        finally:
            pool.put(request)
        return outs

    def describe(self) -> dict:
        """What OpenVINO actually uses: devices and inference precision of the compiled shapes so far."""
        info = {"device": self.device, "precision": self.precision, "compiled_shapes": len(self._compiled)}
        for compiled, _ in list(self._compiled.values())[:1]:
            info["execution_devices"] = list(compiled.get_property("EXECUTION_DEVICES"))
            if self.device.startswith("CPU"):
                hint = compiled.get_property("INFERENCE_PRECISION_HINT")
                info["inference_precision"] = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        if "inference_precision" not in info and self.device.startswith("CPU"):
            info["inference_precision"] = self.config["INFERENCE_PRECISION_HINT"]
        return info
