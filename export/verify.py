"""Build-time verification: each artifact against its torch module on the spec's sample inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import BuildError
from .specs import FP16_TOLERANCE, FP32_TOLERANCE, ComponentSpec, Dims


def compare(reference: dict[str, torch.Tensor], candidate: dict[str, np.ndarray], precision: str) -> dict:
    tol = FP16_TOLERANCE if precision == "fp16" else FP32_TOLERANCE
    worst_abs, worst_rel, scale, finite = 0.0, 0.0, 0.0, True
    for name, ref in reference.items():
        ref = ref.detach().float().cpu().numpy()
        got = np.asarray(candidate[name], dtype=np.float32)
        if got.shape != ref.shape:
            raise BuildError(f"output '{name}' has shape {got.shape}, torch gives {ref.shape}")
        finite &= bool(np.isfinite(got).all())
        err = float(np.abs(got - ref).max()) if finite else math.inf
        s = float(np.abs(ref).max())
        worst_abs, scale = max(worst_abs, err), max(scale, s)
        worst_rel = max(worst_rel, err / s if s > 0 else err)
    return {
        "max_abs": worst_abs,
        "max_rel": worst_rel,
        "reference_scale": scale,
        "finite": finite,
        "tolerance": {"atol": tol.atol, "rtol": tol.rtol, "rule": "max_abs <= atol + rtol * max|ref|"},
        "passed": finite and tol.allows(worst_abs, scale),
    }


def verify_onnx(spec: ComponentSpec, module: nn.Module, onnx_path: Path, dims: Dims, precision: str) -> dict:
    """Run the ONNX file on ONNX Runtime (CPU) and torch on one fresh sample at one image's batch."""
    import onnxruntime as ort

    inputs = spec.sample_inputs(dims, seed=1)
    with torch.no_grad():
        out = module(**inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    reference = {t.name: o for t, o in zip(spec.outputs, outs, strict=True)}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    got = session.run([t.name for t in spec.outputs], {k: v.numpy() for k, v in inputs.items()})
    result = compare(reference, dict(zip(reference, got, strict=True)), precision)
    result.update(backend="onnxruntime", provider="CPUExecutionProvider", batch=spec.batch_per_image)
    return result
