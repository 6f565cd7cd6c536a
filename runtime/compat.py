"""Whether a compiled TensorRT plan can run on this machine: a check made before deserialising it.

Plans are built without TensorRT's version- or hardware-compatibility modes (they cost speed), so a plan
runs only on the TensorRT version and GPU architecture that built it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REBUILD_HINT = "rebuild the plans on this machine with `python -m export.build`"
# The TensorRT majors acsdk builds and runs plans with: 10.x (JetPack 6, workstation installs) and 11.x (what
# `pip install tensorrt` brings today, JetPack 7.2.2+). Both through one strongly typed path: precision lives in
# the ONNX graph, no precision builder flags (TensorRT 11 removed them). A later major may change the API again.
SUPPORTED_TRT_MAJORS = (10, 11)
TYPING = "strongly_typed"  # the manifest's record of how every plan was built


def tensorrt_support(version: str) -> str | None:
    """None when this TensorRT version is one acsdk's build path supports, else why not (one sentence)."""
    parsed = parse_trt_version(version)
    if parsed is None:
        return f"tensorrt {version!r} found, but its version cannot be read"
    major = parsed[0]
    if major < SUPPORTED_TRT_MAJORS[0]:
        return f"tensorrt {version} found, but TensorRT >= {SUPPORTED_TRT_MAJORS[0]} is required"
    if major not in SUPPORTED_TRT_MAJORS:
        majors = ", ".join(map(str, SUPPORTED_TRT_MAJORS))
        return (
            f"tensorrt {version} found: TensorRT {major} is newer than this acsdk supports (majors {majors}); "
            f"install `tensorrt<{SUPPORTED_TRT_MAJORS[-1] + 1}` or a newer acsdk"
        )
    return None


_VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:[.\-+].*)?$")
_CC_RE = re.compile(r"^(\d+)\.(\d+)$")


def parse_trt_version(version: str) -> tuple[int, int] | None:
    m = _VERSION_RE.match(str(version).strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_compute_capability(cc: str) -> tuple[int, int] | None:
    m = _CC_RE.match(str(cc).strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_plan_compatibility(recorded: Mapping[str, Any], current_trt: str, current_cc: str) -> str | None:
    """None when a plan recorded with `recorded` can run here, else what differs and how to fix it.

    Rule: the TensorRT version and the compute capability must both match exactly. Plans are built without
    TensorRT's version/hardware compatibility modes, and TensorRT documents such plans as loadable only by
    the exact version that built them; a patch release can already refuse them at deserialisation.
    """
    rec_trt, rec_cc = recorded.get("tensorrt_version"), recorded.get("compute_capability")
    problems = []
    rec_v, cur_v = parse_trt_version(str(rec_trt)), parse_trt_version(str(current_trt))
    if rec_v is None:
        problems.append(f"the plan records no usable TensorRT version ({rec_trt!r})")
    elif cur_v is None:
        problems.append(f"this machine's TensorRT version is unknown ({current_trt!r})")
    elif str(rec_trt).strip() != str(current_trt).strip():
        problems.append(f"built with TensorRT {rec_trt} but this machine has TensorRT {current_trt} (must match)")
    rec_c, cur_c = parse_compute_capability(str(rec_cc)), parse_compute_capability(str(current_cc))
    if rec_c is None:
        problems.append(f"the plan records no usable compute capability ({rec_cc!r})")
    elif cur_c is None:
        problems.append(f"this GPU's compute capability is unknown ({current_cc!r})")
    elif rec_c != cur_c:
        problems.append(
            f"built for compute capability {rec_cc} (sm{rec_c[0]}{rec_c[1]}) but this GPU is "
            f"{current_cc} (sm{cur_c[0]}{cur_c[1]})"
        )
    if not problems:
        return None
    return f"TensorRT plan is incompatible with this machine: {'; '.join(problems)}. To fix: {REBUILD_HINT}."
