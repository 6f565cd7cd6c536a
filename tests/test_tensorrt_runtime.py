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
        graph = types.SimpleNamespace(shapes=None)
        graph.replay = lambda: self.events.append(("replay", self.current, graph.shapes))
        return graph

    @contextlib.contextmanager
    def graph(self, graph, stream=None, capture_error_mode="global"):
        self.events.append(("capture", stream.name, capture_error_mode, self.current))
        graph.shapes = dict(self.context.shapes)  # what the context was set to when the graph was captured
        yield

    def record_stream(self, tensor, stream):
        self.events.append(("record_stream", tuple(tensor.shape), stream.name))


class FakeStream:
    def __init__(self, rec, name):
        self.rec, self.name, self.cuda_stream = rec, name, hash(name)

    def wait_stream(self, other):
        self.rec.events.append(("wait", self.name, other.name))


def fake_tensorrt(
    rec: Recorder, shape_ok: bool = True, execute_ok: bool = True, dtypes: dict | None = None
) -> types.ModuleType:
    class Context:
        def __init__(self):
            self.shapes = {}
            rec.context = self

        def set_input_shape(self, name, shape):
            rec.events.append(("set_input_shape", name, shape))
            self.shapes[name] = shape
            return shape_ok

        def set_tensor_address(self, name, ptr):
            return True

        def get_tensor_shape(self, name):
            return self.shapes["x"]

        def execute_async_v3(self, stream):
            rec.events.append(("execute", rec.current))
            return execute_ok

    class Engine:
        def get_tensor_dtype(self, name):  # TensorRT's DataType enum: a name attribute
            return types.SimpleNamespace(name=(dtypes or {}).get(name, "FLOAT"))

        def create_execution_context(self):
            rec.events.append(("context", rec.current_device))
            return Context()

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

    return types.SimpleNamespace(__version__="10.6.0", Runtime=Runtime, Logger=Logger)


@pytest.fixture
def rec(monkeypatch, tmp_path):
    recorder = Recorder()
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


def test_a_graph_of_other_shapes_is_never_replayed(rec, tmp_path):
    """Shapes A, B, A: TensorRT's context holds one set of shapes, so the third call must not replay the graph
    captured under A (the context has since been set to B): it runs and captures A again; a fourth A replays."""
    engine = make_engine(tmp_path)
    a, b = torch.ones(2, 4), torch.ones(1, 4)
    for x in (a, b, a):
        out = engine.run({"x": x})
        assert out["y"].shape == x.shape
    assert [e for e in rec.events if e[0] == "replay"] == []
    assert len([e for e in rec.events if e[0] == "capture"]) == 3
    rec.events.clear()
    engine.run({"x": a})
    (replay,) = [e for e in rec.events if e[0] == "replay"]
    assert replay[2] == {"x": (2, 4)}, "the replayed graph was captured with A's shapes"
    assert rec.context.shapes == {"x": (2, 4)}


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
