"""TensorRT backend (TensorRT 10): checked against the manifest before deserialising, torch buffers bound by
address, optional CUDA-graph replay for repeated static shapes.

Needs TensorRT and a CUDA GPU; nothing here runs on CPU-only machines, where `load` raises a clear error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .compat import check_plan_compatibility, parse_trt_version
from .dtypes import TORCH_DTYPES
from .engine import Engine
from .errors import BackendUnavailableError, IncompatibleEngineError

log = logging.getLogger(__name__)

MIN_TRT_MAJOR = 10


def tensorrt_usable() -> tuple[bool, str]:
    """(True, "") when TensorRT plans can be built and run here, else (False, why). The one such check in acsdk."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError when the wheel is there but its CUDA libraries are not
        return False, (
            f"tensorrt is not importable ({type(exc).__name__}: {exc}); install `acsdk[tensorrt]` on a CUDA machine"
        )
    version = str(getattr(trt, "__version__", "unknown"))
    parsed = parse_trt_version(version)
    if parsed is None or parsed[0] < MIN_TRT_MAJOR:
        return False, f"tensorrt {version} found, but TensorRT >= {MIN_TRT_MAJOR} is required"
    if not torch.cuda.is_available():
        return False, f"tensorrt {version} found, but no CUDA GPU (torch.cuda.is_available() is False)"
    return True, ""


def current_compute_capability(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


class TensorRTEngine(Engine):
    """One plan, one execution context. A context is not re-entrant, so calls are serialised by a lock."""

    backend = "tensorrt"

    def __init__(
        self,
        name: str,
        plan: Path,
        inputs: Sequence[Mapping],
        outputs: Sequence[Mapping],
        recorded: Mapping,
        device: torch.device,
        cuda_graphs: bool = True,
    ):
        ok, why = tensorrt_usable()
        if not ok:
            raise BackendUnavailableError(f"{name}: backend 'tensorrt' unavailable: {why}")
        import tensorrt as trt

        problem = check_plan_compatibility(recorded, trt.__version__, current_compute_capability(device))
        if problem:
            raise IncompatibleEngineError(f"{name} ({plan.name}): {problem}")
        self.name = name
        self.device = device
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.input_names = tuple(i["name"] for i in inputs)
        self.output_names = tuple(o["name"] for o in outputs)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise IncompatibleEngineError(f"{name}: TensorRT could not deserialise {plan}; rebuild with export.build")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device)
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict, dict]] = {}
        self._lock = threading.Lock()

    def _bind(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for spec in self.inputs:
            t = inputs[spec["name"]]
            self.context.set_input_shape(spec["name"], tuple(t.shape))
            self.context.set_tensor_address(spec["name"], t.data_ptr())
        outs = {}
        for spec in self.outputs:
            shape = tuple(self.context.get_tensor_shape(spec["name"]))
            o = torch.empty(shape, dtype=TORCH_DTYPES[spec["dtype"]], device=self.device)
            self.context.set_tensor_address(spec["name"], o.data_ptr())
            outs[spec["name"]] = o
        return outs

    def _prepare(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            s["name"]: inputs[s["name"]].detach().to(self.device, TORCH_DTYPES[s["dtype"]]).contiguous()
            for s in self.inputs
        }

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feeds = self._prepare(inputs)
        key = tuple((n, tuple(t.shape)) for n, t in feeds.items())
        with self._lock:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            if self.cuda_graphs and key in self._graphs:
                graph, static_in, static_out = self._graphs[key]
                with torch.cuda.stream(self.stream):
                    for n, t in feeds.items():
                        static_in[n].copy_(t)
                    graph.replay()
                    result = {n: o.clone() for n, o in static_out.items()}
            else:
                with torch.cuda.stream(self.stream):
                    outs = self._bind(feeds)
                    if not self.context.execute_async_v3(self.stream.cuda_stream):
                        raise RuntimeError(f"{self.name}: TensorRT execution failed")
                result = outs
                if self.cuda_graphs:
                    self._capture(key, feeds)
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return result

    def _capture(self, key: tuple, feeds: Mapping[str, torch.Tensor]) -> None:
        """Record one enqueue on static buffers; later calls with these shapes replay it (no launch overhead)."""
        static_in = {n: t.clone() for n, t in feeds.items()}
        with torch.cuda.stream(self.stream):
            static_out = self._bind(static_in)
            self.context.execute_async_v3(self.stream.cuda_stream)  # warm-up on the static buffers
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, stream=self.stream):
                    self.context.execute_async_v3(self.stream.cuda_stream)
            except RuntimeError as exc:  # some plans (data-dependent shapes) cannot be captured
                log.info("%s: CUDA graph capture unavailable (%s); running without", self.name, exc)
                self.cuda_graphs = False
                return
        self._graphs[key] = (graph, static_in, static_out)
