"""How close to the hardware: FLOPs of a call, and this machine's measured matmul peaks (fp32, bf16, int8)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch
from torch import nn


def flops(module: nn.Module, inputs: Mapping[str, torch.Tensor]) -> float:
    """Floating-point operations of one call (torch's FLOP counter: matmuls and convolutions, 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(**inputs)
    return float(counter.get_total_flops())


def matmul_peaks(n: int = 2048, repeat: int = 5) -> dict[str, float]:
    """Large square matmuls on this CPU with torch's threads: GFLOP/s fp32 and bf16, GOP/s int8 (where torch has
    an int8 matmul here). The ceiling each backend's achieved rate is read against."""
    out = {}
    a, b = torch.randn(n, n), torch.randn(n, n)
    cases = {"fp32_gflops": (a, b, torch.mm), "bf16_gflops": (a.bfloat16(), b.bfloat16(), torch.mm)}
    if hasattr(torch, "_int_mm"):
        ai = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        cases["int8_gops"] = (ai, ai.clone(), torch._int_mm)
    for key, (x, y, op) in cases.items():
        try:
            for _ in range(2):
                op(x, y)
            t0 = time.perf_counter()
            for _ in range(repeat):
                op(x, y)
            out[key] = round(2 * n**3 / ((time.perf_counter() - t0) / repeat) / 1e9, 1)
        except RuntimeError:  # no such kernel on this CPU
            continue
    return out
