"""The one collector of tool versions recorded beside engines and benchmark results."""

from __future__ import annotations

import importlib
import platform
from importlib import metadata

DISTRIBUTIONS = (
    "torch",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "onnxruntime-gpu",
    "diffusers",
    "transformers",
    "openvino",
    "nncf",
)


def module_version(module: str) -> str | None:
    """`module.__version__` when the module imports: TensorRT from JetPack or a tarball has no pip metadata."""
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # ImportError, or a broken native library under it
        return None


def tool_versions() -> dict[str, str | None]:
    """Python and every library that shapes an engine or a measurement; None where not installed."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["tensorrt"] = module_version("tensorrt")
    return out
