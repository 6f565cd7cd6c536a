"""What a Synthesizer runs on: `ModelParts`, from a checkpoint (torch engines) or from an engine dir (compiled
engines per component, plus the torch Q-Former ASEA needs for its gradient)."""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BertTokenizer, Blip2Config, CLIPTokenizer

from runtime import Engine, TorchEngine, model_cache
from runtime.cpu import cpu_has_bf16, int8_gate_holds_here
from runtime.errors import BackendUnavailableError, EngineDirError, IncompatibleEngineError
from runtime.manifest import Manifest, manifest_sha256

from ..errors import InputError
from ..models.checkpoint import AnomalyControlModel
from ..models.components import COMPONENT_NAMES, CSMQFormer, CSMVision, SGAUNet, TextEncoder, VAEDecoder, VAEEncoder
from ..models.config import ModelConfig
from ..models.csm import QFormer
from .backend_choice import BackendChoice
from .loading import Components, Lazy
from .memory_plan import MemoryPlan, plan_memory
from .sampler import GUARDED, LatentGeometry

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt", "torch")


@dataclass
class ModelParts:
    """What a Synthesizer needs, whether it came from a checkpoint (torch) or an engine dir."""

    config: ModelConfig
    engines: Components  # loaded on first use, releasable
    qformer: Lazy[QFormer]  # torch, for ASEA's gradient
    tokenizer: object
    qformer_tokenizer: object
    scheduler_config: dict
    geometry: LatentGeometry
    vision_image_size: int
    attention_grid: tuple[int, int]
    unconditional_tokens: torch.Tensor  # [1, T, D]
    fallbacks: list[str] = field(default_factory=list)  # backend="auto" choices below the first, and why
    backend_choice: dict[str, dict] = field(default_factory=dict)  # auto on a CPU: ms per backend, per component
    memory: MemoryPlan = MemoryPlan(False, "caller", "components are torch modules")  # all held, or one at a time


def parts_from_model(model: AnomalyControlModel) -> ModelParts:
    """Wrap a loaded checkpoint's modules as torch engines."""
    engines: dict[str, Engine] = {
        "text_encoder": TorchEngine("text_encoder", TextEncoder(model.text_encoder)),
        "csm_vision": TorchEngine("csm_vision", CSMVision(model.blip2.vision_model)),
        "csm_qformer": TorchEngine("csm_qformer", CSMQFormer(model.qformer, model.projection)),
        "unet": TorchEngine("unet", SGAUNet(model.unet)),
        "vae_encoder": TorchEngine("vae_encoder", VAEEncoder(model.vae)),
        "vae_decoder": TorchEngine("vae_decoder", VAEDecoder(model.vae)),
    }
    with torch.no_grad():
        uncond = model.projection.unconditional().float()
    geometry = LatentGeometry(
        model.vae_scale_factor, float(model.vae.config.scaling_factor), int(model.vae.config.latent_channels)
    )
    return ModelParts(
        config=model.config,
        engines=Components.pinned(engines),
        qformer=Lazy.pinned("asea_qformer", model.qformer),
        tokenizer=model.tokenizer,
        qformer_tokenizer=model.qformer_tokenizer,
        scheduler_config=model.scheduler_config,
        geometry=geometry,
        vision_image_size=model.vision_image_size,
        attention_grid=model.attention_grid,
        unconditional_tokens=uncond,
    )


def _artifact(entry: Mapping, fmt: str, precision: str) -> Mapping | None:
    return next((a for a in entry["artifacts"] if a["format"] == fmt and a["precision"] == precision), None)


def _candidates(entry: Mapping, requested: str, device: torch.device) -> list[tuple[str, torch.device]]:
    """The backends to try for a component, in order. An explicit backend is the only one; `auto` is TensorRT
    (when the dir has a plan and TensorRT is usable) > ONNX Runtime CUDA on a GPU, then the CPU backends: OpenVINO >
    ONNX Runtime CPU, which `parts_from_engine_dir` reorders per component by a measurement on this host
    (backend_choice.py), except with low_memory."""
    if requested != "auto":
        return [(requested, device)]
    out = []
    if device.type == "cuda":
        if any(a["format"] == "tensorrt" for a in entry["artifacts"]):
            from runtime.tensorrt_engine import tensorrt_usable

            if tensorrt_usable()[0]:
                out.append(("tensorrt", device))
        out.append(("onnxruntime", device))
    from runtime.openvino_engine import openvino_usable

    cpu = torch.device("cpu")
    return out + ([("openvino", cpu)] if openvino_usable()[0] else []) + [("onnxruntime", cpu)]


@dataclass(frozen=True)
class EngineOptions:
    """How engines are opened beyond the backend: OpenVINO's device and model-cache folder; `low_memory` opens ONNX
    Runtime's CPU sessions without their allocation arena (a lower peak, slower at small sizes) and keeps one compiled
    input shape per OpenVINO engine (each holds its own copy of the weights)."""

    openvino_device: str = "CPU"
    cache_dir: Path | None = None
    allow_unverified_plans: bool = False
    low_memory: bool = False


def _onnx(entry: Mapping, precision: str) -> tuple[Mapping | None, str]:
    """The ONNX file of that precision, else the fp32 one (a dir given fp16 TensorRT plans on the target keeps
    its fp32 ONNX for the other backends)."""
    art = _artifact(entry, "onnx", precision)
    if art is None and precision != "fp32":
        return _artifact(entry, "onnx", "fp32"), "fp32"
    return art, precision


def _path(manifest: Manifest, art: Mapping, verify: bool) -> Path:
    """The artifact's main file, after every file it consists of was checked against the manifest."""
    for rel in art.get("data_files", []):
        manifest.path(rel, verify)
    return manifest.path(art["file"], verify)


def load_engine(*args, **kwargs) -> Engine:
    """Open a component on a backend; the engine records the precision it actually runs at."""
    engine, precision = _open_engine(*args, **kwargs)
    engine.precision = precision
    return engine


def _open_engine(
    name: str,
    manifest: Manifest,
    backend: str,
    precision: str,
    device: torch.device,
    verify: bool,
    options: EngineOptions = EngineOptions(),
) -> tuple[Engine, str]:
    entry = manifest.components[name]
    io = (entry["inputs"], entry["outputs"])
    if backend == "onnxruntime":  # int8: the Q/DQ ONNX where the dir has one (asked for explicitly), else fp32
        from runtime.onnxruntime_engine import OrtEngine

        art, precision = _onnx(entry, precision)
        if art is None:
            raise EngineDirError(f"{name}: the engine dir has no {precision} ONNX file; rebuild with export.build")
        arena = False if options.low_memory else None
        return OrtEngine(name, _path(manifest, art, verify), *io, device, arena=arena), precision
    if backend == "openvino":
        from runtime.openvino_engine import MAX_COMPILED_SHAPES, OpenVINOEngine

        art = _artifact(entry, "openvino", precision)
        if art is None:
            art, precision = _onnx(entry, precision)
        if art is None:
            raise EngineDirError(f"{name}: the engine dir has no {precision} ONNX or OpenVINO file; rebuild it")
        path = _path(manifest, art, verify)
        # The cache entry is held while the engine lives (no process evicts it); opening it evicts others over the cap.
        lease = None if options.cache_dir is None else model_cache.use(options.cache_dir, source=manifest.root)
        engine = OpenVINOEngine(
            name,
            path,
            *io,
            device=options.openvino_device,
            precision=precision,
            cache_dir=options.cache_dir,
            max_shapes=1 if options.low_memory else MAX_COMPILED_SHAPES,
            cache_lease=lease,
        )
        return engine, precision
    if backend == "tensorrt":
        from runtime.tensorrt_engine import TensorRTEngine

        check_backend(name, backend, device, options.openvino_device)
        art = _artifact(entry, "tensorrt", precision)
        if art is None and precision in ("int8", "fp8"):  # a quantized UNet without its plan: fp16, else fp32
            precision = "fp16" if _artifact(entry, "tensorrt", "fp16") else "fp32"
            art = _artifact(entry, "tensorrt", precision)
        if art is None:
            raise EngineDirError(f"{name}: the engine dir has no TensorRT plan; build with `--backend tensorrt`")
        plan = manifest.path(art["file"], verify)
        engine = TensorRTEngine(name, plan, *io, art, device, allow_unverified=options.allow_unverified_plans)
        return engine, precision
    raise InputError("backend", f"one of {', '.join(BACKENDS)}", repr(backend))


def check_backend(name: str, backend: str, device: torch.device, openvino_device: str) -> None:
    """BackendUnavailableError saying what works, before anything is opened, where `backend` cannot run here: an
    explicit backend's absence shows when the Synthesizer is made, not at its first image."""
    if backend == "onnxruntime":
        from runtime.onnxruntime_engine import check_providers

        check_providers(name, device)
    elif backend == "openvino":
        from runtime.openvino_engine import check_device

        check_device(name, openvino_device)
    elif backend == "tensorrt":
        from runtime.tensorrt_engine import tensorrt_usable

        ok, why = tensorrt_usable()
        if not ok:
            raise BackendUnavailableError(f"backend 'tensorrt' for {name}: {why}; backend='onnxruntime' works here")


def _precision_on(backend: str, precision: str, explicit: bool) -> str:
    """What a backend runs of a component's precision. An INT8 UNet is OpenVINO's INT8 IR or TensorRT's INT8 plan,
    an FP8 one TensorRT's FP8 plan; ONNX Runtime (and OpenVINO, for FP8) run the fp32 ONNX unless the precision was
    asked for by name (then the Q/DQ ONNX, which the build gated on ONNX Runtime CPU: what the plan is made from)."""
    if explicit or backend == "tensorrt":
        return precision
    if (precision == "int8" and backend == "onnxruntime") or precision == "fp8":
        return "fp32"
    return precision


def _int8_here(name: str, entry: Mapping) -> tuple[str, str]:
    """("int8", "") where the INT8 artifact's gate holds on this CPU; else ("fp32", why): what the gate measured
    would not be what runs here (runtime/cpu.py). An explicit precision override still runs INT8."""
    art = _artifact(entry, "openvino", "int8")
    ok, why = int8_gate_holds_here(art or {})
    return ("int8", "") if ok else ("fp32", f"{name}: fp32 instead of INT8, because {why}")


class _UntilFirstRun:
    """An engine `auto` opened but has not run yet (OpenVINO compiles at the first call; with low_memory nothing
    was measured): if that first call fails on its backend, the next candidate opens and runs the same inputs, and
    that fallback is recorded. After a first success it is simply the engine, failures and all. Everything but
    `run` is the engine's own (backend, precision, describe, ...)."""

    def __init__(self, engine: Engine, fallback):
        self._engine, self._fallback, self._proven = engine, fallback, False
        self._lock = threading.Lock()

    def __getattr__(self, attr: str):
        return getattr(self._engine, attr)

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self._proven:
            with self._lock:
                while not self._proven:
                    try:
                        out = self._engine.run(inputs)
                    except BackendUnavailableError as exc:
                        if self._fallback is None:
                            raise
                        log.warning("backend auto: %s failed at its first call on %s: %s", self._engine.name,
                                    self._engine.backend, exc)  # fmt: skip
                        nxt = self._fallback(exc)  # raises when no backend is left
                        if isinstance(nxt, _UntilFirstRun):  # (the next one may fail as well)
                            self._engine, self._fallback = nxt._engine, nxt._fallback
                        else:
                            self._engine, self._fallback = nxt, None
                        continue
                    self._proven = True
                    return out
        return self._engine.run(inputs)


def openvino_cache_dir(manifest: Manifest) -> Path:
    """OpenVINO's compiled-model cache: in this user's acsdk cache on this host, per engine dir, never in the engine
    dir. OpenVINO writes its blobs in place, so a cache on a shared engine dir could be read half-written by another
    node (every Ray worker loads the same dir); and an engine dir stays read-only once built. Bounded by
    runtime/model_cache.py (least recently used entries go over ACSDK_OPENVINO_CACHE_MAX_GB)."""
    return model_cache.openvino_cache_root() / f"{manifest_sha256(manifest.root)[:16]}-{socket.gethostname()}"


def parts_from_engine_dir(
    engine_dir: str | os.PathLike,
    backend: str,
    device: torch.device,
    verify: bool,
    component_backends: Mapping[str, str] | None,
    checkpoint: str | os.PathLike | None,
    openvino_device: str = "CPU",
    precision_overrides: Mapping[str, str] | None = None,
    allow_unverified_plans: bool = False,
    low_memory: bool | None = False,
):
    """Return ModelParts whose engines come from the engine dir (or torch for overridden components), each opened
    when first used (a run from a bank never opens the reference side). `low_memory` None chooses it from this
    host's free memory (memory_plan.py).

    `precision_overrides` runs a component at another precision the dir holds (e.g. {"unet": "fp32"} in an
    `--int8` dir, for an A/B comparison)."""
    if backend not in BACKENDS:
        raise InputError("backend", f"one of {', '.join(BACKENDS)}", repr(backend))
    overrides = dict(component_backends or {})
    manifest = Manifest.load(engine_dir)
    for name, b in overrides.items():
        if name not in manifest.components:
            raise InputError("component_backends", f"component names from {sorted(manifest.components)}", repr(name))
        if b not in BACKENDS[1:]:
            raise InputError("component_backends", f"backends from {', '.join(BACKENDS[1:])}", f"{name}={b!r}")
    precisions = dict(precision_overrides or {})
    for name, prec in precisions.items():
        held = sorted({a["precision"] for a in manifest.components.get(name, {}).get("artifacts", [])})
        if prec not in held:
            raise InputError("precision_overrides", f"{name} at one of the precisions the dir holds {held}", repr(prec))
    torch_parts = None
    if backend == "torch" or "torch" in overrides.values():
        if checkpoint is None:
            raise InputError("checkpoint", "the checkpoint dir, to run components in torch", "None")
        torch_parts = parts_from_model(AnomalyControlModel.from_pretrained(checkpoint, device=device))

    cpu = device.type == "cpu" and openvino_device.upper().startswith("CPU")
    choice = BackendChoice(openvino_cache_dir(manifest))  # `auto` on a CPU: the faster backend per component, here
    measuring = backend == "auto" and cpu and choice.pending(manifest.components)
    memory = plan_memory(manifest.root, manifest.data, low_memory, cpu, not cpu_has_bf16(), measuring)
    low_memory = memory.low_memory
    options = EngineOptions(openvino_device, openvino_cache_dir(manifest), allow_unverified_plans, low_memory)
    fallbacks: list[str] = []
    opened: dict[str, tuple[str, torch.device]] = {}  # component -> the backend and device it was opened on
    # component -> {(backend, device): why}: what `auto` saw fail at a first call, skipped from then on
    unusable: dict[str, dict[tuple[str, torch.device], str]] = {n: {} for n in manifest.components}

    def open_component(name: str) -> Engine:
        """Open `name` on the first backend that can run it (`auto`: in order of preference or measurement)."""
        entry = manifest.components[name]
        if overrides.get(name) == "torch":
            opened[name] = ("torch", device)
            return torch_parts.engines[name]
        precision = precisions.get(name, entry["precision"])
        explicit = name in precisions

        def precision_on(b: str) -> tuple[str, str]:
            """(what backend `b` runs of the component's precision, why it is not the dir's INT8 or ""). The INT8
            gate measured on the build CPU decides only where this host's CPU runs the INT8 UNet: OpenVINO on the
            CPU device. TensorRT's INT8 plan on a GPU (a Jetson's aarch64 host included) is not the CPU's business."""
            prec = _precision_on(b, precision, explicit)
            if prec == "int8" and not explicit and b == "openvino" and openvino_device.upper().startswith("CPU"):
                prec, why = _int8_here(name, entry)
                return prec, why
            return prec, ""

        chose = overrides.get(name, backend) == "auto"
        candidates = [c for c in _candidates(entry, overrides.get(name, backend), device) if c not in unusable[name]]
        tried = [f"{b} on {d.type}: {why}" for (b, d), why in unusable[name].items()]
        cpu_backends = [b for b, d in candidates if d.type == "cpu"]
        measured: Engine | None = None  # the measurement's winner, kept open
        # low_memory: OpenVINO first, unmeasured. Timing both would open both (at 512 px ONNX Runtime's UNet peaks at
        # 7.3 GB own memory, OpenVINO's at 4.1: docs/real-size.md), and OpenVINO's peak is the lower one to keep.
        measure = not low_memory and len(cpu_backends) > 1
        if chose and device.type == "cpu" and measure:

            def open_on(b: str) -> Engine:
                return load_engine(name, manifest, b, precision_on(b)[0], torch.device("cpu"), verify, options)

            order, failed, measured = choice.order(name, precision, open_on, entry)
            candidates.sort(key=lambda c: order.index(c[0]) if c[0] in order else len(order))
            tried += [f"{b} on cpu: {why}" for b, why in failed.items()]

        def open_from(i: int) -> Engine:
            """The first of candidates[i:] that opens (`auto`), or candidates[i] (an explicit backend)."""
            nonlocal measured
            for k in range(i, len(candidates)):
                chosen, dev = candidates[k]
                try:
                    prec, why = precision_on(chosen)
                    if measured is not None and measured.backend == chosen and dev.type == "cpu":
                        engine, measured = measured, None
                    else:
                        engine = load_engine(name, manifest, chosen, prec, dev, verify, options)
                except (BackendUnavailableError, IncompatibleEngineError, EngineDirError) as exc:
                    if not chose:
                        raise
                    tried.append(f"{chosen} on {dev.type}: {exc}")
                    continue
                notes = [why] if why else []
                if tried:  # `auto` went further down its list than the first choice: say so, once, loudly
                    notes.append(f"{name}: {engine.backend} on {dev.type}, after {' | '.join(tried)}")
                    tried.clear()
                for note in notes:
                    if note not in fallbacks:  # (low_memory reopens per image: each note once)
                        fallbacks.append(note)
                        log.warning("%s", note)
                opened[name] = (chosen, dev)
                if chose and k + 1 < len(candidates):
                    return _UntilFirstRun(engine, lambda exc, k=k: failed_first_run(k, exc))
                return engine
            raise BackendUnavailableError(f"{name}: no backend could run it here: {'; '.join(tried)}")

        def failed_first_run(k: int, exc: Exception) -> Engine:
            """The engine `auto` chose failed at its first call (OpenVINO compiles then): the next candidate, and
            this backend is not tried for `name` again in this Synthesizer (low_memory reopens per image)."""
            chosen, dev = candidates[k]
            unusable[name][(chosen, dev)] = f"failed at its first call: {exc}"
            tried.append(f"{chosen} on {dev.type}: failed at its first call: {exc}")
            return open_from(k + 1)

        return open_from(0)

    def open_fp32_variant(name: str) -> Engine:
        """The fp32 variant of an fp16 VAE, on its backend: loaded the first time an fp16 output is not finite."""
        engines[name]  # noqa: B018 - opens the fp16 engine, whose backend the variant follows
        chosen, dev = opened[name]
        entry = manifest.components[name]
        same = chosen if chosen != "tensorrt" or _artifact(entry, "tensorrt", "fp32") else "onnxruntime"
        return load_engine(name, manifest, same, "fp32", dev, verify, options)

    loaders = {}
    for name, entry in manifest.components.items():
        if overrides.get(name, backend) != "auto":
            check_backend(name, overrides.get(name, backend), device, openvino_device)
        loaders[name] = functools.partial(open_component, name)
        fp16 = precisions.get(name, entry["precision"]) == "fp16" and overrides.get(name) != "torch"
        if fp16 and name in GUARDED and _artifact(entry, "onnx", "fp32"):  # the NaN/Inf fallback
            loaders[f"{name}_fp32"] = functools.partial(open_fp32_variant, name)
    engines = Components(loaders)
    missing = [n for n in COMPONENT_NAMES if n not in engines]
    if missing:
        raise EngineDirError(f"engine dir '{engine_dir}' lacks {missing}; build them with export.build --components")

    def verified_dir(prefix: str) -> Path:
        for rel in manifest.data["files"]:
            if rel.startswith(prefix + "/"):
                manifest.path(rel, verify)
        return manifest.root / prefix

    manifest.path("acsdk.json", verify)
    config = ModelConfig.load(manifest.root)
    blip2_config = Blip2Config.from_dict(json.loads(manifest.path("torch/blip2_config.json", verify).read_text()))

    def load_qformer() -> QFormer:
        qformer = QFormer.from_config(blip2_config)
        qformer.load_state_dict(load_file(str(manifest.path("torch/qformer.safetensors", verify))))
        return qformer.to(device).eval().requires_grad_(False)

    uncond = load_file(str(manifest.path("torch/constants.safetensors", verify)))["unconditional_semantic_tokens"]
    sched = json.loads(manifest.path("scheduler/scheduler_config.json", verify).read_text())
    model = manifest.data["model"]
    parts = ModelParts(
        config=config,
        engines=engines,
        qformer=Lazy("asea_qformer", load_qformer, engines.lock),
        tokenizer=CLIPTokenizer.from_pretrained(verified_dir("tokenizer")),
        qformer_tokenizer=BertTokenizer.from_pretrained(verified_dir("qformer_tokenizer")),
        scheduler_config=sched,
        geometry=LatentGeometry(model["vae_scale_factor"], model["vae_scaling_factor"], model["latent_channels"]),
        vision_image_size=model["vision_image_size"],
        attention_grid=tuple(model["attention_grid"]),
        unconditional_tokens=uncond,
        fallbacks=fallbacks,
        backend_choice=choice.records,  # live: filled as components open
        memory=memory,
    )
    return parts, manifest
