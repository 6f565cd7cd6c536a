"""TensorRT backend (TensorRT 10.x and 11.x): checked against the manifest before deserialising (version, GPU,
verification, IO dtypes), torch buffers bound by address, optional CUDA-graph replay for repeated static shapes.

Needs TensorRT and a CUDA GPU; nothing here runs on CPU-only machines, where `load` raises a clear error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .compat import check_plan_compatibility, parse_trt_version, tensorrt_support
from .dtypes import TORCH_DTYPES
from .engine import Engine
from .errors import ACSDKError, BackendUnavailableError, IncompatibleEngineError

log = logging.getLogger(__name__)
# TensorRT's DataType names -> the manifest's dtype names
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT64": "int64", "INT32": "int32",
              "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}  # fmt: skip


def tensorrt_status() -> dict:
    """Which TensorRT is here and whether acsdk can build and run plans with it: `version` (None when not
    importable), `major`, `supported` (a major acsdk's strongly typed path knows), `usable` (supported and a CUDA
    GPU), `why` (empty when usable). What `acsdk info` reports."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError when the wheel is there but its CUDA libraries are not
        why = f"tensorrt is not importable ({type(exc).__name__}: {exc}); install `acsdk[tensorrt]` on a CUDA machine"
        return {"version": None, "major": None, "supported": False, "usable": False, "why": why}
    version = str(getattr(trt, "__version__", "unknown"))
    parsed = parse_trt_version(version)
    problem = tensorrt_support(version)
    if not problem and not torch.cuda.is_available():
        why = f"tensorrt {version} found, but no CUDA GPU (torch.cuda.is_available() is False)"
    else:
        why = problem or ""
    return {
        "version": version,
        "major": parsed[0] if parsed else None,
        "supported": problem is None,
        "usable": not why,
        "why": why,
    }


def tensorrt_usable() -> tuple[bool, str]:
    """(True, "") when TensorRT plans can be built and run here, else (False, why). The one such check in acsdk."""
    status = tensorrt_status()
    return status["usable"], status["why"]


def current_compute_capability(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


def cuda_device(device: torch.device | str) -> torch.device:
    """`cuda` means the current CUDA device; every CUDA call below names its device explicitly."""
    device = torch.device(device)
    return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)


class _Cuda:
    """The CUDA calls this engine makes, in one place: tests replace it with a recorder where no GPU exists."""

    device = staticmethod(torch.cuda.device)
    current_stream = staticmethod(torch.cuda.current_stream)
    stream = staticmethod(torch.cuda.stream)
    graph = torch.cuda.graph
    Stream = torch.cuda.Stream
    CUDAGraph = torch.cuda.CUDAGraph

    @staticmethod
    def record_stream(tensor: torch.Tensor, stream) -> None:
        tensor.record_stream(stream)


CUDA = _Cuda()


class TensorRTRuntimeError(ACSDKError, RuntimeError):
    """TensorRT refused a shape or an execution at run time."""


class TensorRTEngine(Engine):
    """One plan, one execution context on one GPU. A context is not re-entrant: calls are serialised by a lock.

    Stream discipline: the caller's inputs are produced on the caller's current stream; the engine stream waits
    for it before anything reads them (static-buffer copies included), the caller's stream waits for the engine
    stream before the outputs are read, and the outputs are recorded on the caller's stream so the allocator does
    not hand their memory out while the caller still uses them. CUDA-graph capture uses thread-local error mode,
    so other threads' CUDA calls do not fail while one thread captures.
    """

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
        allow_unverified: bool = False,
    ):
        ok, why = tensorrt_usable()
        if not ok:
            raise BackendUnavailableError(f"{name}: backend 'tensorrt' unavailable: {why}")
        import tensorrt as trt

        device = cuda_device(device)
        problem = check_plan_compatibility(recorded, trt.__version__, current_compute_capability(device))
        if problem:
            raise IncompatibleEngineError(f"{name} ({plan.name}): {problem}")
        verification = recorded.get("verification") or {}
        if not verification.get("passed") and not allow_unverified:
            raise IncompatibleEngineError(
                f"{name} ({plan.name}): the plan was not verified against its ONNX graph at build time "
                f"({verification.get('reason', 'no verification recorded')}); rebuild it on a GPU with "
                "`python -m export.build --from-onnx`, or pass allow_unverified_plans=True"
            )
        self.name = name
        self.device = device
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.input_names = tuple(i["name"] for i in inputs)
        self.output_names = tuple(o["name"] for o in outputs)
        with CUDA.device(device):  # the plan's memory and the context live on this GPU, not the current one
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
            if self.engine is None:
                raise IncompatibleEngineError(f"{name}: TensorRT could not deserialise {plan}; rebuild it")
            self._check_io_dtypes(plan)
            self.context = self.engine.create_execution_context()
            self.stream = CUDA.Stream(device)
        self.cuda_graphs = cuda_graphs
        # One graph, for the shapes the context was last set to: a graph replays the enqueue as captured, against
        # the context's state at capture time, so after another shape ran it is stale and is captured again.
        self._graph: tuple[tuple, object, dict, dict] | None = None
        self._lock = threading.Lock()

    def _check_io_dtypes(self, plan: Path) -> None:
        """The plan's IO types are what the manifest says (a strongly typed plan with fp16 IO fed fp32 buffers
        would be misread silently)."""
        for spec in [*self.inputs, *self.outputs]:
            dtype = self.engine.get_tensor_dtype(spec["name"])
            name = TRT_DTYPES.get(getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1]), str(dtype))
            if name != spec["dtype"]:
                raise IncompatibleEngineError(
                    f"{self.name} ({plan.name}): tensor '{spec['name']}' is {name} in the plan, the manifest says "
                    f"{spec['dtype']}; rebuild the plan with `python -m export.build --from-onnx`"
                )

    def _bind(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Shapes and addresses of `inputs`, and fresh outputs (allocated on the engine stream)."""
        for spec in self.inputs:
            t = inputs[spec["name"]]
            if not self.context.set_input_shape(spec["name"], tuple(t.shape)):
                raise TensorRTRuntimeError(
                    f"{self.name}: TensorRT refused shape {tuple(t.shape)} for input '{spec['name']}': outside the "
                    "plan's profile (rebuild with a larger --max-batch)"
                )
            if not self.context.set_tensor_address(spec["name"], t.data_ptr()):
                raise TensorRTRuntimeError(f"{self.name}: TensorRT refused the address of input '{spec['name']}'")
        outs = {}
        for spec in self.outputs:
            shape = tuple(self.context.get_tensor_shape(spec["name"]))
            o = torch.empty(shape, dtype=TORCH_DTYPES[spec["dtype"]], device=self.device)
            if not self.context.set_tensor_address(spec["name"], o.data_ptr()):
                raise TensorRTRuntimeError(f"{self.name}: TensorRT refused the address of output '{spec['name']}'")
            outs[spec["name"]] = o
        return outs

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise TensorRTRuntimeError(f"{self.name}: TensorRT execution failed (see TensorRT's log)")

    def _prepare(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            s["name"]: inputs[s["name"]].detach().to(self.device, TORCH_DTYPES[s["dtype"]]).contiguous()
            for s in self.inputs
        }

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with self._lock, CUDA.device(self.device):
            caller = CUDA.current_stream(self.device)
            feeds = self._prepare(inputs)  # on the caller's stream
            key = tuple((n, tuple(t.shape)) for n, t in feeds.items())
            self.stream.wait_stream(caller)  # everything the caller queued (feeds included) is done first
            with CUDA.stream(self.stream):
                if self.cuda_graphs and self._graph is not None and self._graph[0] == key:
                    _, graph, static_in, static_out = self._graph
                    for n, t in feeds.items():
                        static_in[n].copy_(t)  # on the engine stream, after the wait
                    graph.replay()
                    result = {n: o.clone() for n, o in static_out.items()}
                else:
                    self._graph = None  # the context's shapes change below: a graph of other shapes is stale
                    result = self._bind(feeds)
                    self._execute()
                    if self.cuda_graphs:
                        self._capture(key, feeds)
            for t in feeds.values():
                CUDA.record_stream(t, self.stream)  # allocated on the caller's stream, read on the engine's
            for t in result.values():
                CUDA.record_stream(t, caller)  # allocated on the engine stream, used on the caller's
            caller.wait_stream(self.stream)
        return result

    def _capture(self, key: tuple, feeds: Mapping[str, torch.Tensor]) -> None:
        """Record one enqueue on static buffers; later calls with these shapes replay it (no launch overhead).
        Runs on the engine stream (the caller holds it current)."""
        static_in = {n: t.clone() for n, t in feeds.items()}
        static_out = self._bind(static_in)
        self._execute()  # warm-up on the static buffers
        graph = CUDA.CUDAGraph()
        try:
            with CUDA.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self._execute()
        except RuntimeError as exc:  # some plans (data-dependent shapes) cannot be captured
            log.info("%s: CUDA graph capture unavailable (%s); running without", self.name, exc)
            self.cuda_graphs = False
            return
        self._graph = (key, graph, static_in, static_out)
