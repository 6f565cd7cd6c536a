"""`backend="auto"` on a CUDA device: the UNet runs TensorRT's plan of the dir's precision, whatever the host CPU.

The INT8 gate about the host CPU's integer arithmetic (runtime/cpu.py) decides only where the CPU runs the INT8
UNet (OpenVINO on the CPU device); a Jetson's aarch64 host or a VNNI-less x86 line PC must not demote the INT8 plan a
GPU runs. No GPU or TensorRT here: TensorRT's module and engine are stand-ins that record what was opened."""

from __future__ import annotations

import json
import platform
import shutil
import sys
import types

import pytest
import torch

import acsdk
import runtime.tensorrt_engine as trt_engine
from runtime import Engine
from runtime.manifest import list_files, write_manifest

# The plans each kind of engine dir holds for the UNet, by the dir's UNet precision (from `export.build` +
# `--from-onnx`): fp32 and fp16 dirs, an `--int8` dir given INT8 and fp16 plans on the target (`--from-onnx --fp16`),
# one given only the INT8 plan, and an `--fp8` dir with its FP8 plan on an Ada/Hopper GPU.
DIRS = {
    "fp32": ("fp32", ["fp32"]),
    "fp16": ("fp16", ["fp16"]),
    "int8 + fp16 plans": ("int8", ["fp16", "int8"]),
    "int8 plan only": ("int8", ["int8"]),
    "fp8 + fp16 plans": ("fp8", ["fp16", "fp8"]),
}


class StubPlan(Engine):
    """Stands in for TensorRTEngine: records the plan it was given."""

    backend = "tensorrt"
    opened: list[tuple[str, str]] = []

    def __init__(self, name, plan, inputs, outputs, recorded, device, **kwargs):
        self.name, self.plan, self.device = name, plan, device
        StubPlan.opened.append((name, recorded["precision"]))

    def run(self, inputs):  # pragma: no cover - never run here
        raise AssertionError("not run")


@pytest.fixture
def trt_here(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(trt_engine, "TensorRTEngine", StubPlan)
    StubPlan.opened = []


def with_plans(engine_dir, dest, precision: str, plans: list[str]):
    root = shutil.copytree(engine_dir, dest, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("schema_version")
    unet = manifest["components"]["unet"]
    unet["precision"] = precision
    (root / "plans").mkdir()
    for prec in plans:
        file = f"plans/unet.{prec}.trt10.3.sm87.plan"
        (root / file).write_bytes(b"plan " + prec.encode())
        unet["artifacts"].append({"format": "tensorrt", "precision": prec, "file": file, "tensorrt_version": "10.3.0",
                                  "compute_capability": "8.7", "verification": {"passed": True}})  # fmt: skip
    if precision == "int8":  # as `export.build --int8` records its OpenVINO INT8 artifact, gated on this build CPU
        unet["artifacts"].append({"format": "openvino", "precision": "int8", "file": "openvino/unet.int8.xml",
                                  "data_files": [], "overflow_fix": "enable",
                                  "build_cpu": {"machine": "x86_64", "int8_accumulates_exactly": True}})  # fmt: skip
    manifest["files"] = list_files(root)
    write_manifest(root, manifest)
    return root


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
@pytest.mark.parametrize("kind", list(DIRS))
def test_auto_on_cuda_runs_the_plan_of_the_dirs_precision_on_any_host_cpu(
    engine_dir, tmp_path, trt_here, monkeypatch, kind, machine
):
    precision, plans = DIRS[kind]
    root = with_plans(engine_dir, tmp_path / "e", precision, plans)
    monkeypatch.setattr(platform, "machine", lambda: machine)  # a Jetson Orin / GH200 host is aarch64
    synth = acsdk.Synthesizer(root, device="cuda")
    unet = synth.parts.engines["unet"]
    expected = precision if precision in plans else "fp16"
    assert StubPlan.opened == [("unet", expected)], StubPlan.opened
    assert unet.backend == "tensorrt" and unet.precision == expected
    assert synth.info()["fallbacks"] == [], "no CPU check demoted the GPU's UNet"


def test_the_cpu_check_still_decides_where_the_cpu_runs_the_int8_unet(engine_dir, tmp_path, trt_here, monkeypatch):
    """The same int8 dir on an aarch64 host without CUDA: OpenVINO on the CPU would run an INT8 gated on x86, so the
    UNet runs fp32 there and says why."""
    root = with_plans(engine_dir, tmp_path / "e", "int8", ["int8"])
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    synth = acsdk.Synthesizer(root, device="cpu", backend="openvino")
    assert synth.parts.engines["unet"].precision == "fp32" and StubPlan.opened == []
    assert any("instead of INT8" in f and "aarch64" in f for f in synth.info()["fallbacks"])
