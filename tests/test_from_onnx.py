"""`export.build --from-onnx`: TensorRT plans built on the target from a shipped ONNX engine dir, against a fake
`tensorrt` that reads the real ONNX inputs (no GPU, no TensorRT here): the right graphs, profiles, flags and file
names reach the builder, and the new dir's manifest lists the plans with sha256 and TensorRT's own version."""

from __future__ import annotations

import json
import shutil
import sys

import onnx
import pytest
import torch
from conftest import quantized_engine_dir
from trt_api import PRECISION_FLAGS, builder_calls, fake_builder, strongly_typed_bits

from export import build as build_mod
from export import tensorrt as trt_build
from export.build import main, plans_from_onnx
from export.errors import BuildArgumentError
from runtime.errors import IntegrityError
from runtime.files import sha256_file
from runtime.manifest import MANIFEST_NAME, Manifest

GPU = {"name": "Jetson AGX Orin", "compute_capability": "8.7", "cuda": "12.6"}


def _install(monkeypatch, version: str) -> dict:
    calls = {**builder_calls(), "version": version}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_builder(calls, version=version))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(trt_build, "gpu_info", lambda device=None: dict(GPU))

    def verify(spec, ref, plan, io, recorded, precision):  # a fake plan cannot run; record what would be checked
        calls["verified"].append((plan.name, precision, sorted(ref.outputs)))
        return {"passed": True, "max_abs": 0.0, "cases": {}}

    monkeypatch.setattr(build_mod, "verify_plan", verify)
    return calls


@pytest.fixture(params=["10.3.0", "11.4.0"], ids=["trt10", "trt11"])
def log(monkeypatch, request):
    """Both API generations: for the builds whose calls into TensorRT differ between them."""
    return _install(monkeypatch, request.param)


@pytest.fixture
def log11(monkeypatch):
    """TensorRT 11 (pip's today): for what happens around the build, the same on both generations."""
    return _install(monkeypatch, "11.4.0")


def _tag(log: dict) -> str:
    major, minor = log["version"].split(".")[:2]
    return f"trt{major}.{minor}.sm87"


def test_plans_from_a_shipped_fp32_dir_with_fp16(engine_dir, tmp_path, log):
    out = plans_from_onnx(engine_dir, tmp_path / "orin", fp16=True, progress=False)
    m = Manifest.load(out)
    assert m.data["settings"]["backend"] == "tensorrt" and m.data["gpu"] == GPU
    assert m.data["tensorrt"]["typing"] == "strongly_typed"
    assert m.data["derived_from"]["manifest_sha256"] == sha256_file(engine_dir / MANIFEST_NAME)
    unet = m.components["unet"]
    plans = {a["precision"]: a for a in unet["artifacts"] if a["format"] == "tensorrt"}
    assert plans["fp16"]["file"] == f"plans/unet.fp16.{_tag(log)}.plan"
    assert plans["fp16"]["tensorrt_version"] == log["version"], "from trt.__version__, not pip metadata"
    assert plans["fp16"]["typing"] == "strongly_typed" and plans["fp16"]["flags"] == []
    assert unet["precision"] == "fp16"
    for art in plans.values():
        assert m.data["files"][art["file"]] == sha256_file(out / art["file"])
    # Strongly typed on both generations, every network; no precision flag anywhere (TensorRT 11 has none).
    assert log["network_flags"] and set(log["network_flags"]) == {strongly_typed_bits(log["version"])}
    assert not PRECISION_FLAGS & set().union(*log["flags"].values())
    # The fp16 plan is parsed from the fp16 graph, made here with the build's converter (the dir shipped fp32).
    (unet_fp16,) = {p for p in log["parsed"] if p.endswith("/onnx/unet.fp16.onnx")}  # in the dir being built
    assert plans["fp16"]["onnx"] == "onnx/unet.fp16.onnx"
    made = {a["precision"]: a for a in unet["artifacts"] if a["format"] == "onnx"}
    assert set(made) == {"fp32", "fp16"} and m.data["files"]["onnx/unet.fp16.onnx"] == sha256_file(
        out / "onnx" / "unet.fp16.onnx"
    )
    assert any(v["artifact"] == "onnx/unet.fp16.onnx" and v["passed"] for v in unet["verification"])
    onnx.checker.check_model(str(out / "onnx" / "unet.fp16.onnx"), full_check=True)
    lo, opt, hi = log["shapes"][unet_fp16]["sample"]
    assert lo[0] == 1 and opt[0] == 2 and hi[0] == 2 and lo[1:] == [9, 16, 16], "the spec's profile (batch 1..2)"
    assert {"csm_qformer"} == {n for n, e in m.components.items() if e["precision"] == "fp32"}, (
        "the Q-Former stays fp32"
    )
    assert (f"unet.fp16.{_tag(log)}.plan", "fp16", ["sample", "t=1", "t=981"]) in log["verified"]
    assert set(plans) == {"fp16"}, "no fp32 UNet plan nobody would load"
    decoder = {a["precision"]: a for a in m.components["vae_decoder"]["artifacts"] if a["format"] == "tensorrt"}
    assert set(decoder) == {"fp16", "fp32"}, "the decoder's fp32 plan is its NaN fallback on TensorRT"
    assert decoder["fp32"]["onnx"] == "onnx/vae_decoder.onnx" and decoder["fp32"]["flags"] == ["-TF32"]
    assert (out / "onnx" / "unet.onnx").is_file(), "the ONNX files stay for other backends"


def test_plans_from_a_shipped_fp16_dir_without_the_flag(engine_dir_fp16, tmp_path, log11):
    """An `--fp16` engine dir ships only `*.fp16.onnx` for the UNet: its plans come from those graphs."""
    out = plans_from_onnx(engine_dir_fp16, tmp_path / "orin", progress=False)
    m = Manifest.load(out)
    unet = {a["precision"]: a for a in m.components["unet"]["artifacts"] if a["format"] == "tensorrt"}
    assert set(unet) == {"fp16"} and unet["fp16"]["onnx"] == "onnx/unet.fp16.onnx"
    assert any(p.endswith("/onnx/unet.fp16.onnx") for p in log11["parsed"])
    assert not any(p.endswith("/onnx/unet.onnx") for p in log11["parsed"]), "no fp32 UNet graph shipped"
    assert set(log11["network_flags"]) == {strongly_typed_bits(log11["version"])}


def test_an_int8_dir_gets_an_int8_plan_from_its_qdq_onnx(engine_dir, tmp_path, log):
    """The Q/DQ UNet `export.build --int8` writes becomes a strongly typed INT8 plan on the target, checked against
    that Q/DQ graph (not the fp32 one), beside the fp16 plans; the UNet stays INT8."""
    src = quantized_engine_dir(engine_dir, tmp_path / "int8", "int8")
    out = plans_from_onnx(src, tmp_path / "orin", fp16=True, progress=False)
    m = Manifest.load(out)
    plans = {a["precision"]: a for a in m.components["unet"]["artifacts"] if a["format"] == "tensorrt"}
    assert set(plans) == {"fp16", "int8"} and m.components["unet"]["precision"] == "int8"
    assert plans["int8"]["onnx"] == "onnx/unet.int8.qdq.onnx" and plans["int8"]["flags"] == []
    assert any(p.endswith("/onnx/unet.int8.qdq.onnx") for p in log["parsed"])
    assert (f"unet.int8.{_tag(log)}.plan", "int8", ["sample", "t=1", "t=981"]) in log["verified"]
    assert set(log["network_flags"]) == {strongly_typed_bits(log["version"])}
    assert m.data["files"]["onnx/unet.int8.qdq.onnx"] == sha256_file(out / "onnx" / "unet.int8.qdq.onnx")


def test_fp8_plans_only_on_gpus_with_fp8_tensor_cores(engine_dir, tmp_path, log11, monkeypatch, capsys):
    """FP8 is opt-in: an E4M3 Q/DQ UNet (zero points 0, opset 19, runs on ONNX Runtime CPU) becomes an FP8 plan on
    an Ada/Hopper GPU; on Orin (8.7) `--fp8` is refused before any work, naming the GPU; without --fp8 no FP8 plan."""
    import numpy as np
    import onnxruntime as ort
    from onnx import numpy_helper

    src = quantized_engine_dir(engine_dir, tmp_path / "fp8", "fp8")
    model = onnx.load(str(src / "onnx" / "unet.fp8.qdq.onnx"))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {19}
    consts = {t.name: t for t in model.graph.initializer}
    zero_points = [consts[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(z.data_type == onnx.TensorProto.FLOAT8E4M3FN for z in zero_points)
    assert all(not numpy_helper.to_array(z).astype(np.float32).any() for z in zero_points), "zero points are 0"
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(src / "onnx" / "unet.onnx")).graph.initializer}
    scaled = [(n, numpy_helper.to_array(consts[f"{n}_scale"])) for n in original if f"{n}_scale" in consts]
    assert scaled, "weights quantized"
    for name, scale in scaled:  # TensorRT's FP8 recipe: the weight's |max| lands on E4M3's largest value, 448
        assert float(scale) == pytest.approx(float(np.abs(original[name]).max()) / 448, rel=1e-6), name
    session = ort.InferenceSession(str(src / "onnx" / "unet.fp8.qdq.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].name == "noise_pred"

    assert main(["--from-onnx", str(src), "--out", str(tmp_path / "orin"), "--fp8", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--fp8" in err and "Jetson AGX Orin" in err and "8.7" in err
    assert log11["parsed"] == [] and not (tmp_path / "orin").exists()

    plain = plans_from_onnx(src, tmp_path / "no-fp8", progress=False)
    assert "fp8" not in {a["precision"] for a in Manifest.load(plain).components["unet"]["artifacts"]
                         if a["format"] == "tensorrt"}  # fmt: skip
    monkeypatch.setattr(trt_build, "gpu_info", lambda device=None: {**GPU, "name": "L4", "compute_capability": "8.9"})
    out = plans_from_onnx(src, tmp_path / "l4", fp8=True, progress=False)
    unet = Manifest.load(out).components["unet"]
    plans = {a["precision"]: a for a in unet["artifacts"] if a["format"] == "tensorrt"}
    assert unet["precision"] == "fp8" and plans["fp8"]["onnx"] == "onnx/unet.fp8.qdq.onnx"
    assert plans["fp8"]["file"].endswith(".sm89.plan") and plans["fp8"]["flags"] == []


def test_fp8_needs_the_fp8_graph(engine_dir, tmp_path, log11, capsys):
    assert main(["--from-onnx", str(engine_dir), "--out", str(tmp_path / "o"), "--fp8", "-q"]) == 2
    assert "export.build --fp8" in capsys.readouterr().err and log11["parsed"] == []


def test_a_future_tensorrt_major_is_refused_before_any_work(engine_dir, tmp_path, monkeypatch, capsys):
    calls = builder_calls()
    fake = fake_builder(calls, version="11.4.0")
    fake.__version__ = "12.0.1"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(trt_build, "gpu_info", lambda device=None: dict(GPU))
    assert main(["--from-onnx", str(engine_dir), "--out", str(tmp_path / "orin"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "TensorRT 12" in err and "tensorrt<12" in err
    assert calls["parsed"] == [] and not (tmp_path / "orin").exists()


def test_the_fp16_dir_loads_every_engine_and_the_nan_fallback_on_tensorrt(engine_dir, tmp_path, log11, monkeypatch):
    """The decoder's fp32 fallback in a TensorRT fp16 dir is its fp32 plan, not an ORT session (which would need
    onnxruntime-gpu on the Jetson)."""
    import runtime.tensorrt_engine as trt_engine
    from acsdk.inference.parts import parts_from_engine_dir

    out = plans_from_onnx(engine_dir, tmp_path / "orin", fp16=True, progress=False)
    opened = {}

    class Plan:
        backend = "tensorrt"

        def __init__(self, name, plan, inputs, outputs, recorded, device, allow_unverified=False):
            opened.setdefault(name, []).append(plan.name)

    monkeypatch.setattr(trt_engine, "TensorRTEngine", Plan)
    monkeypatch.setattr(trt_engine, "tensorrt_usable", lambda: (True, ""))
    # CPU tensors stand in for the GPU: the plans are stubs, the torch-side Q-Former cannot go to CUDA here
    parts, _ = parts_from_engine_dir(out, "tensorrt", torch.device("cpu"), True, None, None)
    assert parts.fallbacks == [] and {e.backend for e in parts.engines.values()} == {"tensorrt"}
    assert opened["vae_decoder"] == [f"vae_decoder.fp16.{_tag(log11)}.plan", f"vae_decoder.fp32.{_tag(log11)}.plan"]
    assert parts.engines["vae_decoder_fp32"].precision == "fp32"


def test_changed_source_refused_before_building_and_bad_paths(engine_dir, tmp_path, log11, capsys):
    work = shutil.copytree(engine_dir, tmp_path / "shipped")
    data = bytearray((work / "onnx" / "vae_decoder.onnx").read_bytes())
    data[-5] ^= 0xFF
    (work / "onnx" / "vae_decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="vae_decoder.onnx"):
        plans_from_onnx(work, tmp_path / "orin", progress=False)
    assert log11["parsed"] == [] and not (tmp_path / "orin").exists()
    assert main(["--from-onnx", str(work), "--out", str(tmp_path / "orin"), "-q"]) == 1, "a failure, not bad usage"
    assert "vae_decoder.onnx" in capsys.readouterr().err
    with pytest.raises(BuildArgumentError, match="--timing-cache"):
        plans_from_onnx(engine_dir, tmp_path / "o2", timing_cache=tmp_path / "no" / "such" / "cache", progress=False)
    assert main(["--from-onnx", str(engine_dir), "--out", str(tmp_path / "o3"), "--int8", "--height", "128"]) == 2
    err = capsys.readouterr().err
    assert "--int8" in err and "--height" in err and not (tmp_path / "o3").exists()


def test_a_build_that_runs_out_of_memory_names_the_component_and_what_to_lower(engine_dir, tmp_path, monkeypatch):
    calls = builder_calls()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_builder(calls, build_fails=True))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(trt_build, "gpu_info", lambda device=None: dict(GPU))
    with pytest.raises(trt_build.TensorRTBuildError) as err:
        plans_from_onnx(engine_dir, tmp_path / "orin", progress=False)
    message = str(err.value)
    assert message.startswith("text_encoder (fp32)") and "--max-batch" in message and "workspace" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_fp16_onnx_files_pass_the_strict_checker_and_keep_the_time_embedding_fp32(engine_dir_fp16):
    for path in sorted((engine_dir_fp16 / "onnx").glob("*.onnx")):
        onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.shape_inference.infer_shapes(
        onnx.load(str(engine_dir_fp16 / "onnx" / "unet.fp16.onnx")), strict_mode=True
    )
    types_ = {v.name: v.type.tensor_type.elem_type for v in [*graph.graph.value_info, *graph.graph.input]}
    sines = [n for n in graph.graph.node if n.op_type in ("Sin", "Cos")]
    assert sines and all(types_[n.input[0]] == onnx.TensorProto.FLOAT for n in sines), "sinusoid in fp32"
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    fp16_convs = [n for n in convs if types_.get(n.input[0]) == onnx.TensorProto.FLOAT16]
    assert len(fp16_convs) > len(convs) // 2, "the rest of the UNet is fp16"
    manifest = json.loads((engine_dir_fp16 / MANIFEST_NAME).read_text())
    assert manifest["components"]["vae_encoder"]["precision"] == "fp16"
    assert {a["precision"] for a in manifest["components"]["vae_encoder"]["artifacts"]} == {"fp16", "fp32"}
