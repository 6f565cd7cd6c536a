"""TensorRT backend (TensorRT 10.x and 11.x): checked against the manifest before deserialising (version, GPU,
verification, IO dtypes), torch buffers bound by address, optional CUDA-graph replay for repeated static shapes.

Needs TensorRT and a CUDA GPU; nothing here runs on CPU-only machines, where `load` raises a clear error.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
            self._scratch: torch.Tensor | None = None  # activation memory every context of this plan shares
            self._unbacked: set[int] = set()  # contexts whose memory is attached at their first call
            self.context = self._new_context()  # for calls that are not replayed
            self.stream = CUDA.Stream(device)
        self.cuda_graphs = cuda_graphs
        # A graph per input shape (the UNet meets two per image with a CFG cut-off, more under run_batch): a graph
        # replays the enqueue as captured, against its context's state at capture, so each lives with an execution
        # context of its own whose shapes never change after capture. Least recently used beyond MAX_GRAPHS goes.
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self._lock = threading.Lock()

    def _new_context(self):
        """An execution context on this plan. Where TensorRT lets the caller own the activation memory (10.1+),
        every context shares one buffer sized for the largest profile shape (attached at its first call): calls are
        serialised on one stream, so a context per captured shape costs no activation memory beyond the first."""
        import tensorrt as trt

        strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)
        if strategy is None or getattr(self.engine, "device_memory_size_v2", None) is None:
            return self.engine.create_execution_context()  # (10.0: each context allocates its own)
        context = self.engine.create_execution_context(strategy.USER_MANAGED)
        self._unbacked.add(id(context))
        return context

    def _attach_memory(self, context) -> None:
        if id(context) not in self._unbacked:
            return
        if self._scratch is None:
            size = max(int(self.engine.device_memory_size_v2), 1)
            self._scratch = torch.empty(size, dtype=torch.uint8, device=self.device)
        context.set_device_memory(self._scratch.data_ptr(), self._scratch.numel())
        self._unbacked.discard(id(context))

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

    def _bind(self, context, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Shapes and addresses of `inputs` on `context`, and fresh outputs (allocated on the engine stream)."""
        self._attach_memory(context)
        for spec in self.inputs:
            t = inputs[spec["name"]]
            if not context.set_input_shape(spec["name"], tuple(t.shape)):
                raise TensorRTRuntimeError(
                    f"{self.name}: TensorRT refused shape {tuple(t.shape)} for input '{spec['name']}': outside the "
                    "plan's profile (rebuild with a larger --max-batch)"
                )
            if not context.set_tensor_address(spec["name"], t.data_ptr()):
                raise TensorRTRuntimeError(f"{self.name}: TensorRT refused the address of input '{spec['name']}'")
        outs = {}
        for spec in self.outputs:
            shape = tuple(context.get_tensor_shape(spec["name"]))
            o = torch.empty(shape, dtype=TORCH_DTYPES[spec["dtype"]], device=self.device)
            if not context.set_tensor_address(spec["name"], o.data_ptr()):
                raise TensorRTRuntimeError(f"{self.name}: TensorRT refused the address of output '{spec['name']}'")
            outs[spec["name"]] = o
        return outs

    def _execute(self, context) -> None:
        if not context.execute_async_v3(self.stream.cuda_stream):
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
                captured = self._graphs.get(key) if self.cuda_graphs else None
                if captured is not None:
                    self._graphs.move_to_end(key)
                    for n, t in feeds.items():
                        captured.inputs[n].copy_(t)  # on the engine stream, after the wait
                    captured.graph.replay()
                    result = {n: o.clone() for n, o in captured.outputs.items()}
                else:
                    result = self._bind(self.context, feeds)
                    self._execute(self.context)
                    if self.cuda_graphs:
                        self._capture(key, feeds)
            for t in feeds.values():
                CUDA.record_stream(t, self.stream)  # allocated on the caller's stream, read on the engine's
            for t in result.values():
                CUDA.record_stream(t, caller)  # allocated on the engine stream, used on the caller's
            caller.wait_stream(self.stream)
        return result

    def _capture(self, key: tuple, feeds: Mapping[str, torch.Tensor]) -> None:
        """Record one enqueue of these shapes on static buffers, in a context of its own; later calls with these
        shapes replay it (no launch overhead). Runs on the engine stream (the caller holds it current)."""
        context = self._new_context()
        static_in = {n: t.clone() for n, t in feeds.items()}
        static_out = self._bind(context, static_in)
        self._execute(context)  # warm-up on the static buffers
        graph = CUDA.CUDAGraph()
        try:
            with CUDA.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self._execute(context)
        except RuntimeError as exc:  # some plans (data-dependent shapes) cannot be captured
            log.info("%s: CUDA graph capture unavailable (%s); running without", self.name, exc)
            self.cuda_graphs = False
            self._graphs.clear()
            return
        self._graphs[key] = _Captured(context, graph, static_in, static_out)
        while len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)


# Shapes kept captured per engine: CFG's batch 2 and the conditional row's batch 1 after a cut-off, and room for
# run_batch's sizes. Each holds its static buffers and a context (sharing the activation memory where TensorRT can).
MAX_GRAPHS = 4


@dataclass
class _Captured:
    """A CUDA graph and what it replays against: its own execution context and static input/output buffers."""

    context: object
    graph: object
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
