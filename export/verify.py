"""Build-time verification: each artifact against its torch module, on the spec's verification cases.

The torch outputs are computed once per component (`reference`), so the module can be freed before the fp16
conversion of a multi-GB graph; every artifact (fp32, fp16) is then checked against the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import BuildError
from .specs import FP16_TOLERANCE, FP32_TOLERANCE, QDQ_TOLERANCE, QUANTIZED, ComponentSpec, Dims


@dataclass
class Reference:
    """Inputs and torch outputs per verification case."""

    inputs: dict[str, dict[str, torch.Tensor]]
    outputs: dict[str, dict[str, torch.Tensor]]


def reference(spec: ComponentSpec, module: nn.Module, dims: Dims) -> Reference:
    inputs = spec.verification_inputs(dims)
    outputs = {}
    with torch.no_grad():
        for case, feeds in inputs.items():
            out = module(**feeds)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            outputs[case] = {t.name: o.detach().float().cpu() for t, o in zip(spec.outputs, outs, strict=True)}
    return Reference(inputs, outputs)


def compare(reference: dict[str, torch.Tensor], candidate: dict[str, np.ndarray], precision: str) -> dict:
    tol = FP16_TOLERANCE if precision == "fp16" else QDQ_TOLERANCE if precision in QUANTIZED else FP32_TOLERANCE
    worst_abs, worst_rel, scale, finite = 0.0, 0.0, 0.0, True
    for name, ref in reference.items():
        ref = ref.numpy()
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


def _ort_session(onnx_path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


def onnx_runner(spec: ComponentSpec, onnx_path: Path) -> Callable[[dict[str, torch.Tensor]], list[np.ndarray]]:
    """Runs an ONNX file on ONNX Runtime's CPU provider: the reference every backend is checked against."""
    session = _ort_session(onnx_path)
    return lambda feeds: session.run([t.name for t in spec.outputs], {k: v.numpy() for k, v in feeds.items()})


def reference_from_onnx(spec: ComponentSpec, onnx_path: Path, dims: Dims) -> Reference:
    """Reference outputs without torch: the fp32 ONNX on ONNX Runtime CPU (plans built on a target from shipped
    ONNX files have no checkpoint to compare with)."""
    run = onnx_runner(spec, onnx_path)
    inputs = spec.verification_inputs(dims)
    outputs = {
        case: {t.name: torch.from_numpy(np.asarray(o)).float() for t, o in zip(spec.outputs, run(feeds), strict=True)}
        for case, feeds in inputs.items()
    }
    return Reference(inputs, outputs)


def verify_onnx(spec: ComponentSpec, ref: Reference, onnx_path: Path, precision: str) -> dict:
    """Run the ONNX file on ONNX Runtime (CPU) on every case; the worst case decides, each is recorded."""
    return verify_runner(spec, ref, onnx_runner(spec, onnx_path), precision, backend="onnxruntime")


def verify_runner(
    spec: ComponentSpec,
    ref: Reference,
    run: Callable[[dict[str, torch.Tensor]], list],
    precision: str,
    backend: str,
) -> dict:
    """Any backend's outputs on the verification cases against the reference, with the precision's tolerance."""
    cases = {}
    for case, feeds in ref.inputs.items():
        got = [np.asarray(o.detach().float().cpu() if torch.is_tensor(o) else o) for o in run(feeds)]
        cases[case] = compare(ref.outputs[case], dict(zip(ref.outputs[case], got, strict=True)), precision)
    worst = max(cases.values(), key=lambda r: (not r["passed"], r["max_abs"]))
    result = {k: v for k, v in worst.items()}
    result.update(
        passed=all(r["passed"] for r in cases.values()),
        cases={c: {k: r[k] for k in ("max_abs", "max_rel", "reference_scale", "passed")} for c, r in cases.items()},
        backend=backend,
        batch=spec.batch_per_image,
    )
    return result
