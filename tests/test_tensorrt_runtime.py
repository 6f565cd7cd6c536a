"""The TensorRT runtime against a fake `tensorrt` and a recording stand-in for torch.cuda (no GPU needed): the
stream order, the device a plan lives on, refused shapes and executions, unverified plans. The order of the
recorded calls is what these tests assert: in this code the order is the bug."""

from __future__ import annotations

import contextlib
import sys
import types

import pytest
import torch

import runtime.tensorrt_engine as trt_engine
from runtime.errors import IncompatibleEngineError

INPUTS = [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
OUTPUTS = [{"name": "y", "dtype": "float32", "shape": ["batch", 4]}]
RECORDED = {"tensorrt_version": "10.6.0", "compute_capability": "8.7", "verification": {"passed": True}}


class Recorder:
    """Stands in for torch.cuda: streams are names, every call lands in `events`."""

    def __init__(self):
        self.events: list[tuple] = []
        self.current_device = 0
        self.current = "caller"
        self.capturing = None  # the graph being captured, which the executing context fills in

    @contextlib.contextmanager
    def device(self, device):
        before, self.current_device = self.current_device, torch.device(device).index
        self.events.append(("device", self.current_device))
        try:
            yield
        finally:
            self.current_device = before

    def current_stream(self, device=None):
        return FakeStream(self, self.current)

    def Stream(self, device):  # noqa: N802  (mirrors torch.cuda.Stream)
        self.events.append(("new_stream", torch.device(device).index, self.current_device))
        return FakeStream(self, "engine")

    @contextlib.contextmanager
    def stream(self, s):
        before, self.current = self.current, s.name
        self.events.append(("enter", s.name))
        try:
            yield
        finally:
            self.events.append(("exit", s.name))
            self.current = before

    def CUDAGraph(self):  # noqa: N802
        graph = types.SimpleNamespace(shapes=None, context=None)

        def replay():  # stale: its context was set to other shapes since the capture
            stale = graph.context.shapes != graph.shapes
            self.events.append(("replay", self.current, graph.shapes, id(graph.context), stale))

        graph.replay = replay
        return graph

    @contextlib.contextmanager
    def graph(self, graph, stream=None, capture_error_mode="global"):
        self.events.append(("capture", stream.name, capture_error_mode, self.current))
        self.capturing = graph
        try:
            yield
        finally:
            self.capturing = None

    def record_stream(self, tensor, stream):
        self.events.append(("record_stream", tuple(tensor.shape), stream.name))


class FakeStream:
    def __init__(self, rec, name):
        self.rec, self.name, self.cuda_stream = rec, name, hash(name)

    def wait_stream(self, other):
        self.rec.events.append(("wait", self.name, other.name))


def fake_tensorrt(
    rec: Recorder,
    shape_ok: bool = True,
    execute_ok: bool = True,
    dtypes: dict | None = None,
    user_memory: bool = True,
) -> types.ModuleType:
    """TensorRT's runtime as 10.1+ has it (`user_memory`: contexts whose activation memory the caller owns), or as
    10.0 had it (every context allocates its own)."""

    class Context:
        def __init__(self, strategy):
            self.shapes, self.memory, self.strategy = {}, None, strategy
            rec.context = self

        def set_input_shape(self, name, shape):
            rec.events.append(("set_input_shape", name, shape))
            self.shapes[name] = shape
            return shape_ok

        def set_tensor_address(self, name, ptr):
            return True

        def get_tensor_shape(self, name):
            return self.shapes["x"]

        def set_device_memory(self, ptr, size):
            self.memory = (ptr, size)

        def execute_async_v3(self, stream):
            assert self.strategy is None or self.memory is not None, "a user-managed context needs its memory"
            rec.events.append(("execute", rec.current))
            if rec.capturing is not None:
                rec.capturing.context, rec.capturing.shapes = self, dict(self.shapes)
            return execute_ok

    class Engine:
        if user_memory:
            device_memory_size_v2 = 4096

        def get_tensor_dtype(self, name):  # TensorRT's DataType enum: a name attribute
            return types.SimpleNamespace(name=(dtypes or {}).get(name, "FLOAT"))

        def create_execution_context(self, strategy=None):
            rec.events.append(("context", rec.current_device))
            context = Context(strategy)
            rec.contexts.append(context)
            return context

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            rec.events.append(("deserialize", rec.current_device))
            return Engine()

    class Logger:
        WARNING = 1

        def __init__(self, level):
            pass

    extra = {"ExecutionContextAllocationStrategy": types.SimpleNamespace(USER_MANAGED="USER_MANAGED")}
    return types.SimpleNamespace(__version__="10.6.0", Runtime=Runtime, Logger=Logger, **(extra if user_memory else {}))


@pytest.fixture
def rec(monkeypatch, tmp_path):
    recorder = Recorder()
    recorder.contexts = []
    monkeypatch.setattr(trt_engine, "CUDA", recorder)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 7))
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(recorder))
    (tmp_path / "x.plan").write_bytes(b"plan")
    return recorder


def make_engine(tmp_path, device="cuda:1", recorded=RECORDED, **kw):
    engine = trt_engine.TensorRTEngine("unet", tmp_path / "x.plan", INPUTS, OUTPUTS, recorded, device, **kw)
    engine.device = torch.device("cpu")  # the fake runs on CPU tensors from here on
    return engine


def test_plan_and_stream_live_on_the_requested_gpu(rec, tmp_path):
    make_engine(tmp_path, "cuda:1")
    assert ("deserialize", 1) in rec.events and ("context", 1) in rec.events
    assert ("new_stream", 1, 1) in rec.events, "the engine stream belongs to cuda:1"


def test_engine_stream_waits_for_the_caller_before_reading_and_caller_waits_after(rec, tmp_path):
    engine = make_engine(tmp_path)
    out = engine.run({"x": torch.ones(2, 4)})
    assert out["y"].shape == (2, 4)
    order = [e[0] for e in rec.events]
    first_wait = rec.events.index(("wait", "engine", "caller"))
    assert first_wait < order.index("enter") < order.index("execute"), rec.events
    assert rec.events[order.index("execute")] == ("execute", "engine")
    assert ("record_stream", (2, 4), "caller") in rec.events, "outputs recorded on the caller's stream"
    assert ("record_stream", (2, 4), "engine") in rec.events, "inputs recorded on the engine stream"
    assert rec.events.index(("wait", "caller", "engine")) > order.index("execute")


def test_capture_happens_on_the_engine_stream_in_thread_local_mode_and_replays_after_the_wait(rec, tmp_path):
    engine = make_engine(tmp_path)
    engine.run({"x": torch.ones(2, 4)})
    captures = [e for e in rec.events if e[0] == "capture"]
    assert captures == [("capture", "engine", "thread_local", "engine")]
    rec.events.clear()
    engine.run({"x": torch.full((2, 4), 3.0)})  # same shapes: the graph replays
    (replay,) = [e for e in rec.events if e[0] == "replay"]
    assert replay[:2] == ("replay", "engine")
    assert rec.events.index(("wait", "engine", "caller")) < rec.events.index(replay)


@pytest.mark.parametrize("user_memory", [True, False], ids=["trt10.1+", "trt10.0"])
def test_each_shape_keeps_its_graph_and_a_graph_replays_only_on_the_shapes_it_was_captured_with(
    rec, tmp_path, monkeypatch, user_memory
):
    """Shapes A, B, A, B (CFG's batch 2, then the conditional row alone after a cut-off, image after image): each shape
    is captured once, in a context of its own, and replayed from then on; no graph ever replays on a context that
    was set to other shapes since its capture."""
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec, user_memory=user_memory))
    engine = make_engine(tmp_path)
    a, b = torch.ones(2, 4), torch.ones(1, 4)
    for x in (a, b, a, b, a):
        out = engine.run({"x": x})
        assert out["y"].shape == x.shape
    assert len([e for e in rec.events if e[0] == "capture"]) == 2, "one capture per shape"
    replays = [e for e in rec.events if e[0] == "replay"]
    assert [r[2] for r in replays] == [{"x": (2, 4)}, {"x": (1, 4)}, {"x": (2, 4)}]
    assert not any(r[4] for r in replays), "a graph replayed on a context whose shapes changed since its capture"
    assert len({r[3] for r in replays}) == 2, "each shape's graph on its own context"
    if user_memory:  # one activation buffer shared by every context (calls are serialised on one stream)
        assert {c.strategy for c in rec.contexts} == {"USER_MANAGED"}
        assert len({c.memory for c in rec.contexts}) == 1 and rec.contexts[0].memory[1] == 4096
    else:
        assert {c.strategy for c in rec.contexts} == {None} and all(c.memory is None for c in rec.contexts)


def test_graphs_beyond_the_limit_are_dropped_least_recently_used(rec, tmp_path):
    engine = make_engine(tmp_path)
    shapes = [torch.ones(n, 4) for n in range(1, trt_engine.MAX_GRAPHS + 2)]
    for x in shapes:
        engine.run({"x": x})
    assert len(engine._graphs) == trt_engine.MAX_GRAPHS
    rec.events.clear()
    engine.run({"x": shapes[0]})  # the oldest was dropped: captured again, not replayed
    assert [e[0] for e in rec.events if e[0] in ("capture", "replay")] == ["capture"]
    engine.run({"x": shapes[-1]})
    assert [e[0] for e in rec.events if e[0] in ("capture", "replay")] == ["capture", "replay"]


def test_a_plan_whose_io_types_differ_from_the_manifest_is_refused(rec, tmp_path, monkeypatch):
    """A strongly typed plan with fp16 IO, fed the fp32 buffers the manifest promises, would be misread."""
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec, dtypes={"y": "HALF"}))
    with pytest.raises(IncompatibleEngineError, match="'y' is float16 in the plan, the manifest says float32"):
        make_engine(tmp_path)


def test_refused_shape_and_failed_execution_raise(rec, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec, shape_ok=False))
    with pytest.raises(trt_engine.TensorRTRuntimeError, match="--max-batch"):
        make_engine(tmp_path).run({"x": torch.ones(9, 4)})
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec, execute_ok=False))
    with pytest.raises(trt_engine.TensorRTRuntimeError, match="execution failed"):
        make_engine(tmp_path, cuda_graphs=False).run({"x": torch.ones(2, 4)})


def test_unverified_or_foreign_plans_are_refused_with_the_rebuild_command(rec, tmp_path):
    with pytest.raises(IncompatibleEngineError, match="--from-onnx"):
        make_engine(tmp_path, recorded={**RECORDED, "verification": {"passed": False, "reason": "no GPU"}})
    make_engine(tmp_path, recorded={**RECORDED, "verification": None}, allow_unverified=True)
    with pytest.raises(IncompatibleEngineError, match="python -m export.build"):
        make_engine(tmp_path, recorded={**RECORDED, "compute_capability": "8.9"})
