"""ONNX Runtime on CUDA against a fake `onnxruntime` (no GPU needed): the session gets the device it was asked for
and torch's stream, and a run neither synchronises the host nor binds to device 0 by accident."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from runtime.errors import BackendUnavailableError
from runtime.onnxruntime_engine import OrtEngine

IO_IN = [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
IO_OUT = [{"name": "y", "dtype": "float32", "shape": ["batch", 4]}]


def fake_ort(log: list, runs_on: str = "CUDAExecutionProvider") -> types.ModuleType:
    class SessionOptions:
        def add_session_config_entry(self, k, v):
            pass

    class RunOptions:
        def __init__(self):
            self.entries = {}

        def add_run_config_entry(self, k, v):
            self.entries[k] = v

    class Binding:
        def bind_input(self, name, device, index, dtype, shape, ptr):
            log.append(("bind_input", name, device, index))

        def bind_output(self, name, device, index, dtype, shape, ptr):
            log.append(("bind_output", name, device, index))

    class InferenceSession:
        def __init__(self, path, opts, providers):
            log.append(("session", providers))

        def get_providers(self):
            return [runs_on, "CPUExecutionProvider"]

        def io_binding(self):
            return Binding()

        def run_with_iobinding(self, binding, run_options=None):
            log.append(("run", dict(run_options.entries) if run_options else None))

    return types.SimpleNamespace(
        SessionOptions=SessionOptions,
        RunOptions=RunOptions,
        InferenceSession=InferenceSession,
        GraphOptimizationLevel=types.SimpleNamespace(ORT_ENABLE_ALL=99),
        get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )


class Stream:
    def __init__(self, log, index):
        self.log, self.cuda_stream = log, 1000 + index

    def synchronize(self):
        self.log.append(("host_sync",))


@pytest.fixture
def log(monkeypatch):
    events: list = []
    monkeypatch.setitem(sys.modules, "onnxruntime", fake_ort(events))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream(events, torch.device(device).index))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return events


def test_session_gets_the_device_index_and_torchs_stream(log, tmp_path):
    OrtEngine("unet", tmp_path / "u.onnx", IO_IN, IO_OUT, torch.device("cuda:1"))
    ((_, providers),) = [e for e in log if e[0] == "session"]
    name, options = providers[0]
    assert name == "CUDAExecutionProvider"
    assert options["device_id"] == "1" and options["user_compute_stream"] == "1001"
    assert options["has_user_compute_stream"] == "1"


def test_a_run_binds_on_its_device_and_does_not_synchronise_the_host(log, tmp_path, monkeypatch):
    engine = OrtEngine("unet", tmp_path / "u.onnx", IO_IN, IO_OUT, torch.device("cuda:1"))
    # CPU tensors stand in for cuda:1 memory from here on
    engine.device = types.SimpleNamespace(type="cuda", index=1, __str__=lambda self: "cpu")
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: self)
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, device=None, **k: real_empty(*a, **k))
    out = engine.run({"x": torch.ones(2, 4)})
    assert out["y"].shape == (2, 4)
    assert ("bind_input", "x", "cuda", 1) in log and ("bind_output", "y", "cuda", 1) in log
    assert ("host_sync",) not in log
    assert ("run", {"disable_synchronize_execution_providers": "1"}) in log


def test_silent_fallback_to_cpu_is_refused(monkeypatch, tmp_path):
    events: list = []
    monkeypatch.setitem(sys.modules, "onnxruntime", fake_ort(events, runs_on="CPUExecutionProvider"))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream(events, 0))
    with pytest.raises(BackendUnavailableError, match="runs on CPUExecutionProvider"):
        OrtEngine("unet", tmp_path / "u.onnx", IO_IN, IO_OUT, torch.device("cuda:0"))
