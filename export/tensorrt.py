"""TensorRT plan building (TensorRT 10.x and 11.x) from an ONNX file and a spec's profile.

One path for both majors: every network is created strongly typed (TensorRT 11 has no other kind; 10.x opts in
with the creation flag, looked up by name since its bit differs between the majors), so a plan runs the types its
ONNX holds: an fp16 plan is parsed from the `.fp16.onnx` with its fp32 islands (the converter's block list, shared
with every other backend), an fp32 plan from the fp32 ONNX. No precision builder flag is set (TensorRT 11 removed
FP16/INT8/BF16/FP8 and the precision constraints); fp32 plans clear TF32.

TensorRT is imported lazily inside the functions that need it, so this module (and everything that imports it)
works on machines without TensorRT or a GPU; `runtime.tensorrt_engine.tensorrt_usable()` says why a build cannot
run there.

A plan is only valid for the TensorRT version and the GPU architecture that built it (no version- or
hardware-compatibility flags are used: they cost speed). Hence the version and compute capability live in the
plan's file name and in the manifest, and `check_plan_compatibility` compares them before a plan is loaded.
"""

from __future__ import annotations

import logging
import numbers
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime.compat import TYPING, parse_compute_capability, parse_trt_version, tensorrt_support
from runtime.files import atomic_write

from .errors import BuildError

logger = logging.getLogger(__name__)

Profile = Mapping[str, Mapping[str, Sequence[int]]]

PRECISIONS = ("fp16", "fp32", "int8", "fp8")  # int8, fp8: parsed from a Q/DQ ONNX (explicit quantization)
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class TensorRTBuildError(BuildError):
    """A TensorRT plan could not be built; the message says what failed and what to do about it."""


# -- environment ------------------------------------------------------------------------------------


def gpu_info(device: int | None = None) -> dict[str, str] | None:
    """Name, compute capability and CUDA/driver versions of a GPU, or None without CUDA: recorded per plan."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    info = {"name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}
    if torch.version.cuda:
        info["cuda"] = str(torch.version.cuda)
    driver = _driver_version()
    if driver:
        info["driver"] = driver
    return info


def _driver_version() -> str | None:
    """The NVIDIA driver version via NVML when the `pynvml` bindings are installed; torch does not expose it."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # NVML missing or failing must not stop a build; the field is informational
        logger.debug("NVML driver query failed: %s", e)
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


# -- pure helpers -----------------------------------------------------------------------------------


def plan_filename(component: str, precision: str, *, trt_version: str, compute_capability: str) -> str:
    """`unet.fp16.trt10.6.sm89.plan`: the name says which TensorRT and GPU the plan is tied to, so a stale plan
    is obvious from a directory listing and plans for several targets can sit side by side."""
    if not _COMPONENT_RE.match(component or ""):
        raise TensorRTBuildError(
            f"component must be a non-empty name of letters, digits, '_' or '-', got {component!r}"
        )
    if precision not in PRECISIONS:
        raise TensorRTBuildError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    version = parse_trt_version(trt_version)
    if version is None:
        raise TensorRTBuildError(f"trt_version must look like '10.6.0', got {trt_version!r}")
    cc = parse_compute_capability(compute_capability)
    if cc is None:
        raise TensorRTBuildError(f"compute_capability must look like '8.9', got {compute_capability!r}")
    return f"{component}.{precision}.trt{version[0]}.{version[1]}.sm{cc[0]}{cc[1]}.plan"


def builder_flag_names(precision: str) -> list[str]:
    """The BuilderFlag changes a build makes, as recorded in the manifest: "NAME" is set, "-NAME" cleared.

    Precision is the graph's, never a flag's. An fp32 plan clears TF32, which TensorRT enables by default: TF32
    keeps ~10 mantissa bits, which breaks the fp32 verification tolerance (1e-4) and defeats the purpose of the
    fp32 variants kept as exact fallbacks (e.g. the VAE decoder). fp16, int8 and fp8 plans keep TensorRT's default:
    their float islands are small and their tolerances dwarf TF32's error.
    """
    if precision not in PRECISIONS:
        raise TensorRTBuildError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return ["-TF32"] if precision == "fp32" else []


def _validate_profile(profile: Profile) -> None:
    """Catch malformed profiles here with the input's name, rather than as an opaque TensorRT/ORT failure."""
    if not profile:
        raise TensorRTBuildError("profile is empty: it needs a {'min','opt','max'} entry per network input")
    for name, entry in profile.items():
        missing = [k for k in ("min", "opt", "max") if k not in entry]
        if missing:
            raise TensorRTBuildError(f"profile entry {name!r} lacks {missing}")
        lo, opt, hi = (list(entry[k]) for k in ("min", "opt", "max"))
        if not len(lo) == len(opt) == len(hi):
            raise TensorRTBuildError(f"profile entry {name!r}: min/opt/max ranks differ ({lo}, {opt}, {hi})")
        for a, b, c in zip(lo, opt, hi, strict=True):
            if not all(isinstance(d, numbers.Integral) for d in (a, b, c)) or not 0 < a <= b <= c:
                raise TensorRTBuildError(
                    f"profile entry {name!r}: need positive ints with min <= opt <= max, got "
                    f"min={lo} opt={opt} max={hi}"
                )


# -- building -------------------------------------------------------------------------------------------


def _workspace_bytes(workspace_gb: float) -> int:
    if workspace_gb <= 0:
        raise TensorRTBuildError(f"workspace_gb: expected a positive number of GiB, got {workspace_gb}")
    return int(workspace_gb * (1 << 30))


def _apply_flags(trt: Any, config: Any, names: Sequence[str]) -> None:
    for name in names:
        flag = getattr(trt.BuilderFlag, name.lstrip("-"), None)
        if flag is None:
            raise TensorRTBuildError(f"TensorRT {trt.__version__} has no BuilderFlag.{name.lstrip('-')}")
        if name.startswith("-"):
            config.clear_flag(flag)
        else:
            config.set_flag(flag)


def _strongly_typed_network(trt: Any, builder: Any) -> Any:
    """A strongly typed network on TensorRT 10 and 11: the creation flag by name (its bit differs between the two
    majors); where a TensorRT has dropped the flag, strong typing is its only mode (11.x documents it as
    unconditional), and anything else is refused rather than silently weakly typed."""
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    strongly_typed = getattr(flags, "STRONGLY_TYPED", None)
    if strongly_typed is not None:
        return builder.create_network(1 << int(strongly_typed))
    major = (parse_trt_version(str(trt.__version__)) or (0, 0))[0]
    if major >= 11:
        return builder.create_network(0)
    raise TensorRTBuildError(
        f"TensorRT {trt.__version__} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED; acsdk builds strongly "
        "typed plans only (TensorRT 10.x or 11.x)"
    )


def _parse_onnx(trt: Any, network: Any, trt_logger: Any, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, trt_logger)
    # parse_from_file (not parse(bytes)) so weights stored as external data next to the .onnx are found.
    ok = parser.parse_from_file(str(onnx_path))
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    if not ok or errors:
        detail = "\n  ".join(errors) or "(the parser reported no details)"
        raise TensorRTBuildError(
            f"TensorRT's ONNX parser rejected {onnx_path}:\n  {detail}\n"
            "Check the export (opset, unsupported ops) and re-export with `python -m export.build`."
        )


def _add_profile(builder: Any, config: Any, network: Any, profile: Profile) -> None:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    names = [t.name for t in inputs]
    unknown = sorted(set(profile) - set(names))
    if unknown:
        raise TensorRTBuildError(
            f"profile names inputs the network does not have: {unknown}; network inputs: "
            f"{names}. The spec and the exported ONNX disagree: re-export the component."
        )
    missing = [n for n in names if n not in profile]
    if missing:
        raise TensorRTBuildError(
            f"network inputs without a profile entry: {missing}; every input needs "
            f"min/opt/max shapes. Add them to the component's spec in export/specs.py."
        )
    opt_profile = builder.create_optimization_profile()
    for tensor in inputs:
        entry = profile[tensor.name]
        lo, opt, hi = (tuple(int(d) for d in entry[k]) for k in ("min", "opt", "max"))
        declared = tuple(int(d) for d in tensor.shape)
        if len(declared) != len(lo):
            raise TensorRTBuildError(
                f"input {tensor.name!r} has rank {len(declared)} {list(declared)} in the "
                f"ONNX model but its profile has rank {len(lo)} {list(lo)}"
            )
        for axis, d in enumerate(declared):
            if d >= 0 and not lo[axis] == opt[axis] == hi[axis] == d:
                raise TensorRTBuildError(
                    f"input {tensor.name!r} axis {axis} is fixed to {d} in the ONNX model but the profile asks "
                    f"for min/opt/max {lo[axis]}/{opt[axis]}/{hi[axis]}: export it with that axis dynamic or "
                    f"fix the profile"
                )
        opt_profile.set_shape(tensor.name, lo, opt, hi)
    if config.add_optimization_profile(opt_profile) < 0:
        raise TensorRTBuildError(f"TensorRT rejected the optimization profile {dict(profile)}")


def _load_timing_cache(config: Any, timing_cache: Path | None) -> None:
    """Reuse tactic timings across builds (minutes saved per component); a cache from another TensorRT or GPU
    is not an error, the build just starts from an empty one and overwrites it."""
    if timing_cache is None:
        return
    data = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(data)
    if config.set_timing_cache(cache, ignore_mismatch=False):
        logger.info("timing cache %s: %s", timing_cache, f"{len(data)} bytes loaded" if data else "new")
        return
    logger.warning("timing cache %s was made by another TensorRT version or GPU; starting an empty one", timing_cache)
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise TensorRTBuildError(f"TensorRT refused even an empty timing cache; delete {timing_cache} or pass none")


def build_plan(
    onnx_path: Path,
    plan_path: Path,
    profile: Profile,
    precision: str,
    timing_cache: Path | None = None,
    workspace_gb: float | None = None,
) -> dict[str, Any]:
    """Build a serialized TensorRT plan from an ONNX file with one optimization profile; return its manifest entry.

    `precision` names what the ONNX holds ("fp16": the `.fp16.onnx`, "fp32": the fp32 graph); the network is
    strongly typed, so the plan runs exactly those types.

    The plan is written atomically (temp file + os.replace) so a failed or interrupted build never leaves a
    plan that looks valid. The timing cache, when given, is read before and rewritten after the build.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    timing_cache = Path(timing_cache) if timing_cache is not None else None
    try:
        import tensorrt as trt
    except Exception as e:
        raise TensorRTBuildError(
            f"tensorrt is not importable ({e}); install `acsdk[tensorrt]` on a CUDA machine or build ONNX-only"
        ) from e
    gpu = gpu_info()
    if gpu is None:
        raise TensorRTBuildError(
            "no CUDA GPU (torch.cuda.is_available() is False): TensorRT plans must be built "
            "on the GPU model that will run them"
        )
    if not onnx_path.is_file():
        raise TensorRTBuildError(f"ONNX model not found: {onnx_path}; export it first with `python -m export.build`")
    try:
        _validate_profile(profile)
    except TensorRTBuildError as e:
        raise TensorRTBuildError(f"invalid profile for {onnx_path.name}: {e}") from e

    flags = builder_flag_names(precision)
    version = str(trt.__version__)
    problem = tensorrt_support(version)
    if problem:
        raise TensorRTBuildError(problem)
    logger.info(
        "building %s -> %s (TensorRT %s, %s, %s, flags %s)",
        onnx_path.name,
        plan_path.name,
        version,
        gpu["name"],
        precision,
        flags,
    )
    start = time.perf_counter()

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = _strongly_typed_network(trt, builder)
    _parse_onnx(trt, network, trt_logger, onnx_path)

    config = builder.create_builder_config()
    if workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _workspace_bytes(workspace_gb))
    _add_profile(builder, config, network, profile)
    _apply_flags(trt, config, flags)
    _load_timing_cache(config, timing_cache)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTBuildError(
            f"TensorRT failed to build {onnx_path.name} (build_serialized_network returned None); see TensorRT's "
            "log above. Common causes: GPU out of memory (close other GPU jobs, lower --max-batch, or set "
            "workspace_gb) or a layer TensorRT cannot run in the graph's types (try an fp32 build)."
        )
    atomic_write(plan_path, plan)
    if timing_cache is not None:
        atomic_write(timing_cache, config.get_timing_cache().serialize())
    seconds = time.perf_counter() - start
    logger.info("built %s in %.1f s", plan_path, seconds)
    return {
        "tensorrt_version": version,
        "compute_capability": gpu["compute_capability"],
        "gpu_name": gpu["name"],
        "precision": precision,
        "typing": TYPING,
        "flags": flags,
        "build_seconds": round(seconds, 3),
        "profile": {
            name: {k: [int(d) for d in entry[k]] for k in ("min", "opt", "max")} for name, entry in profile.items()
        },
    }
