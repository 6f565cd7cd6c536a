"""INT8 where it pays: the UNet quantized for OpenVINO, calibrated on the pipeline's own inputs, gated on held-out
images, and portable across x86 CPUs with and without VNNI."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import acsdk
from acsdk.inference.agreement import blend_region
from export import int8 as int8_mod
from export.build import _add_int8, build_engine_dir, main
from export.errors import BuildArgumentError
from runtime import cpu
from runtime.manifest import list_files, write_manifest

pytest.importorskip("nncf", reason="INT8 needs the openvino extra: pip install 'acsdk[openvino]'")


@pytest.fixture(scope="module")
def gate_images(tmp_path_factory):
    """Two 'user' good images at another size than the model's: the gate runs them with context windows."""
    from acsdk.data.procedural import render_sample

    folder = tmp_path_factory.mktemp("gate_images")
    rng = np.random.default_rng(5)
    for i in range(2):
        image = render_sample("good", 96, rng)[0]
        Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / f"line_{i}.png")
    (folder / ".DS_Store").write_bytes(b"junk")  # not an image: skipped
    return folder


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory, gate_images, demo_engine_dir):
    """The demo model's engine dir (the one `acsdk demo` cached) with an INT8 UNet added by the build's own INT8
    step, default calibration and gate plus the user's images. (The whole `--int8` build runs in the sabotage test
    below and in ctest's fixtures.)"""
    out = tmp_path_factory.mktemp("int8") / "e"
    shutil.copytree(demo_engine_dir, out, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((out / "manifest.json").read_text())
    scopes = int8_mod.SCOPES
    int8_mod.SCOPES = scopes[1:]  # the scope that passes on this narrow model: saves the test a quantization
    try:
        _add_int8(out, manifest, int8_mod.Int8Settings(gate_images=gate_images))
    finally:
        int8_mod.SCOPES = scopes
    return out


def test_int8_unet_passes_the_held_out_gate_on_the_demo_model_and_runs(int8_dir):
    from runtime import model_cache

    made_here = [e for e in model_cache.entries() if e.source == str(int8_dir.resolve())]
    assert made_here == [], "the calibration's and gates' OpenVINO cache entries (GBs at real size) were removed"
    unet = json.loads((int8_dir / "manifest.json").read_text())["components"]["unet"]
    gate = unet["int8_gate"]
    assert unet["precision"] == "int8" and gate["passed"]
    assert gate["mean"] <= 2.0 and gate["p99"] <= 8.0 and gate["psnr_db"] >= 35.0
    assert gate["calibration_seed"] != gate["gate_seed"], "gated on scenes held out from calibration"
    assert gate["scenes"] == int8_mod.Int8Settings().gate.count + 2 and gate["user_scenes"] == 2
    int8_art = next(a for a in unet["artifacts"] if a["precision"] == "int8" and a["format"] == "openvino")
    assert int8_art["overflow_fix"] == "enable" and int8_art["build_cpu"] == cpu.isa_summary()
    assert int8_art["scope"] in {s.name for s in int8_mod.SCOPES}
    formats = {(a["format"], a["precision"]) for a in unet["artifacts"]}
    assert {("openvino", "int8"), ("onnx", "fp32")} <= formats, "the fp32 ONNX stays for other backends"
    ov = acsdk.Synthesizer(int8_dir, backend="openvino", device="cpu").load("unet")
    assert ov.info()["components"]["unet"]["precision"] == "int8"
    assert "unet_fp32" not in ov.info()["components"], "no NaN fallback copy for an INT8 UNet"
    ort = acsdk.Synthesizer(int8_dir, backend="onnxruntime", device="cpu").load("unet")
    assert ort.info()["components"]["unet"]["precision"] == "fp32", "ORT runs the fp32 ONNX of an INT8 dir"


def test_the_qdq_unet_for_tensorrt_is_symmetric_checked_gated_and_runs_on_onnxruntime(
    int8_dir, gate_images, monkeypatch
):
    import onnx
    from onnx import numpy_helper

    manifest = json.loads((int8_dir / "manifest.json").read_text())
    unet = manifest["components"]["unet"]
    qdq = next(a for a in unet["artifacts"] if a["format"] == "onnx" and a["precision"] == "int8")
    assert qdq["quantization"] == "qdq" and qdq["gate"]["passed"] and qdq["gate"]["backend"] == "onnxruntime"
    path = int8_dir / qdq["file"]
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize, "activations are quantized"
    for node in [*quantize, *(n for n in model.graph.node if n.op_type == "DequantizeLinear")]:
        zero_point = consts[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), f"{node.name}: zero point must be 0 (symmetric)"
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and consts[n.input[1]].size > 1]
    assert per_channel, "weights quantized per output channel"
    # The gate's recorded numbers come back when it is run again on the same held-out scenes (ONNX Runtime CPU),
    # its pipelines holding one component at a time (at real size a whole ONNX Runtime pipeline beside the build's
    # own memory was stopped by the OOM killer on a 24 GB host).
    from acsdk.inference import synthesizer as synth_mod

    made = []

    class Spy(synth_mod.Synthesizer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.info()["memory"]["low_memory"])

    monkeypatch.setattr(synth_mod, "Synthesizer", Spy)
    scenes = int8_mod.Int8Settings(gate_images=gate_images).gate_scenes(manifest["model"]["height"])
    again = int8_mod.gate_metrics(int8_dir, scenes, qdq["gate"]["steps"], "onnxruntime")
    for key in ("mean", "p99", "psnr_db"):
        assert again[key] == pytest.approx(qdq["gate"][key], rel=1e-6, abs=1e-9), key
    assert made == [True, True], "the gate's quantized and fp32 pipelines each hold one component at a time"
    monkeypatch.undo()
    ort = acsdk.Synthesizer(int8_dir, backend="onnxruntime", device="cpu", precision_overrides={"unet": "int8"}).load(
        "unet"
    )
    assert ort.info()["components"]["unet"]["precision"] == "int8", "asked by name, ORT runs the Q/DQ graph"


@pytest.mark.skipif(not cpu.is_x86(), reason="pre-VNNI saturation is an x86 matter; oneDNN's ISA cap is x86's")
def test_the_gate_holds_on_a_cpu_without_vnni(int8_dir, gate_images):
    """The same dir on AVX2-only kernels (oneDNN's ISA cap makes OpenVINO run what an AVX2 EPYC runs): it still
    passes. Without the overflow fix it does not (measured: mean 4.0 / p99 24 on AVX2 where VNNI gave 2.1 / 11)."""
    code = (
        "import json, sys; from pathlib import Path; from export import int8 as m; "
        "s = m.Int8Settings(gate_images=Path(sys.argv[2])); "
        "print(json.dumps(m.gate_metrics(Path(sys.argv[1]), s.gate_scenes(64), s.gate.steps)))"
    )
    env = {**os.environ, cpu.ISA_ENV: "AVX2"}
    run = subprocess.run(
        [sys.executable, "-c", code, str(int8_dir), str(gate_images)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    on_avx2 = json.loads(run.stdout.strip().splitlines()[-1])
    assert int8_mod.Gate().check(on_avx2), on_avx2


def test_an_int8_dir_whose_gate_does_not_cover_this_cpu_runs_fp32_and_says_why(int8_dir, tmp_path, monkeypatch):
    copy = tmp_path / "old"
    shutil.copytree(int8_dir, copy, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((copy / "manifest.json").read_text())
    art = next(a for a in manifest["components"]["unet"]["artifacts"] if a["precision"] == "int8")
    art["overflow_fix"] = "disable"  # as a VNNI build box without the fix would have made it
    art["build_cpu"] = {"machine": "x86_64", "int8_vnni": ["avx512_vnni"], "int8_accumulates_exactly": True}
    write_manifest(copy, manifest)
    if cpu.int8_accumulates_exactly():
        vnni = acsdk.Synthesizer(copy, backend="openvino").load("unet").info()
        assert vnni["components"]["unet"]["precision"] == "int8", "on a VNNI CPU the VNNI-gated INT8 runs"
    monkeypatch.setenv(cpu.ISA_ENV, "AVX2")  # this process now counts as a pre-VNNI CPU
    synth = acsdk.Synthesizer(copy, backend="openvino").load("unet")
    info = synth.info()
    assert info["components"]["unet"]["precision"] == "fp32"
    assert any("instead of INT8" in f and "VNNI" in f for f in info["fallbacks"]), info["fallbacks"]
    forced = acsdk.Synthesizer(copy, backend="openvino", precision_overrides={"unet": "int8"}).load("unet")
    assert forced.info()["components"]["unet"]["precision"] == "int8", "an explicit override still runs INT8"


def test_int8_gate_coverage_rules(monkeypatch):
    here = cpu.isa_summary()
    assert cpu.int8_gate_holds_here({"overflow_fix": "enable", "build_cpu": here})[0]
    assert cpu.int8_gate_holds_here({"overflow_fix": "disable", "build_cpu": here})[0], "same CPU kind"
    other = {"machine": "aarch64" if cpu.is_x86() else "x86_64", "int8_accumulates_exactly": True}
    ok, why = cpu.int8_gate_holds_here({"overflow_fix": "enable", "build_cpu": other})
    assert not ok and other["machine"] in why
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    monkeypatch.delenv(cpu.ISA_ENV, raising=False)
    if cpu.is_x86():
        assert cpu.int8_accumulates_exactly()
        assert cpu.int8_gate_holds_here({})[0], "a dir from before build_cpu was recorded: VNNI-gated, runs on VNNI"
        for cap, exact in (
            ("AVX2", False),
            ("avx512_core", False),
            ("AVX512_CORE_VNNI", True),
            ("AVX512_CORE_AMX", True),
        ):
            monkeypatch.setenv(cpu.ISA_ENV, cap)
            assert cpu.int8_accumulates_exactly() is exact, cap
        ok, why = cpu.int8_gate_holds_here({})
        assert ok
        monkeypatch.setenv(cpu.ISA_ENV, "AVX2")
        ok, why = cpu.int8_gate_holds_here({})
        assert not ok and "lacks VNNI" in why
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.delenv(cpu.ISA_ENV)
    assert not cpu.int8_accumulates_exactly()


def test_gate_scenes_are_held_out_from_calibration():
    s = int8_mod.Int8Settings()
    cal, gate = s.calibration.make(64), s.gate_scenes(64)
    assert not {c.seed for c in cal} & {g.seed for g in gate}
    assert all(not np.array_equal(c.mask, g.mask) for c in cal for g in gate)
    with pytest.raises(BuildArgumentError, match="held out"):
        int8_mod.Int8Settings(int8_mod.Scenes(seed=3), int8_mod.Scenes(seed=3))


def test_user_gate_scenes_draw_a_mask_on_each_image(gate_images):
    scenes = int8_mod.user_scenes(gate_images, 64)
    assert [s.source for s in scenes] == ["line_0.png", "line_1.png"]
    for s in scenes:
        assert s.image.shape == (96, 96, 3) and s.mask.shape == (96, 96) and s.mask.any() and s.roi == "auto"


def test_psnr_is_over_the_blend_region_only():
    from acsdk.inference.imaging import blend_mask
    from acsdk.inference.windows import Window, feather_sigma

    label = np.zeros((64, 64), bool)
    label[20:30, 20:30] = True

    class Result:
        windows = [Window(0, 0, 64, 64).as_dict()]

    region = blend_region(Result, label, (64, 64))
    expected = blend_mask(torch.from_numpy(label.astype(np.float32)), feather_sigma(Window(0, 0, 64, 64), (64, 64)))
    assert np.array_equal(region, expected.numpy() > 0)
    assert region[label].all() and 0 < region.sum() < 64 * 64 / 4, "the label and its feather, not the image"

    class Cropped:
        windows = [Window(0, 0, 25, 25).as_dict()]

    assert not blend_region(Cropped, label, (64, 64))[25:].any(), "nothing outside the window"


def test_a_sabotaged_int8_unet_fails_the_gate_and_nothing_is_written(tiny_ckpt, tmp_path, monkeypatch, capsys):
    real = int8_mod.quantize_unet

    def bad_calibration(onnx_path, calibration, out_xml, scope, overflow_fix):  # activation ranges 1000x too wide
        scaled = [{k: (v * 1000 if v.dtype.kind == "f" else v) for k, v in c.items()} for c in calibration]
        return real(onnx_path, scaled, out_xml, scope, overflow_fix)

    monkeypatch.setattr(int8_mod, "quantize_unet", bad_calibration)
    monkeypatch.setattr(int8_mod, "SCOPES", int8_mod.SCOPES[1:])  # one scope failing is enough
    small = int8_mod.Int8Settings(int8_mod.Scenes(1, 6), int8_mod.Scenes(1, 6, seed=1))
    monkeypatch.setattr(int8_mod, "Int8Settings", lambda: small)  # one short scene each: enough to fail

    assert main(["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "e"), "--int8", "--no-verify", "-q"]) == 1
    err = capsys.readouterr().err
    assert "misses the quality gate" in err and "PSNR" in err and "held-out" in err and "nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no engine dir, no temporary directory"


def test_int8_needs_the_unet(tiny_ckpt, tmp_path):
    with pytest.raises(BuildArgumentError, match="--int8"):
        build_engine_dir(tiny_ckpt, tmp_path / "e", int8=True, components=["vae_decoder"], progress=False)


@pytest.mark.parametrize("case", ["missing", "empty", "without --int8"])
def test_bad_gate_images_are_refused_before_anything_is_written(tiny_ckpt, tmp_path, capsys, case):
    folder = tmp_path / "imgs"
    if case != "missing":
        folder.mkdir()
    if case == "without --int8":
        Image.new("RGB", (8, 8)).save(folder / "a.png")
    args = ["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "e"), "--gate-images", str(folder), "-q"]
    assert main(args + ([] if case == "without --int8" else ["--int8"])) == 2
    assert "--gate-images" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_a_qdq_graph_that_misses_the_gate_is_not_kept(engine_dir, tmp_path, monkeypatch, kind):
    """INT8's Q/DQ graph missing its gate leaves the build standing (the OpenVINO INT8 does the CPU work) with the
    numbers recorded; FP8, asked for with --fp8, fails it. Neither leaves its graph behind."""
    from export import build as build_mod
    from export.errors import BuildError

    root = shutil.copytree(engine_dir, tmp_path / "e", ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("schema_version")

    def quantize(onnx_path, calibration, out_path, scope, kind, progress=False):
        shutil.copyfile(onnx_path, out_path)  # a readable graph standing in for the quantized one
        return out_path

    bad = {
        "mean": 9.0,
        "p99": 40.0,
        "psnr_db": 20.0,
        "scenes": 1,
        "user_scenes": 0,
        "steps": 2,
        "backend": "onnxruntime",
    }
    monkeypatch.setattr(int8_mod, "quantize_unet_qdq", quantize)
    monkeypatch.setattr(int8_mod, "gate_metrics", lambda *a, **k: dict(bad))
    data = ([], [])
    if kind == "fp8":
        with pytest.raises(BuildError, match="FP8 unet misses the quality gate"):
            build_mod._add_qdq(root, manifest, data, int8_mod.Int8Settings(), kind)
    else:
        build_mod._add_qdq(root, manifest, data, int8_mod.Int8Settings(), kind)
        unet = json.loads((root / "manifest.json").read_text())["components"]["unet"]
        assert unet["int8_qdq_gate"]["passed"] is False and len(unet["int8_qdq_gate"]["tried"]) == len(int8_mod.SCOPES)
        assert all(a["precision"] != "int8" for a in unet["artifacts"])
    assert not (root / "onnx" / f"unet.{kind}.qdq.onnx").exists()


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_a_qdq_quantization_that_raises_is_recorded_not_raw(engine_dir, tmp_path, monkeypatch, kind):
    """What ONNX Runtime's quantizer raised at real size before it wrote external data (protobuf's 2 GiB limit): for
    INT8 the OpenVINO INT8 stands and the error is recorded; for FP8 (asked for) the build fails, typed."""
    from export import build as build_mod
    from export.errors import BuildError

    root = shutil.copytree(engine_dir, tmp_path / "e", ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("schema_version")

    def too_large(onnx_path, calibration, out_path, scope, kind, progress=False):
        out_path.write_bytes(b"half-written")
        raise ValueError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB: 3442212864")

    monkeypatch.setattr(int8_mod, "quantize_unet_qdq", too_large)
    if kind == "fp8":
        with pytest.raises(BuildError, match="FP8 unet .*ValueError: Message onnx.ModelProto exceeds"):
            build_mod._add_qdq(root, manifest, ([], []), int8_mod.Int8Settings(), kind)
    else:
        build_mod._add_qdq(root, manifest, ([], []), int8_mod.Int8Settings(), kind)
        gate = json.loads((root / "manifest.json").read_text())["components"]["unet"]["int8_qdq_gate"]
        assert gate["passed"] is False and all("exceeds maximum protobuf size" in t["error"] for t in gate["tried"])
    assert not (root / "onnx" / f"unet.{kind}.qdq.onnx").exists(), "nothing half-written left in the dir"


def test_fp16_with_fp8_keeps_the_fp32_unet_the_quantizer_starts_from(tiny_ckpt, tmp_path, monkeypatch):
    """`--fp16 --fp8` (no --int8) used to delete the fp32 UNet ONNX and crash with a raw StopIteration. The
    quantizer and gate are stand-ins here (the wiring is under test; test_from_onnx checks a real FP8 graph)."""
    quantized = []

    def quantize(onnx_path, calibration, out_path, scope, kind, progress=False):
        quantized.append((onnx_path.name, kind, len(calibration)))
        shutil.copyfile(onnx_path, out_path)
        return out_path

    good = {"mean": 0.1, "p99": 1.0, "psnr_db": 50.0, "scenes": 1, "user_scenes": 0, "steps": 4, "backend": "ort"}
    monkeypatch.setattr(int8_mod, "quantize_unet_qdq", quantize)
    monkeypatch.setattr(int8_mod, "gate_metrics", lambda *a, **k: dict(good))
    argv = ["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "e"), "--fp16", "--fp8", "--no-verify", "-q",
            "--calibration-scenes", "1", "--gate-scenes", "1", "--scene-steps", "4"]  # fmt: skip
    assert main(argv) == 0
    unet = json.loads((tmp_path / "e" / "manifest.json").read_text())["components"]["unet"]
    onnx = {a["precision"]: a["file"] for a in unet["artifacts"] if a["format"] == "onnx"}
    assert onnx == {"fp32": "onnx/unet.onnx", "fp16": "onnx/unet.fp16.onnx", "fp8": "onnx/unet.fp8.qdq.onnx"}
    assert quantized == [("unet.onnx", "fp8", 2)], "from the fp32 graph, on 1 scene x 4 steps x 0.7 = 2 UNet calls"


def test_calibration_runs_the_fp32_unet_in_an_fp16_dir(engine_dir, engine_dir_fp16, tmp_path, monkeypatch):
    """`--fp16 --int8` calibrates on the UNet inputs the pipeline makes with the fp32 UNet (the graph quantized),
    the other components at the dir's fp16."""
    import runtime.openvino_engine as ov_engine

    root = shutil.copytree(engine_dir_fp16, tmp_path / "e", ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("schema_version")
    shutil.copyfile(engine_dir / "onnx" / "unet.onnx", root / "onnx" / "unet.onnx")  # as --fp16 --int8 keeps it
    manifest["components"]["unet"]["artifacts"].append(
        {"format": "onnx", "precision": "fp32", "file": "onnx/unet.onnx", "data_files": []}
    )
    manifest["files"] = list_files(root)
    write_manifest(root, manifest)
    opened = []
    real = ov_engine.OpenVINOEngine.__init__

    def spy(self, name, path, *args, precision="fp32", **kwargs):
        opened.append((name, precision))
        return real(self, name, path, *args, precision=precision, **kwargs)

    monkeypatch.setattr(ov_engine.OpenVINOEngine, "__init__", spy)
    seen = int8_mod.calibration_inputs(root, int8_mod.Scenes(1, 4).make(64), 4, progress=False)
    assert len(seen) == 2 and ("unet", "fp32") in opened and ("unet", "fp16") not in opened
    assert ("vae_encoder", "fp16") in opened, "the rest of the pipeline at the dir's precision"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--int8", "--calibration-scenes", "0"], "--calibration-scenes: expected an integer >= 1, got 0"),
        (["--fp8", "--scene-steps", "1"], "--scene-steps: expected an integer >= 2, got 1"),
        (["--gate-scenes", "2"], "--gate-scenes: expected only with --int8 or --fp8"),
    ],
)
def test_quantization_bounds_are_checked_before_anything_is_written(tiny_ckpt, tmp_path, capsys, flags, message):
    assert main(["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "e"), "-q", *flags]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "e").exists()
    bounded = int8_mod.Int8Settings.of(calibration_scenes=3, gate_scenes=2, scene_steps=6)
    assert (bounded.calibration.count, bounded.gate.count, bounded.calibration.steps, bounded.gate.steps) == (
        3,
        2,
        6,
        6,
    )
    assert bounded.calibration.seed != bounded.gate.seed, "still held out"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_qdq_quantization_of_a_graph_over_2_gib(tmp_path, kind):
    """A real-size UNet's fp32 ONNX is 3.4 GB, past protobuf's 2 GiB: ONNX Runtime's quantizer and calibrator must
    write their models with external data. A one-MatMul graph with a 2.2 GiB weight stands in (seconds, ~8 GB RAM)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = 24_500  # n * n * 4 bytes = 2.24 GiB, written straight to the external-data file (protobuf cannot hold it)
    src = tmp_path / "unet.onnx"
    rng = np.random.default_rng(0)
    with open(tmp_path / "unet.onnx.data", "wb") as f:
        for _ in range(0, n, 2_450):  # in slices: the weight never sits in memory whole here
            (rng.standard_normal((2_450, n), dtype=np.float32) * 0.01).tofile(f)
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[n, n])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "unet.onnx.data"), ("offset", "0"), ("length", str(n * n * 4))):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["sample", "w"], ["noise_pred"], name="proj")],
        "big",
        [helper.make_tensor_value_info("sample", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("noise_pred", TensorProto.FLOAT, [1, n])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(src))
    calibration = [{"sample": np.random.default_rng(i).standard_normal((1, n), dtype=np.float32)} for i in range(2)]
    out = int8_mod.quantize_unet_qdq(src, calibration, tmp_path / f"unet.{kind}.qdq.onnx", int8_mod.SCOPES[1], kind)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, calibration[0])
    reference = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, calibration[0])[0]
    assert y.shape == (1, n) and np.corrcoef(y.ravel(), reference.ravel())[0, 1] > 0.99
