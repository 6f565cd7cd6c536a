"""On a CUDA machine (`pytest -m gpu`): torch-CUDA, ONNX Runtime CUDA and TensorRT end to end against the CPU
reference, placement on cuda:1, and four threads with CUDA graphs. Every test skips, with the reason, where the
GPU, the CUDA provider or TensorRT is missing; nothing here runs in CI."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import FAST, pixels, quantized_engine_dir

import acsdk

pytestmark = pytest.mark.gpu

PROMPT = "a photo of a surface with a hole"
# fp32 engines on a GPU: TF32 is off in our plans, cuDNN/cuBLAS may still pick other algorithms than the CPU.
GREY_LEVELS = {"fp32": 2, "fp16": 8}


def _needs_cuda(count: int = 1) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    if torch.cuda.device_count() < count:
        pytest.skip(f"needs {count} CUDA GPUs, this machine has {torch.cuda.device_count()}")


def _needs_ort_cuda() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (CUDAExecutionProvider not available)")


def _needs_tensorrt() -> None:
    from runtime.tensorrt_engine import tensorrt_usable

    ok, why = tensorrt_usable()
    if not ok:
        pytest.skip(why)


def _run(s, scene, seed=5):
    return s.run(
        scene["image"], scene["mask"], PROMPT, scene["reference_image"], scene["reference_mask"], seed=seed, **FAST
    )


def _close(a, b, levels):
    diff = np.abs(pixels(a.image).astype(int) - pixels(b.image).astype(int))
    assert diff.max() <= levels, diff.max()


@pytest.fixture(scope="module")
def cpu_reference(synth, scene):
    return _run(synth, scene)


def test_torch_cuda_matches_the_cpu_reference(tiny_ckpt, scene, cpu_reference):
    _needs_cuda()
    s = acsdk.Synthesizer.from_checkpoint(tiny_ckpt, device="cuda")
    _close(_run(s, scene), cpu_reference, GREY_LEVELS["fp32"])


def test_onnxruntime_cuda_matches_the_cpu_reference(engine_dir, scene, cpu_reference):
    _needs_cuda()
    _needs_ort_cuda()
    s = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cuda").load()
    assert s.info()["components"]["unet"]["providers"][0] == "CUDAExecutionProvider"
    _close(_run(s, scene), cpu_reference, GREY_LEVELS["fp32"])


@pytest.fixture(scope="module")
def trt_dirs(engine_dir, engine_dir_fp16, tmp_path_factory):
    """Plans built on this GPU from the session's shipped ONNX dirs (export.build --from-onnx)."""
    _needs_cuda()
    _needs_tensorrt()
    from export.build import plans_from_onnx

    root = tmp_path_factory.mktemp("trt")
    int8 = quantized_engine_dir(engine_dir, root / "int8-onnx", "int8")  # the Q/DQ UNet `--int8` ships
    return {
        "fp32": plans_from_onnx(engine_dir, root / "fp32", progress=False),
        "fp16": plans_from_onnx(engine_dir_fp16, root / "fp16", progress=False),
        "int8": plans_from_onnx(int8, root / "int8", fp16=True, progress=False),
    }


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_plans_are_verified_and_match_the_cpu_reference(
    trt_dirs, precision, scene, cpu_reference, record_property
):
    """Strongly typed plans from a shipped engine dir (fp32, fp16, and INT8 from the Q/DQ UNet): each verified on
    this GPU, the UNet at t = 981 and t = 1 among the cases; an image close to the CPU reference; seconds per
    image recorded (not asserted)."""
    import time

    from runtime.manifest import Manifest

    manifest = Manifest.load(trt_dirs[precision])
    assert manifest.data["tensorrt"]["typing"] == "strongly_typed"
    for entry in manifest.components.values():
        for art in entry["artifacts"]:
            if art["format"] == "tensorrt":
                assert art["verification"]["passed"], (art["file"], art["verification"])
    unet = {a["precision"]: a for a in manifest.components["unet"]["artifacts"] if a["format"] == "tensorrt"}
    assert precision in unet
    for case in ("t=981", "t=1"):
        record_property(f"unet_{precision}_{case}_max_abs", unet[precision]["verification"]["cases"][case]["max_abs"])
    s = acsdk.Synthesizer(trt_dirs[precision], backend="tensorrt", device="cuda").load()
    assert {c["backend"] for n, c in s.info()["components"].items() if n != "asea_qformer"} == {"tensorrt"}
    assert s.info()["components"]["unet"]["precision"] == precision
    result = _run(s, scene)
    start = time.perf_counter()
    _run(s, scene)
    record_property(f"seconds_per_image_{precision}", time.perf_counter() - start)
    if precision != "int8":  # INT8 is held to its image gate (test_int8), not to fp32's grey levels
        _close(result, cpu_reference, GREY_LEVELS[precision])


def test_everything_lands_on_cuda_1(engine_dir, trt_dirs, scene):
    _needs_cuda(2)
    s = acsdk.Synthesizer(trt_dirs["fp16"], backend="tensorrt", device="cuda:1")
    before = torch.cuda.memory_allocated(0)
    _run(s, scene)
    assert all(e.device == torch.device("cuda:1") for e in s.parts.engines.values())
    assert torch.cuda.memory_allocated(0) == before, "nothing allocated on cuda:0"
    if _has_ort_cuda():
        ort = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cuda:1")
        assert ort.parts.engines["unet"].device == torch.device("cuda:1")
        _run(ort, scene)


def _has_ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_four_threads_with_cuda_graphs_give_the_serial_results(trt_dirs, scene):
    s = acsdk.Synthesizer(trt_dirs["fp16"], backend="tensorrt", device="cuda")
    seeds = [21, 22, 23, 24]
    serial = {seed: pixels(_run(s, scene, seed).image) for seed in seeds}
    assert any(e.cuda_graphs and e._graph is not None for e in s.parts.engines.values()), "graphs were captured"
    results, errors = {}, []

    def work(seed):
        try:
            results[seed] = pixels(_run(s, scene, seed).image)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for seed in seeds:
        assert np.array_equal(results[seed], serial[seed]), seed
