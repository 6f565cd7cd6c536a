"""What this CPU's INT8 kernels can do: whether u8 x s8 products accumulate without saturating.

x86 CPUs without VNNI (AVX2-only, or AVX-512 before Cascade Lake) multiply INT8 with `vpmaddubsw`, which adds two
u8 x s8 products into a saturating int16: full 8-bit weights can overflow it and the result silently differs from
the one a VNNI CPU (`vpdpbusd`, int32 accumulation) computes. An INT8 model is portable across x86 only when its
weights leave that headroom (NNCF's overflow fix: 7-bit weights). oneDNN's `ONEDNN_MAX_CPU_ISA` caps the kernels
OpenVINO's CPU plugin uses, so a capped process behaves like the older CPU: `int8_accumulates_exactly` honours it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

ISA_ENV = "ONEDNN_MAX_CPU_ISA"
# The CPU flags (Linux /proc/cpuinfo names) that give INT8 dot products with int32 accumulation.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# oneDNN ISA caps at or above which its x86 INT8 kernels use VNNI (where the CPU has it).
_VNNI_CAPS = ("AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_FP16")
_VNNI_CAPS_PREFIX = ("AVX512_CORE_AMX", "AVX10")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them; empty where they cannot be read (other OSes)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): OpenVINO then runs fp16 engines at bf16, whose
    weights take half the memory of the fp32 it widens them to elsewhere."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def _cap_allows_vnni(cap: str) -> bool:
    cap = cap.strip().upper()
    return not cap or cap == "ALL" or cap in _VNNI_CAPS or cap.startswith(_VNNI_CAPS_PREFIX)


def int8_accumulates_exactly() -> bool:
    """True where this process's x86 INT8 kernels accumulate u8 x s8 products in int32 (VNNI / AMX and not capped
    below it by ONEDNN_MAX_CPU_ISA); False on pre-VNNI x86, and where the flags cannot be read."""
    return bool(vnni_flags()) and _cap_allows_vnni(os.environ.get(ISA_ENV, ""))


def vnni_flags() -> list[str]:
    """The INT8 dot-product flags this CPU has (empty on pre-VNNI x86, non-x86 and unreadable flags)."""
    return [f for f in VNNI_FLAGS if f in cpu_flags()]


def isa_summary() -> dict:
    """What the manifest records about the CPU an INT8 model was built and gated on."""
    return {
        "machine": platform.machine(),
        "int8_vnni": vnni_flags(),
        "isa_cap": os.environ.get(ISA_ENV) or None,
        "int8_accumulates_exactly": int8_accumulates_exactly(),
    }


def int8_gate_holds_here(artifact: Mapping) -> tuple[bool, str]:
    """(True, "") where an INT8 artifact's build-time gate holds on this CPU, else (False, why).

    It holds where the weights leave pre-VNNI headroom (overflow fix "enable": every x86 CPU computes the same
    integers), or where this CPU accumulates as the build CPU did. A dir from before the build CPU was recorded is
    taken as gated on x86 with VNNI (the only kind its gate passed on). Elsewhere (a VNNI-gated model on an AVX2 line
    PC, an x86-gated model on another architecture) what the gate measured is not what would run."""
    built = artifact.get("build_cpu") or {"machine": "x86_64", "int8_accumulates_exactly": True}
    machine = platform.machine()
    if _x86(built.get("machine", "")) != is_x86() or (not is_x86() and built.get("machine") != machine):
        return False, f"its INT8 gate was measured on {built.get('machine')}, this CPU is {machine}"
    if not is_x86() or artifact.get("overflow_fix") == "enable":
        return True, ""
    exact_here = int8_accumulates_exactly()
    if bool(built.get("int8_accumulates_exactly")) == exact_here:
        return True, ""
    has = "has" if exact_here else "lacks"
    return False, (
        f"it was gated on an x86 CPU {'without' if exact_here else 'with'} VNNI and quantized without the overflow "
        f"fix; this CPU {has} VNNI{'' if exact_here else ' (its INT8 products saturate)'}: rebuild with --int8 here"
    )


def is_x86() -> bool:
    return _x86(platform.machine())


def _x86(machine: str) -> bool:
    return machine.lower() in ("x86_64", "amd64", "i386", "i686")
