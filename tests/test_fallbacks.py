"""`backend="auto"` falls back where a backend fails, and says so in one line; explicit backends fail typed.

ONNX Runtime's own errors (pybind exceptions) become `BackendUnavailableError` at load and `EngineRunError` at run,
each naming the component and the backend; a backend `auto` chose that fails at its first call (OpenVINO compiles
then) hands over to the next; the backend `auto`'s measurement picks is the engine it timed, not a second copy."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
from conftest import FAST
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

import acsdk
import runtime.onnxruntime_engine as ort_engine
import runtime.openvino_engine as ov_engine
from runtime.errors import BackendUnavailableError, EngineRunError

pytest.importorskip("openvino", reason="the fallbacks are between OpenVINO and ONNX Runtime")


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """A user cache of its own: `auto` measures its backends here (no measurement cached by another test)."""
    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "cache"))


def test_a_graph_onnxruntime_cannot_load_is_a_typed_error_and_auto_runs_it_on_openvino(engine_dir, scene, monkeypatch):
    import onnxruntime as ort

    def broken(*args, **kwargs):
        raise ort_state.InvalidGraph("[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model failed: bad node")

    real = ort.InferenceSession

    def session(path, *args, **kwargs):
        return (broken if "unet" in str(path) else real)(path, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", session)
    explicit = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
    with pytest.raises(BackendUnavailableError, match=r"^unet: ONNX Runtime cannot load .*: Load model failed") as e:
        explicit.parts.engines["unet"]
    assert "\n" not in str(e.value)
    auto = acsdk.Synthesizer(engine_dir, device="cpu")
    assert auto.parts.engines["unet"].backend == "openvino"
    choice = auto.info()["backend_choice"]["unet@fp32"]
    assert choice["order"][0] == "openvino" and "cannot load" in choice["failed"]["onnxruntime"]
    res = auto.run(**scene, prompt="a scratch", seed=1, **FAST)
    assert np.asarray(res.image).shape == (64, 64, 3)


def test_an_onnxruntime_run_failure_names_the_component_and_backend(engine_dir, scene, monkeypatch):
    synth = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
    unet = synth.parts.engines["unet"]

    def fail(*args, **kwargs):
        raise ort_state.RuntimeException("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code")

    monkeypatch.setattr(unet.session, "run", fail)
    with pytest.raises(EngineRunError, match=r"^unet: ONNX Runtime failed to run it: Non-zero status code$"):
        synth.run(**scene, prompt="a scratch", seed=1, **FAST)


def test_auto_falls_back_when_openvino_fails_at_its_first_call_and_remembers_it(engine_dir, scene, monkeypatch):
    """low_memory takes OpenVINO without measuring; its compilation (at the first call) fails: the image comes from
    ONNX Runtime, the fallback is recorded, and later images (low_memory reopens the UNet each time) go straight to
    ONNX Runtime."""
    compiles = []

    def cannot_compile(self, shapes):
        if self.name != "unet":
            return real(self, shapes)
        compiles.append(shapes)
        raise BackendUnavailableError(f"unet: OpenVINO cannot compile it for input shapes {list(shapes)} on CPU: x")

    real = ov_engine.OpenVINOEngine._compiled_for
    monkeypatch.setattr(ov_engine.OpenVINOEngine, "_compiled_for", cannot_compile)
    synth = acsdk.Synthesizer(engine_dir, device="cpu", low_memory=True)
    first = synth.run(**scene, prompt="a scratch", seed=1, **FAST)
    notes = synth.info()["fallbacks"]
    assert any(n.startswith("unet: onnxruntime on cpu") and "failed at its first call" in n for n in notes), notes
    second = synth.run(**scene, prompt="a scratch", seed=1, **FAST)
    assert len(compiles) == 1, "OpenVINO was not tried again for the UNet"
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
    reference = acsdk.Synthesizer(engine_dir, device="cpu", component_backends={"unet": "onnxruntime"}, low_memory=True)
    monkeypatch.setattr(ov_engine.OpenVINOEngine, "_compiled_for", real)
    assert np.array_equal(np.asarray(first.image), np.asarray(reference.run(**scene, prompt="a scratch", seed=1,
                                                                                **FAST).image))  # fmt: skip


@pytest.mark.parametrize("faster", ["openvino", "onnxruntime"])
def test_autos_measurement_keeps_the_engine_it_chose_and_holds_one_at_a_time(engine_dir, monkeypatch, faster):
    """OpenVINO, the usual winner, is timed last and kept open when it wins; no two engines of a component are ever
    held at once (at real size each UNet holds GBs). ONNX Runtime winning costs it a second opening."""
    import acsdk.inference.backend_choice as backend_choice

    opened, alive = [], []
    for cls in (ov_engine.OpenVINOEngine, ort_engine.OrtEngine):
        real = cls.__init__

        def init(self, name, *args, real=real, cls=cls, **kwargs):
            if name == "unet":
                opened.append(cls.backend)
                alive.append(weakref.ref(self))
                held = [r() for r in alive if r() is not None and r() is not self]
                assert not held, "a second UNet engine opened while another was held"
            return real(self, name, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", init)
    monkeypatch.setattr(backend_choice, "time_engine", lambda engine, feed: 1.0 if engine.backend == faster else 2.0)
    synth = acsdk.Synthesizer(engine_dir, device="cpu", low_memory=False)
    unet = synth.parts.engines["unet"]
    choice = synth.info()["backend_choice"]["unet@fp32"]
    assert choice["cached"] is False and choice["order"][0] == faster and unet.backend == faster
    expected = ["onnxruntime", "openvino"] + (["onnxruntime"] if faster == "onnxruntime" else [])
    assert opened == expected
