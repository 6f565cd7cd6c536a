import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from acsdk.testing import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture(scope="session")
def synth(tiny_ckpt):
    import acsdk

    return acsdk.Synthesizer.from_checkpoint(tiny_ckpt)


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    from acsdk.models import AnomalyControlModel

    return AnomalyControlModel.from_pretrained(tiny_ckpt)


@pytest.fixture(scope="session")
def scene():
    """A normal image, a target mask, and a defect reference with its mask (64 px, uint8)."""
    from acsdk.testing import make_box_mask, make_defect_pair, make_texture

    ref, ref_mask = make_defect_pair(64, seed=3)
    return {
        "image": make_texture(64, seed=1),
        "mask": make_box_mask(64, 20, 24, 14, 12),
        "reference_image": ref,
        "reference_mask": ref_mask,
    }


FAST = {"num_inference_steps": 10, "asea_steps": 3}


def pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8)


@pytest.fixture(scope="session")
def engine_dir(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint exported at fp32 (ONNX), once per test session (~80 s on 2 cores)."""
    from export.build import build_engine_dir

    return build_engine_dir(
        tiny_ckpt, tmp_path_factory.mktemp("engines") / "fp32", backend="onnxruntime", progress=False
    )


@pytest.fixture(scope="session")
def engine_dir_fp16(tiny_ckpt, tmp_path_factory):
    from export.build import build_engine_dir

    return build_engine_dir(
        tiny_ckpt, tmp_path_factory.mktemp("engines") / "fp16", backend="onnxruntime", fp16=True, progress=False
    )


@pytest.fixture(scope="session")
def demo_engine_dir():
    """The shipped demo model compiled to fp32 ONNX: `acsdk demo`'s own cached engines (the README runs the demo
    before the tests, so CI compiles them once, not twice; ~40 s on 2 cores when missing)."""
    from acsdk.apps.demo import demo_engines

    return demo_engines()


def quantized_engine_dir(engine_dir: Path, dest: Path, kind: str) -> Path:
    """The tiny dir with the UNet's Q/DQ graph of `kind` added as `export.build --int8/--fp8` lists it (calibrated
    on the spec's sample inputs; the image gate is test_int8's business)."""
    from export import int8 as int8_mod
    from export.specs import SPECS, Dims
    from runtime.manifest import list_files, write_manifest

    src = shutil.copytree(engine_dir, dest, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((src / "manifest.json").read_text())
    manifest.pop("schema_version")
    dims = Dims(**manifest["dims"])
    calibration = [{k: v.numpy() for k, v in SPECS["unet"].sample_inputs(dims, seed=i).items()} for i in range(4)]
    rel = f"onnx/unet.{kind}.qdq.onnx"
    int8_mod.quantize_unet_qdq(src / "onnx" / "unet.onnx", calibration, src / rel, int8_mod.SCOPES[1], kind)
    unet = manifest["components"]["unet"]
    unet["precision"] = "int8" if kind == "int8" else unet["precision"]
    unet["artifacts"].append(
        {"format": "onnx", "precision": kind, "file": rel, "data_files": [], "quantization": "qdq"}
    )
    manifest["files"] = list_files(src)
    write_manifest(src, manifest)
    return src
