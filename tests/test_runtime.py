import json
import shutil
import threading

import numpy as np
import pytest
import torch
from conftest import FAST, pixels

import acsdk
from acsdk import BackendUnavailableError, EngineDirError, InputError, IntegrityError
from runtime.compat import check_plan_compatibility
from runtime.manifest import MANIFEST_NAME

PROMPT = "a photo of a surface with a hole"


@pytest.fixture(scope="module")
def ort_synth(engine_dir):
    return acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")


def _run(s, scene, **kw):
    args = dict(FAST, seed=5)
    args.update(kw)
    return s.run(scene["image"], scene["mask"], PROMPT, scene["reference_image"], scene["reference_mask"], **args)


def test_onnxruntime_matches_torch_reference_within_one_level(ort_synth, synth, scene):
    ours = _run(ort_synth, scene)
    ref = _run(synth, scene)
    diff = np.abs(pixels(ours.image).astype(int) - pixels(ref.image).astype(int))
    assert diff.max() <= 1, diff.max()  # 1/255 max-abs, ASEA on (3 steps)
    assert ours.asea["r_after"] > ours.asea["r_before"]
    assert ours.asea["r_after"] == pytest.approx(ref.asea["r_after"], abs=1e-4)
    assert np.array_equal(pixels(ours.mask), pixels(ref.mask))


def test_info_reports_what_runs(ort_synth):
    info = ort_synth.load().info()
    components = dict(info["components"])
    assert components.pop("asea_qformer") == {"loaded": True, "backend": "torch", "precision": "fp32"}
    assert set(components) == {
        "text_encoder",
        "csm_vision",
        "csm_qformer",
        "unet",
        "vae_encoder",
        "vae_decoder",
    }
    for c in components.values():
        assert c["loaded"] is True
        assert c["backend"] == "onnxruntime"
        assert c["providers"] == ["CPUExecutionProvider"]
        assert c["precision"] == "fp32"
    assert len(info["manifest"]["source_checkpoint_sha256"]) == 64
    assert info["resolution"] == [64, 64]


def test_second_run_with_same_reference_skips_csm_and_asea(engine_dir, scene):
    s = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
    first = _run(s, scene, seed=1)
    second = _run(s, scene, seed=2)
    assert not first.cache_hits["reference"] and second.cache_hits["reference"]
    assert "asea" in first.timings and "csm_vision" in first.timings
    assert "asea" not in second.timings and "csm_vision" not in second.timings
    assert second.cache_hits["text"]
    assert second.asea == first.asea
    other_steps = _run(s, scene, seed=2, asea_steps=1)  # other ASEA settings are another cache entry
    assert not other_steps.cache_hits["reference"]


def test_four_threads_give_the_serial_results(ort_synth, scene):
    seeds = [11, 12, 13, 14]
    serial = [pixels(_run(ort_synth, scene, seed=s).image) for s in seeds]
    fresh = acsdk.Synthesizer(ort_synth.engine_dir, backend="onnxruntime", device="cpu")
    results: dict[int, np.ndarray] = {}
    errors = []

    def work(seed):
        try:
            results[seed] = pixels(_run(fresh, scene, seed=seed).image)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for s, expected in zip(seeds, serial, strict=True):
        assert np.array_equal(results[s], expected), s


def test_fp16_engines_run_and_stay_close(engine_dir_fp16, synth, scene):
    s = acsdk.Synthesizer(engine_dir_fp16, backend="onnxruntime", device="cpu").load()
    assert s.info()["components"]["unet"]["precision"] == "fp16"
    assert s.info()["components"]["vae_decoder_fp32"]["precision"] == "fp32"
    ours, ref = _run(s, scene), _run(synth, scene)
    a, b = pixels(ours.image).astype(float), pixels(ref.image).astype(float)
    psnr = 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12))
    assert psnr > 30, psnr
    assert ours.notes == []


def test_fp16_vae_nan_falls_back_to_fp32(engine_dir_fp16, scene):
    s = acsdk.Synthesizer(engine_dir_fp16, backend="onnxruntime", device="cpu")
    fp16 = s.parts.engines["vae_decoder"]
    real_run = fp16.run
    fp16.run = lambda inputs: {"image": real_run(inputs)["image"] * float("nan")}
    clean = _run(acsdk.Synthesizer(engine_dir_fp16, backend="onnxruntime", device="cpu"), scene)
    res = _run(s, scene)
    assert res.notes == ["vae_decoder_fp32_fallback"] and clean.notes == []
    # The fallback decodes the same latents in fp32: within fp16's error of the undisturbed run, not black/NaN.
    diff = np.abs(pixels(res.image).astype(int) - pixels(clean.image).astype(int))
    assert diff.max() <= 3, diff.max()
    assert not np.array_equal(pixels(res.image), scene["image"])


def test_tampered_engine_file_is_rejected_by_name(engine_dir, tmp_path):
    work = shutil.copytree(engine_dir, tmp_path / "e")
    data = bytearray((work / "onnx" / "text_encoder.onnx").read_bytes())
    data[-10] ^= 0xFF
    (work / "onnx" / "text_encoder.onnx").write_bytes(bytes(data))
    s = acsdk.Synthesizer(work, backend="onnxruntime", device="cpu")  # a file is checked when it is opened
    with pytest.raises(IntegrityError, match="onnx/text_encoder.onnx"):
        s.load()
    with pytest.raises(IntegrityError, match="onnx/text_encoder.onnx"):
        s.prepare("a photo of a plate with a hole")  # the first use opens it: the same refusal


@pytest.mark.parametrize("style", ["dotdot", "absolute"])
def test_manifest_paths_leading_out_of_the_engine_dir_are_refused(engine_dir, tmp_path, style):
    """A manifest (hand-edited, or from an untrusted source) must not make the runtime open files elsewhere, even
    ones whose sha256 it lists correctly."""
    work = shutil.copytree(engine_dir, tmp_path / "e")
    outside = shutil.copy(work / "onnx" / "text_encoder.onnx", tmp_path / "elsewhere.onnx")
    rel = "../elsewhere.onnx" if style == "dotdot" else str(outside)
    data = json.loads((work / MANIFEST_NAME).read_text())
    data["files"][rel] = data["files"].pop("onnx/text_encoder.onnx")
    data["components"]["text_encoder"]["artifacts"][0]["file"] = rel
    (work / MANIFEST_NAME).write_text(json.dumps(data))
    (work / "onnx" / "text_encoder.onnx").unlink()
    with pytest.raises(EngineDirError, match="outside the engine dir"):
        acsdk.Synthesizer(work, backend="onnxruntime", device="cpu")


def test_engine_dir_errors(engine_dir, tmp_path):
    with pytest.raises(EngineDirError, match="export.build"):
        acsdk.Synthesizer(tmp_path / "none", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineDirError, match="manifest.json"):
        acsdk.Synthesizer(tmp_path / "empty", device="cpu")
    work = shutil.copytree(engine_dir, tmp_path / "e")
    data = json.loads((work / MANIFEST_NAME).read_text())
    data["schema_version"] = 7
    (work / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(EngineDirError, match="schema_version 7"):
        acsdk.Synthesizer(work, device="cpu")
    assert issubclass(EngineDirError, acsdk.ACSDKError)


def test_tensorrt_backend_without_tensorrt_says_what_works(engine_dir):
    with pytest.raises(BackendUnavailableError, match="onnxruntime"):
        acsdk.Synthesizer(engine_dir, backend="tensorrt", device="cpu")


def test_cuda_device_without_cuda_provider_is_clear(engine_dir):
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cuda")


def test_plan_for_another_gpu_or_tensorrt_says_rebuild():
    rec = {"tensorrt_version": "10.6.0", "compute_capability": "8.7"}  # Jetson Orin
    assert check_plan_compatibility(rec, "10.6.0", "8.7") is None
    msg = check_plan_compatibility(rec, "10.6.0", "8.9")
    assert "8.7" in msg and "8.9" in msg and "export.build" in msg
    assert "10.7.0" in check_plan_compatibility(rec, "10.7.0", "8.7")


def test_bad_backend_arguments(engine_dir, tiny_ckpt):
    with pytest.raises(InputError) as err:
        acsdk.Synthesizer(engine_dir, backend="directml", device="cpu")
    assert err.value.argument == "backend"
    with pytest.raises(InputError) as err:
        acsdk.Synthesizer(engine_dir, device="cpu", component_backends={"unett": "torch"})
    assert err.value.argument == "component_backends"
    with pytest.raises(InputError) as err:
        acsdk.Synthesizer(engine_dir, device="cpu", component_backends={"unet": "torch"})
    assert err.value.argument == "checkpoint"


def test_torch_fallback_for_one_component(engine_dir, tiny_ckpt, ort_synth, scene):
    s = acsdk.Synthesizer(
        engine_dir, backend="onnxruntime", device="cpu", component_backends={"unet": "torch"}, checkpoint=tiny_ckpt
    ).load()
    assert s.info()["components"]["unet"]["backend"] == "torch"
    assert s.info()["components"]["vae_decoder"]["backend"] == "onnxruntime"
    diff = np.abs(pixels(_run(s, scene).image).astype(int) - pixels(_run(ort_synth, scene).image).astype(int))
    assert diff.max() <= 1


def test_runtime_rejects_the_foundation_bad_inputs(ort_synth, scene):
    with pytest.raises(InputError) as err:
        ort_synth.run(scene["image"], np.zeros((64, 64), np.uint8), PROMPT)
    assert err.value.argument == "mask"
    with pytest.raises(InputError) as err:
        ort_synth.run(scene["image"], scene["mask"], PROMPT, scene["reference_image"], None)
    assert err.value.argument == "reference_mask"
    with pytest.raises(InputError) as err:
        ort_synth.run(scene["image"], scene["mask"], PROMPT, strength=0)
    assert err.value.argument == "strength"


@pytest.mark.gpu
def test_onnxruntime_cuda_io_binding_matches_cpu(engine_dir, scene, ort_synth):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (CUDAExecutionProvider not available)")
    s = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cuda")
    assert s.info()["components"]["unet"]["providers"][0] == "CUDAExecutionProvider"
    diff = np.abs(pixels(_run(s, scene).image).astype(int) - pixels(_run(ort_synth, scene).image).astype(int))
    assert diff.max() <= 2


def test_auto_falls_back_down_its_list_and_says_so(engine_dir, monkeypatch, scene, tmp_path):
    """An engine `auto` cannot open (here: OpenVINO refusing) makes it take the next backend, and info() and the
    log say which and why; an explicitly requested backend raises instead."""
    pytest.importorskip("openvino")
    import runtime.openvino_engine as ov_mod

    # A fresh measurement cache: a cached choice that already puts ONNX Runtime first would never try OpenVINO.
    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "cache"))

    def refuse(self, name, *args, **kwargs):
        raise BackendUnavailableError(f"{name}: simulated: no such device")

    monkeypatch.setattr(ov_mod.OpenVINOEngine, "__init__", refuse)
    s = acsdk.Synthesizer(engine_dir, device="cpu")
    info = s.load().info()
    assert info["components"]["unet"]["backend"] == "onnxruntime"
    assert any("unet" in f and "simulated" in f for f in info["fallbacks"])
    assert _run(s, scene).image.size == (64, 64)
    with pytest.raises(BackendUnavailableError, match="simulated"):
        acsdk.Synthesizer(engine_dir, backend="openvino", device="cpu").load()


def test_auto_order_on_a_gpu(monkeypatch):
    import torch

    import runtime.openvino_engine as ov_mod
    import runtime.tensorrt_engine as trt_mod
    from acsdk.inference.parts import _candidates

    entry = {"artifacts": [{"format": "onnx", "precision": "fp16"}, {"format": "tensorrt", "precision": "fp16"}]}
    monkeypatch.setattr(trt_mod, "tensorrt_usable", lambda: (True, ""))
    monkeypatch.setattr(ov_mod, "openvino_usable", lambda: (True, ""))
    order = [(b, d.type) for b, d in _candidates(entry, "auto", torch.device("cuda:1"))]
    assert order == [("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("openvino", "cpu"), ("onnxruntime", "cpu")]
    assert [b for b, _ in _candidates({"artifacts": entry["artifacts"][:1]}, "auto", torch.device("cuda"))][0] == (
        "onnxruntime"
    )
    assert _candidates(entry, "tensorrt", torch.device("cuda")) == [("tensorrt", torch.device("cuda"))]
