"""The TensorRT build path: pure helpers, and build_plan driven against a fake `tensorrt` module (no GPU needed).

The one `gpu` test builds and runs a real plan; it is skipped without TensorRT or CUDA.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest
from trt_api import PRECISION_FLAGS, api, strongly_typed_bits

from acsdk.errors import ACSDKError
from export import tensorrt as trt_build
from export.specs import SPECS, Dims
from export.tensorrt import TensorRTBuildError
from runtime.compat import check_plan_compatibility
from runtime.tensorrt_engine import tensorrt_status, tensorrt_usable

DIMS = Dims(
    height=64,
    width=64,
    latent_height=8,
    latent_width=8,
    latent_channels=4,
    latent_moments=8,
    unet_in_channels=9,
    text_length=7,
    text_dim=32,
    text_vocab=100,
    vision_size=32,
    image_tokens=5,
    vision_dim=16,
    qformer_length=6,
    qformer_vocab=50,
    semantic_tokens=4,
)
GPU = {"name": "Fake GPU", "compute_capability": "8.9", "cuda": "12.4"}


def unet_profile(max_batch: int = 2) -> dict:
    return SPECS["unet"].profile(DIMS, max_batch=max_batch)


def network_inputs(profile: dict) -> dict[str, tuple[int, ...]]:
    """The shapes an exported ONNX declares for a profile: batch (axis 0) dynamic (-1) when it varies."""
    shapes = {}
    for name, entry in profile.items():
        shapes[name] = tuple(-1 if lo != hi else lo for lo, hi in zip(entry["min"], entry["max"], strict=True))
    return shapes


# -- pure helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("component", "precision", "version", "cc", "expected"),
    [
        ("unet", "fp16", "10.6.0", "8.9", "unet.fp16.trt10.6.sm89.plan"),
        ("vae_decoder", "fp32", "10.13.2", "12.0", "vae_decoder.fp32.trt10.13.sm120.plan"),
        ("text_encoder", "fp16", "10.0.1.6", "9.0", "text_encoder.fp16.trt10.0.sm90.plan"),
        ("csm_qformer", "fp32", "10.8.0.post1", "7.5", "csm_qformer.fp32.trt10.8.sm75.plan"),
    ],
)
def test_plan_filename(component, precision, version, cc, expected):
    assert trt_build.plan_filename(component, precision, trt_version=version, compute_capability=cc) == expected


@pytest.mark.parametrize(
    ("component", "precision", "version", "cc"),
    [
        ("unet", "int4", "10.6.0", "8.9"),  # unknown precision
        ("unet", "fp16", "ten", "8.9"),  # unparsable version
        ("unet", "fp16", "10", "8.9"),  # no minor version
        ("unet", "fp16", "10.6.0", "89"),  # compute capability without the dot
        ("unet", "fp16", "10.6.0", "sm_89"),
        ("", "fp16", "10.6.0", "8.9"),  # empty component
        ("../unet", "fp16", "10.6.0", "8.9"),  # a path, not a name
    ],
)
def test_plan_filename_rejects_bad_input_with_a_build_error(component, precision, version, cc):
    # A typed error the CLI turns into a message and exit 1, not a ValueError traceback.
    with pytest.raises(TensorRTBuildError) as err:
        trt_build.plan_filename(component, precision, trt_version=version, compute_capability=cc)
    assert isinstance(err.value, ACSDKError) and not isinstance(err.value, ValueError)


def test_builder_flag_names():
    # Precision lives in the graph (strongly typed): no precision flag, on any TensorRT.
    assert trt_build.builder_flag_names("fp16") == []
    # fp32 plans turn TF32 (on by default in TensorRT) off to meet the fp32 tolerance
    assert trt_build.builder_flag_names("fp32") == ["-TF32"]
    # Q/DQ graphs (INT8, FP8) carry their precision too
    assert trt_build.builder_flag_names("int8") == [] and trt_build.builder_flag_names("fp8") == []
    with pytest.raises(TensorRTBuildError, match="precision"):
        trt_build.builder_flag_names("int4")


def test_check_plan_compatibility_match():
    recorded = {"tensorrt_version": "10.6.0", "compute_capability": "8.9"}
    assert check_plan_compatibility(recorded, current_trt="10.6.0", current_cc="8.9") is None
    # plans built without version compatibility load only on the exact TensorRT version
    msg = check_plan_compatibility(recorded, current_trt="10.6.1", current_cc="8.9")
    assert msg is not None and "10.6.1" in msg and "python -m export.build" in msg


def test_check_plan_compatibility_trt_minor_differs():
    recorded = {"tensorrt_version": "10.6.0", "compute_capability": "8.9"}
    msg = check_plan_compatibility(recorded, current_trt="10.7.0", current_cc="8.9")
    assert msg is not None
    assert "10.6.0" in msg and "10.7.0" in msg
    assert "compute capability" not in msg
    assert "python -m export.build" in msg


def test_check_plan_compatibility_cc_differs():
    recorded = {"tensorrt_version": "10.6.0", "compute_capability": "8.9"}
    msg = check_plan_compatibility(recorded, current_trt="10.6.0", current_cc="9.0")
    assert msg is not None
    assert "8.9" in msg and "9.0" in msg and "sm90" in msg
    assert "TensorRT 10.6.0 but" not in msg  # the version matched, only the GPU differs
    assert "python -m export.build" in msg
    # "exactly": 8.6 plans do not run on 8.9 either
    assert check_plan_compatibility(recorded, current_trt="10.6.0", current_cc="8.6") is not None


def test_check_plan_compatibility_both_differ_and_missing_fields():
    msg = check_plan_compatibility(
        {"tensorrt_version": "10.3.0", "compute_capability": "8.0"}, current_trt="10.6.0", current_cc="8.9"
    )
    assert "10.3.0" in msg and "8.0" in msg and "python -m export.build" in msg
    msg = check_plan_compatibility({}, current_trt="10.6.0", current_cc="8.9")
    assert msg is not None and "python -m export.build" in msg


def test_tensorrt_usable_false_without_tensorrt(monkeypatch):
    # A None entry makes `import tensorrt` raise ImportError whatever is installed.
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    ok, reason = tensorrt_usable()
    assert ok is False
    assert "tensorrt" in reason.lower()


def test_tensorrt_usable_here():
    # This machine has no TensorRT (and no GPU): the builder must be told why, not crash.
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except Exception:
        has_trt = False
    import torch

    if has_trt and torch.cuda.is_available():
        pytest.skip("TensorRT and CUDA are both present here")
    ok, reason = tensorrt_usable()
    assert ok is False
    assert "tensorrt" in reason.lower()


def test_tensorrt_usable_without_cuda(monkeypatch):
    import torch

    fake, _ = make_fake_trt({})
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, reason = tensorrt_usable()
    assert ok is False
    assert "CUDA" in reason and "10.3.0" in reason
    assert trt_build.gpu_info() is None


def test_tensorrt_usable_old_version(monkeypatch):
    fake, _ = make_fake_trt({})
    fake.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    ok, reason = tensorrt_usable()
    assert ok is False
    assert "8.6.1" in reason and ">= 10" in reason


@pytest.mark.parametrize(("version", "supported"), [("10.3.0", True), ("11.4.0", True), ("12.0.1", False)])
def test_tensorrt_usable_names_the_major_and_refuses_an_unknown_future_one(monkeypatch, version, supported):
    import torch

    fake, _ = make_fake_trt({}, version="11.4.0" if version.startswith("12") else version)
    fake.__version__ = version
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ok, reason = tensorrt_usable()
    assert ok is supported
    status = tensorrt_status()  # what `acsdk info` reports under "tensorrt"
    assert status["major"] == int(version.split(".")[0]) and status["supported"] is supported
    if not supported:
        assert "TensorRT 12 is newer" in reason and "tensorrt<12" in reason


# -- a fake tensorrt module ---------------------------------------------------------------------------


class FakeState:
    """What the fake module was told, and what it should answer."""

    def __init__(self, inputs, parser_errors, plan, timing_cache_ok):
        self.inputs = inputs
        self.parser_errors = list(parser_errors)
        self.plan = plan
        self.timing_cache_ok = timing_cache_ok
        self.network_flags = []  # what create_network() was given
        self.parsed_paths = []
        self.set_shapes = []
        self.flags = set()
        self.cleared = []
        self.pool_limits = {}
        self.profiles_added = 0
        self.timing_cache_inputs = []
        self.built = 0


def make_fake_trt(inputs, *, parser_errors=(), plan=b"FAKE-PLAN", timing_cache_ok=True, version="10.3.0"):
    state = FakeState(inputs, parser_errors, plan, timing_cache_ok)

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity=None):
            self.severity = severity

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self):
            self.inputs = []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class ParserError:
        def __init__(self, msg):
            self.msg = msg

        def __str__(self):
            return self.msg

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            assert isinstance(path, str)
            state.parsed_paths.append(path)
            if state.parser_errors:
                return False
            self.network.inputs = [Tensor(n, s) for n, s in state.inputs.items()]
            return True

        @property
        def num_errors(self):
            return len(state.parser_errors)

        def get_error(self, i):
            return ParserError(state.parser_errors[i])

    class OptimizationProfile:
        def set_shape(self, name, lo, opt, hi):
            state.set_shapes.append((name, list(lo), list(opt), list(hi)))

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+timings"

    class BuilderConfig:
        def __init__(self):
            state.flags = {"TF32"}  # TensorRT's default
            self.cache = None

        def set_flag(self, flag):
            state.flags.add(flag)

        def clear_flag(self, flag):
            state.cleared.append(flag)
            state.flags.discard(flag)

        def set_memory_pool_limit(self, pool, size):
            state.pool_limits[pool] = size

        def add_optimization_profile(self, profile):
            assert isinstance(profile, OptimizationProfile)
            state.profiles_added += 1
            return state.profiles_added - 1

        def create_timing_cache(self, data):
            state.timing_cache_inputs.append(bytes(data))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            assert ignore_mismatch is False
            if cache.data and not state.timing_cache_ok:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            assert isinstance(logger, Logger)

        def create_network(self, flags):
            state.network_flags.append(flags)
            return Network()

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            assert state.profiles_added == 1
            state.built += 1
            return state.plan

    fake = types.ModuleType("tensorrt")
    fake.__version__ = version
    fake.Logger = Logger
    fake.Builder = Builder
    fake.OnnxParser = OnnxParser
    for name, namespace in api(version).items():  # the flags as this major has them
        setattr(fake, name, namespace)
    fake.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    return fake, state


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    path = tmp_path / "onnx" / "unet.onnx"
    path.parent.mkdir()
    path.write_bytes(b"not parsed by the fake")
    return path


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(trt_build, "gpu_info", lambda device=None: dict(GPU))


def install(monkeypatch, **kwargs):
    profile = kwargs.pop("profile", None) or unet_profile()
    fake, state = make_fake_trt(kwargs.pop("inputs", None) or network_inputs(profile), **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return profile, state


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# -- build_plan against the fake ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"], ids=["trt10", "trt11"])
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_build_plan_fake(monkeypatch, fake_gpu, onnx_file, tmp_path, precision, version):
    profile, state = install(monkeypatch, version=version)
    plan_path = tmp_path / "engines" / "unet.plan"  # the folder does not exist yet
    cache = tmp_path / "timing.cache"

    info = trt_build.build_plan(onnx_file, plan_path, profile, precision, timing_cache=cache)

    assert state.parsed_paths == [str(onnx_file)]
    # strongly typed through the creation flag's own bit on each major (1 on 10, 0 on 11), nothing else
    assert state.network_flags == [strongly_typed_bits(version)]
    assert state.set_shapes == [(n, e["min"], e["opt"], e["max"]) for n, e in profile.items()]
    assert state.set_shapes[0] == ("sample", [1, 9, 8, 8], [2, 9, 8, 8], [4, 9, 8, 8])
    assert state.profiles_added == 1
    assert not PRECISION_FLAGS & state.flags, "precision is the graph's, never a builder flag"
    if precision == "fp16":
        assert state.flags == {"TF32"} and state.cleared == []
    else:
        assert state.flags == set() and state.cleared == ["TF32"]
    assert state.pool_limits == {}  # no workspace_gb: TensorRT's default (all of the GPU's memory)

    assert plan_path.read_bytes() == b"FAKE-PLAN"
    assert leftovers(plan_path.parent) == [] and leftovers(tmp_path) == []
    assert state.timing_cache_inputs == [b""]  # no cache file yet: a fresh one
    assert cache.read_bytes() == b"+timings"

    assert info["tensorrt_version"] == version
    assert info["compute_capability"] == "8.9"
    assert info["gpu_name"] == "Fake GPU"
    assert info["precision"] == precision and info["typing"] == "strongly_typed"
    assert info["flags"] == trt_build.builder_flag_names(precision)
    assert isinstance(info["build_seconds"], float)
    assert info["profile"] == profile


def test_build_plan_reuses_timing_cache_and_sets_workspace(monkeypatch, fake_gpu, onnx_file, tmp_path):
    profile, state = install(monkeypatch)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"OLD")
    plan_path = tmp_path / "unet.plan"
    plan_path.write_bytes(b"STALE")  # replaced, not appended to

    trt_build.build_plan(onnx_file, plan_path, profile, "fp16", timing_cache=cache, workspace_gb=2)

    assert state.timing_cache_inputs == [b"OLD"]
    assert cache.read_bytes() == b"OLD+timings"
    assert state.pool_limits == {"WORKSPACE": 2 * 2**30}
    assert plan_path.read_bytes() == b"FAKE-PLAN"
    assert leftovers(tmp_path) == []


def test_build_plan_mismatched_timing_cache_starts_fresh(monkeypatch, fake_gpu, onnx_file, tmp_path, caplog):
    profile, state = install(monkeypatch, timing_cache_ok=False)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"FROM-ANOTHER-GPU")
    with caplog.at_level(logging.WARNING, logger="export.tensorrt"):
        trt_build.build_plan(onnx_file, tmp_path / "unet.plan", profile, "fp16", timing_cache=cache)
    assert state.timing_cache_inputs == [b"FROM-ANOTHER-GPU", b""]
    assert cache.read_bytes() == b"+timings"
    assert "timing cache" in caplog.text


def test_build_plan_without_timing_cache(monkeypatch, fake_gpu, onnx_file, tmp_path):
    profile, state = install(monkeypatch)
    trt_build.build_plan(onnx_file, tmp_path / "unet.plan", profile, "fp16")
    assert state.timing_cache_inputs == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx", "unet.plan"]


def test_build_plan_parser_errors(monkeypatch, fake_gpu, onnx_file, tmp_path):
    profile, state = install(
        monkeypatch, parser_errors=["In node 3 (GroupNorm): UNSUPPORTED_NODE: bad attribute", "second problem"]
    )
    plan_path = tmp_path / "unet.plan"
    with pytest.raises(TensorRTBuildError) as err:
        trt_build.build_plan(onnx_file, plan_path, profile, "fp16")
    assert "UNSUPPORTED_NODE: bad attribute" in str(err.value)
    assert "second problem" in str(err.value)
    assert str(onnx_file) in str(err.value)
    assert state.built == 0
    assert not plan_path.exists()


def test_build_plan_build_failure(monkeypatch, fake_gpu, onnx_file, tmp_path):
    profile, state = install(monkeypatch, plan=None)
    plan_path = tmp_path / "unet.plan"
    cache = tmp_path / "timing.cache"
    with pytest.raises(TensorRTBuildError, match="build_serialized_network returned None"):
        trt_build.build_plan(onnx_file, plan_path, profile, "fp16", timing_cache=cache)
    assert state.built == 1
    assert not plan_path.exists() and not cache.exists()
    assert leftovers(tmp_path) == []


def test_build_plan_input_without_profile(monkeypatch, fake_gpu, onnx_file, tmp_path):
    profile = unet_profile()
    inputs = network_inputs(profile)
    del profile["semantic_scale"]
    _, state = install(monkeypatch, profile=profile, inputs=inputs)
    with pytest.raises(TensorRTBuildError, match="without a profile entry") as err:
        trt_build.build_plan(onnx_file, tmp_path / "unet.plan", profile, "fp16")
    assert "semantic_scale" in str(err.value)
    assert state.built == 0


def test_build_plan_profile_names_unknown_input(monkeypatch, fake_gpu, onnx_file, tmp_path):
    profile = unet_profile()
    inputs = network_inputs(profile)
    profile["mask"] = {"min": [1], "opt": [1], "max": [1]}
    _, state = install(monkeypatch, profile=profile, inputs=inputs)
    with pytest.raises(TensorRTBuildError, match="does not have") as err:
        trt_build.build_plan(onnx_file, tmp_path / "unet.plan", profile, "fp16")
    assert "mask" in str(err.value)
    assert state.built == 0


def test_build_plan_profile_contradicts_static_dim(monkeypatch, fake_gpu, onnx_file, tmp_path):
    profile = unet_profile()
    inputs = network_inputs(profile)
    inputs["sample"] = (-1, 4, 8, 8)  # the ONNX says 4 channels, the profile 9
    _, state = install(monkeypatch, profile=profile, inputs=inputs)
    with pytest.raises(TensorRTBuildError, match="'sample' axis 1 is fixed to 4"):
        trt_build.build_plan(onnx_file, tmp_path / "unet.plan", profile, "fp16")
    assert state.built == 0


def test_build_plan_needs_a_gpu(monkeypatch, onnx_file, tmp_path):
    profile, state = install(monkeypatch)
    monkeypatch.setattr(trt_build, "gpu_info", lambda device=None: None)
    with pytest.raises(TensorRTBuildError, match="no CUDA GPU"):
        trt_build.build_plan(onnx_file, tmp_path / "unet.plan", profile, "fp16")
    assert state.parsed_paths == []


def test_build_plan_missing_onnx(monkeypatch, fake_gpu, tmp_path):
    profile, _ = install(monkeypatch)
    with pytest.raises(TensorRTBuildError, match="not found"):
        trt_build.build_plan(tmp_path / "nope.onnx", tmp_path / "unet.plan", profile, "fp16")


def test_build_plan_without_tensorrt(monkeypatch, onnx_file, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTBuildError, match="tensorrt is not importable"):
        trt_build.build_plan(onnx_file, tmp_path / "unet.plan", unet_profile(), "fp16")


def test_build_plan_refuses_a_future_major_before_building(monkeypatch, fake_gpu, onnx_file, tmp_path):
    profile, state = install(monkeypatch, version="11.4.0")
    sys.modules["tensorrt"].__version__ = "12.0.1"
    with pytest.raises(TensorRTBuildError, match="TensorRT 12 is newer"):
        trt_build.build_plan(onnx_file, tmp_path / "unet.plan", profile, "fp16")
    assert state.built == 0 and state.network_flags == []


def test_build_plan_without_strong_typing_on_10_is_refused(monkeypatch, fake_gpu, onnx_file, tmp_path):
    """A TensorRT 10 without the creation flag could only build weakly typed: refused, never a silent fp32 plan."""
    profile, state = install(monkeypatch, version="10.3.0")
    monkeypatch.setattr(sys.modules["tensorrt"], "NetworkDefinitionCreationFlag", types.SimpleNamespace())
    with pytest.raises(TensorRTBuildError, match="STRONGLY_TYPED"):
        trt_build.build_plan(onnx_file, tmp_path / "unet.plan", profile, "fp16")
    assert state.built == 0


def test_build_plan_on_an_11_without_the_flag_is_strongly_typed_anyway(monkeypatch, fake_gpu, onnx_file, tmp_path):
    profile, state = install(monkeypatch, version="11.4.0")
    monkeypatch.setattr(sys.modules["tensorrt"], "NetworkDefinitionCreationFlag", types.SimpleNamespace())
    trt_build.build_plan(onnx_file, tmp_path / "unet.plan", profile, "fp16")
    assert state.network_flags == [0] and state.built == 1


# -- a real build -------------------------------------------------------------------------------------------


def _tiny_onnx(path: Path) -> None:
    """y = relu(x) * 2 with x: [batch, 3] float32, built with onnx.helper (opset 17, IR 8 for TensorRT's parser)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    two = numpy_helper.from_array(np.array([2.0], dtype=np.float32), name="two")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "two"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
def test_build_real_plan(tmp_path, fp16):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'acsdk[tensorrt]')")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: torch.cuda.is_available() is False")
    onnx_path = tmp_path / "tiny.onnx"
    _tiny_onnx(onnx_path)
    profile = {"x": {"min": [1, 3], "opt": [2, 3], "max": [4, 3]}}
    gpu = trt_build.gpu_info()
    name = trt_build.plan_filename(
        "tiny", "fp16" if fp16 else "fp32", trt_version=trt.__version__, compute_capability=gpu["compute_capability"]
    )
    plan_path, cache = tmp_path / name, tmp_path / "timing.cache"

    if fp16:  # strongly typed: the fp16 plan is built from the fp16 graph (fp32 IO), as export.build does
        from export.onnx_export import convert_fp16

        onnx_path = convert_fp16(onnx_path, tmp_path / "tiny.fp16.onnx")
    precision = "fp16" if fp16 else "fp32"
    info = trt_build.build_plan(onnx_path, plan_path, profile, precision, timing_cache=cache, workspace_gb=1)

    assert info["tensorrt_version"] == trt.__version__
    assert info["compute_capability"] == gpu["compute_capability"]
    assert cache.stat().st_size > 0
    assert leftovers(tmp_path) == []
    recorded = {k: info[k] for k in ("tensorrt_version", "compute_capability")}
    assert check_plan_compatibility(recorded, trt.__version__, gpu["compute_capability"]) is None

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_path.read_bytes())
    assert engine is not None
    assert {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)} == {"x", "y"}
    context = engine.create_execution_context()
    x = torch.tensor([[-1.0, 0.5, 2.0], [3.0, -4.0, 0.25], [0.0, 1.0, -2.0]], device="cuda")
    y = torch.empty_like(x)
    context.set_input_shape("x", tuple(x.shape))
    context.set_tensor_address("x", x.data_ptr())
    context.set_tensor_address("y", y.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    torch.testing.assert_close(y, torch.relu(x) * 2, atol=1e-3, rtol=1e-3)
