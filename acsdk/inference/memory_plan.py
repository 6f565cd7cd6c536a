"""Whether a Synthesizer holds every component it opens (the default) or one at a time (`low_memory`), when the
caller does not say: from the memory the engine dir's components take on this host and the memory it has free.

A user who never read about `low_memory` should not be stopped by the OOM killer on a line PC: a real-size fp16 dir
with everything open needs more than 8 GB (docs/real-size.md), one component at a time fits in 4-6 GB. The estimate
is deliberately simple and errs towards low_memory (which costs ~1.5 % per image at real size, the same images)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.process import available_memory_mib

log = logging.getLogger(__name__)

# Fitted to the real-size runs (docs/real-size.md, "The defaults on a line PC"): every component held after a run
# from a fresh reference took 13.3 GB of the process's own memory for 9.4 GB of fp32 weights, 10.5 GB for the fp16
# dir's 5.4 GB on a bf16 CPU (compiled weights, the engines' own buffers, the torch Q-Former); timing ONNX Runtime's
# UNet, the first time a host opens the dir under `auto`, took ~8 GB more for its 3.4 GB of fp32-equivalent weights
# (cast, pre-packed) beside what was held.
WEIGHTS_FACTOR = {"fp32": 1.15, "fp16": 1.45, "int8": 1.45}  # own memory per MiB of a held component's file
MEASURING_FACTOR = 2.5  # ONNX Runtime's own memory per MiB of fp32-equivalent weights, while `auto` times it
# Activation buffers a CPU backend keeps per component at the model's size, per 512 x 512 pixels (measured at real
# size: VAE decoder 0.8 GB, encoder 0.4, UNet 0.23, vision tower and text encoder ~0.1: docs/real-size.md).
ACTIVATIONS_MIB_512 = 1600
BASE_MIB = 1200  # Python, torch, the tokenizers, OpenVINO's and ONNX Runtime's own libraries
MARGIN = 1.1  # low_memory is chosen where the estimate with this much headroom exceeds what is free


@dataclass(frozen=True)
class MemoryPlan:
    """The mode a Synthesizer runs in and why: what `info()["memory"]` and `acsdk info` show."""

    low_memory: bool
    chosen_by: str  # "caller" or "auto"
    why: str
    estimate_mib: float | None = None  # the default mode's estimated own memory
    available_mib: float | None = None

    def as_dict(self) -> dict:
        return {
            "low_memory": self.low_memory,
            "chosen_by": self.chosen_by,
            "why": self.why,
            "default_mode_estimate_mib": None if self.estimate_mib is None else round(self.estimate_mib),
            "available_mib": None if self.available_mib is None else round(self.available_mib),
        }


def _weights_mib(root: Path, entry: Mapping, widen_fp16: bool) -> tuple[float, float]:
    """(MiB of its own memory a CPU backend holds for a component, the component's fp32-equivalent MiB of weights):
    from the artifact it opens at the dir's precision (OpenVINO's INT8 IR, or the ONNX of that precision, else the
    fp32 one); fp16 weights count as fp32 where the CPU computes in fp32 (no bf16)."""
    arts = entry["artifacts"]
    prec = entry["precision"]
    art = next((a for a in arts if a["format"] == "openvino" and a["precision"] == prec), None)
    art = art or next((a for a in arts if a["format"] == "onnx" and a["precision"] == prec), None)
    art = art or next((a for a in arts if a["format"] == "onnx" and a["precision"] == "fp32"), None)
    if art is None:
        return 0.0, 0.0
    size = sum((root / f).stat().st_size for f in [art["file"], *art.get("data_files", [])] if (root / f).is_file())
    mib = size / 2**20
    fp32 = {"fp16": 2.0, "int8": 4.0}.get(art["precision"], 1.0) * mib
    if widen_fp16 and art["precision"] == "fp16":  # held as the fp32 it is computed in
        return fp32 * WEIGHTS_FACTOR["fp32"], fp32
    return mib * WEIGHTS_FACTOR.get(art["precision"], WEIGHTS_FACTOR["fp32"]), fp32


def default_mode_mib(root: Path, manifest: Mapping, widen_fp16: bool, measuring: bool = False) -> float:
    """Estimated peak own memory of the default mode: every component held after a run from a fresh reference, and,
    where `auto` has yet to time its backends here (`measuring`), ONNX Runtime's copy of the largest component
    beside the rest while it is timed (one engine per component at a time)."""
    sizes = [_weights_mib(root, e, widen_fp16) for e in manifest["components"].values()]
    qformer = root / "torch" / "qformer.safetensors"  # ASEA's, in torch at fp32
    torch_mib = qformer.stat().st_size / 2**20 * WEIGHTS_FACTOR["fp32"] if qformer.is_file() else 0.0
    held = sum(w for w, _ in sizes) + torch_mib
    model = manifest["model"]
    need = held + ACTIVATIONS_MIB_512 * model["height"] * model["width"] / (512 * 512) + BASE_MIB
    if measuring and sizes:
        largest, fp32 = max(sizes, key=lambda s: s[1])
        need += MEASURING_FACTOR * fp32 - largest
    return need


def plan_memory(
    root: Path, manifest: Mapping, requested: bool | None, cpu: bool, widen_fp16: bool, measuring: bool = False
) -> MemoryPlan:
    """`requested` True/False is the caller's; None (the default) chooses low_memory where the default mode's
    estimate, with a margin, exceeds the memory available to this process (host or cgroup limit), on CPUs (a GPU's
    memory is the backend's business). `measuring`: `auto` will time its CPU backends at the first loads."""
    if requested is not None:
        return MemoryPlan(bool(requested), "caller", "low_memory=" + str(bool(requested)))
    if not cpu:
        return MemoryPlan(False, "auto", "components run on a GPU")
    need = default_mode_mib(root, manifest, widen_fp16, measuring)
    free = available_memory_mib()
    if free is None:
        return MemoryPlan(False, "auto", "available memory unknown here", need, None)
    timing = " (with auto's first timing of its backends)" if measuring else ""
    if need * MARGIN <= free:
        why = f"default mode: ~{need / 1024:.1f} GiB estimated{timing}, {free / 1024:.1f} GiB available"
        return MemoryPlan(False, "auto", why, need, free)
    why = (f"low_memory chosen: holding every component would take ~{need / 1024:.1f} GiB here{timing}, "
           f"{free / 1024:.1f} GiB is available (pass low_memory=False to hold them anyway)")  # fmt: skip
    log.warning("%s", why)
    return MemoryPlan(True, "auto", why, need, free)
