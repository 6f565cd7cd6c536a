"""`Synthesizer`: paint a defect into a normal image, inside a mask, guided by a defect reference."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from runtime.files import sha256_file
from runtime.manifest import manifest_sha256
from runtime.tensorrt_engine import tensorrt_status

from ..errors import InputError, check_int, check_real
from ..models.asea import run_asea
from ..models.checkpoint import AnomalyControlModel
from . import imaging
from .bank import Bank
from .features import SemanticFeatures
from .loading import REFERENCE_SIDE, TARGET_SIDE, free_released
from .lru import LRUCache
from .parts import ModelParts, parts_from_engine_dir, parts_from_model
from .sampler import InpaintSampler
from .schedules import SAMPLERS
from .settings import SamplingSettings, check_seed
from .windows import Window, crop, feather_sigma, plan_windows

log = logging.getLogger(__name__)

ASEA_QFORMER = "asea_qformer"  # the torch Q-Former ASEA differentiates through (reference side)


@dataclass
class SynthesisResult:
    image: Image.Image | None  # the input's size and mode (RGB, L, RGBA, I;16, I, F); None where PIL has no mode
    mask: Image.Image  # "L", 0/255: the label, exactly where the defect was painted at full strength
    pixels: np.ndarray | None = None  # the result in the input's dtype and layout (HxWxC), always present
    windows: list[dict] = field(default_factory=list)  # where it was generated (image pixels; see windows.py)
    timings: dict[str, float] = field(default_factory=dict)
    asea: dict = field(default_factory=dict)
    seed: int = 0
    cache_hits: dict[str, bool] = field(default_factory=dict)  # text embeddings / reference features reused
    notes: list[str] = field(default_factory=list)  # e.g. "vae_decoder_fp32_fallback"


class Synthesizer:
    """Runs AnomalyControl.

    `Synthesizer(engine_dir)` runs the compiled engines that `python -m export.build` wrote (ASEA stays in
    torch); `Synthesizer.from_checkpoint(ckpt)` runs the torch reference. Both give the same `run()` and
    `encode_reference()`. An engine dir's components open when first used (`load()` opens them now) and
    `release()` closes them; a run from a `Bank` never opens the reference side, and `low_memory=True` holds one
    component at a time (each is released when the stage that runs it ends and reopened, from OpenVINO's model
    cache, when next needed), keeps one compiled input shape per OpenVINO engine, and opens ONNX Runtime's CPU
    sessions without their allocation arena (docs/real-size.md: the measured trade). `low_memory=None` (the default)
    chooses it where this host has too little memory free for every component at once (logged; `info()["memory"]`
    says why); `False` holds them anyway.

    One instance may be called from several threads: engines and weights are shared and read-only, per-call state
    (scheduler, generator, buffers) is made per call, and the caches and loads lock. (With low_memory, threads
    working on different sides make each other reload.)
    """

    def __init__(
        self,
        engine_dir: str | os.PathLike,
        backend: str = "auto",
        device: str | torch.device | None = None,
        verify: bool = True,
        *,
        component_backends: Mapping[str, str] | None = None,
        checkpoint: str | os.PathLike | None = None,
        cache_size: int = 64,
        openvino_device: str = "CPU",
        precision_overrides: Mapping[str, str] | None = None,
        allow_unverified_plans: bool = False,
        low_memory: bool | None = None,
    ):
        dev = torch.device(device) if device is not None else _default_device()
        parts, manifest = parts_from_engine_dir(
            engine_dir,
            backend,
            dev,
            verify,
            component_backends,
            checkpoint,
            openvino_device,
            precision_overrides,
            allow_unverified_plans,
            low_memory,
        )
        self._setup(parts, dev, cache_size, manifest.data, parts.memory.low_memory)
        self.engine_dir = manifest.root
        self.manifest_digest: str | None = manifest_sha256(manifest.root)  # what a bank is prepared for

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", cache_size: int = 64
    ) -> Synthesizer:
        """The torch reference: every component eager, straight from the training artifacts."""
        dev = torch.device(device)
        model = AnomalyControlModel.from_pretrained(path, device=dev)
        obj = cls.__new__(cls)
        obj._setup(parts_from_model(model), dev, cache_size, None, False)
        obj.engine_dir = None
        obj.manifest_digest = None
        return obj

    def _setup(
        self, parts: ModelParts, device: torch.device, cache_size: int, manifest: dict | None, low_memory: bool
    ) -> None:
        self.parts = parts
        self.device = device
        self.manifest = manifest
        self.low_memory = bool(low_memory)
        self.sampler = InpaintSampler(parts.engines, parts.scheduler_config, parts.geometry, device, done=self._done)
        self._text_cache: LRUCache[torch.Tensor] = LRUCache(cache_size)
        self._reference_cache: LRUCache[SemanticFeatures] = LRUCache(cache_size)
        # Fast tokenizers keep padding state in Rust and are not safe to share across threads.
        self._tokenizer_lock = threading.Lock()

    def clear_caches(self) -> None:
        """Forget cached text embeddings and reference features (e.g. to time a cold reference)."""
        self._text_cache = LRUCache(self._text_cache.capacity)
        self._reference_cache = LRUCache(self._reference_cache.capacity)

    # -- what is loaded -----------------------------------------------------------------------
    def load(self, *names: str) -> Synthesizer:
        """Open components now rather than at first use (all by default, fp32 variants of fp16 VAEs included; or
        names, "reference", "target"): for an application that wants every backend and file error at start-up,
        or no load time in its first image. Returns self. With low_memory, loading one side releases the other, and
        each component is released again when the stage that runs it ends."""
        wanted = self._names(names, "load")
        sides = {side for side, members in self._sides().items() for n in wanted if n in members}
        if len(sides) == 1:
            self._enter(sides.pop())
        for name in wanted:
            if name == ASEA_QFORMER:
                self.parts.qformer.get()
            else:
                self.parts.engines[name]  # noqa: B018 - indexing opens it
        return self

    def release(self, *names: str) -> list[str]:
        """Close components (all by default; or names, "reference", "target") and free their memory; the next use
        opens them again and gives the same results. Returns the names released (those loaded and releasable:
        a checkpoint's torch modules stay)."""
        names = self._names(names, "release")
        done = self.parts.engines.release([n for n in names if n != ASEA_QFORMER])
        if ASEA_QFORMER in names and self.parts.qformer.release():
            done.append(ASEA_QFORMER)
        if done:
            free_released()
            log.info("released %s", ", ".join(done))
        return done

    def _sides(self) -> dict[str, list[str]]:
        return {
            "reference": [*REFERENCE_SIDE, ASEA_QFORMER],
            "target": [n for n in self.parts.engines if n.split("_fp32")[0] in TARGET_SIDE],
        }

    def _names(self, names: tuple[str, ...], argument: str) -> list[str]:
        sides = self._sides()
        known = [*self.parts.engines, ASEA_QFORMER]
        out: list[str] = []
        for name in names or tuple(known):
            if name not in known and name not in sides:
                raise InputError(argument, f"component names from {known}, 'reference' or 'target'", repr(name))
            out += [n for n in sides.get(name, [name]) if n not in out]
        return out

    def _enter(self, side: str) -> None:
        """With low_memory, one side is resident at a time: entering one releases the other's components."""
        if self.low_memory:
            self.release("target" if side == "reference" else "reference")

    def _done(self, name: str) -> None:
        """With low_memory, a component is released as soon as the stage that runs it ends (an fp16 VAE with its
        fp32 variant): one engine's weights and buffers are resident at a time."""
        names = [n for n in (name, f"{name}_fp32") if n in self.parts.engines or n == ASEA_QFORMER]
        if self.low_memory and names:  # (release() without names would release everything)
            self.release(*names)

    def info(self) -> dict:
        """What actually runs: backend, providers and precision per loaded component (`loaded` False for one not
        opened yet or released), and the engine dir's summary."""
        comps = {}
        for name in self.parts.engines:
            if not self.parts.engines.loaded(name):
                comps[name] = {"loaded": False}
                continue
            engine = self.parts.engines[name]
            precision = getattr(engine, "precision", "fp32")
            comps[name] = {
                "loaded": True,
                "backend": engine.backend,
                "providers": list(getattr(engine, "providers", []) or []) or None,
                "precision": precision,
            }
            if hasattr(engine, "describe"):  # what the backend actually chose (OpenVINO: device, precision)
                comps[name]["actual"] = engine.describe()
        comps[ASEA_QFORMER] = {"loaded": self.parts.qformer.loaded, "backend": "torch", "precision": "fp32"}
        summary = None
        if self.manifest is not None:
            m = self.manifest
            summary = {k: m.get(k) for k in ("acsdk_version", "created", "settings", "tools", "gpu", "tensorrt")}
            summary["source_checkpoint_sha256"] = m["source_checkpoint"]["sha256"]
        return {
            "device": str(self.device),
            "components": comps,
            "resolution": [self.parts.config.height, self.parts.config.width],
            "manifest": summary,
            "cache": {"text": len(self._text_cache), "references": len(self._reference_cache)},
            "fallbacks": list(self.parts.fallbacks),
            "backend_choice": {k: dict(v) for k, v in self.parts.backend_choice.items()},
            "tensorrt": tensorrt_status(),  # which major is here, and whether this acsdk builds and runs it
            "samplers": list(SAMPLERS),
            "low_memory": self.low_memory,
            "memory": self.parts.memory.as_dict(),  # who chose the mode, and why (low_memory=None: this host's room)
        }

    # -- reference encoding ------------------------------------------------------------------
    def encode_reference(
        self,
        reference_image: imaging.ImageLike,
        reference_mask: imaging.ImageLike,
        reference_prompt: str,
        asea_steps: int = SamplingSettings.asea_steps,
        *,
        asea_lr: float = 0.1,
        asea_alpha: float = 1.0,
    ) -> SemanticFeatures:
        """CSM + ASEA on a defect reference: the semantic tokens F_c, reusable across runs (and cached)."""
        return self._reference(reference_image, reference_mask, reference_prompt, asea_steps, asea_lr, asea_alpha, {})[
            0
        ]

    def _reference(
        self,
        reference_image,
        reference_mask,
        reference_prompt,
        asea_steps,
        asea_lr,
        asea_alpha,
        timings: dict[str, float],
    ) -> tuple[SemanticFeatures, bool]:
        """Features for a reference, from the cache when the same pixels, mask, prompt and settings came before."""
        asea_steps = check_int("asea_steps", asea_steps, 0)
        asea_lr = check_real("asea_lr", asea_lr, 0.0, 1e3, lo_open=True)
        asea_alpha = check_real("asea_alpha", asea_alpha, 0.0, 1e6)
        if not isinstance(reference_prompt, str):
            raise InputError("reference_prompt", "a string", type(reference_prompt).__name__)
        ref = imaging.load_image(reference_image, "reference_image")
        ref_mask = imaging.load_mask(reference_mask, "reference_mask")
        imaging.check_pair(tuple(ref.shape[1:]), ref_mask, "reference_image", "reference_mask")
        h = hashlib.sha256()
        for t in (ref, ref_mask):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        key = (h.hexdigest(), reference_prompt, asea_steps, asea_lr, asea_alpha)
        return self._reference_cache.get_or_compute(
            key,
            lambda: self._encode_reference(ref, ref_mask, reference_prompt, asea_steps, asea_lr, asea_alpha, timings),
        )

    def _encode_reference(
        self,
        ref: torch.Tensor,
        ref_mask: torch.Tensor,
        reference_prompt: str,
        asea_steps: int,
        asea_lr: float,
        asea_alpha: float,
        timings: dict[str, float],
    ) -> SemanticFeatures:
        p = self.parts
        self._enter("reference")
        t0 = time.perf_counter()
        c = p.config
        pixels, region = imaging.reference_inputs(
            ref, ref_mask, c.reference_window, p.vision_image_size, c.image_mean, c.image_std, p.attention_grid
        )
        pixels = pixels.to(self.device)
        e_v = p.engines["csm_vision"].run({"pixel_values": pixels})["image_tokens"].float()
        self._done("csm_vision")
        timings["csm_vision"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with self._tokenizer_lock:
            tok = p.qformer_tokenizer(
                reference_prompt,
                padding="max_length",
                truncation=True,
                max_length=p.config.qformer_max_length,
                return_tensors="pt",
            )
        ids, attn = tok.input_ids.to(self.device), tok.attention_mask.to(self.device)
        result = run_asea(p.qformer.get(), e_v, ids, attn, region, steps=asea_steps, lr=asea_lr, alpha=asea_alpha)
        self._done(ASEA_QFORMER)
        timings["asea"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        tokens = p.engines["csm_qformer"].run(
            {"image_tokens": result.image_tokens, "input_ids": ids, "attention_mask": attn}
        )["semantic_tokens"]
        self._done("csm_qformer")
        timings["csm_qformer"] = time.perf_counter() - t0
        log.info("ASEA: r %.4f -> %.4f in %d steps", result.r_before, result.r_after, asea_steps)
        return SemanticFeatures(tokens=tokens.float().cpu(), asea=result.as_dict(), prompt=reference_prompt)

    def prepare(
        self,
        prompt: str,
        reference_image: imaging.ImageLike | None = None,
        reference_mask: imaging.ImageLike | None = None,
        *,
        reference_prompt: str | None = None,
        negative_prompt: str | None = None,
        asea_steps: int = SamplingSettings.asea_steps,
    ) -> Bank:
        """The reference side of one defect type, once: CFG's text embeddings and semantic tokens as a `Bank`,
        for runtimes that run only the target side (the native runtime). `run` with the same prompts and
        reference feeds the UNet exactly these tensors."""
        if not isinstance(prompt, str):
            raise InputError("prompt", "a string", type(prompt).__name__)
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise InputError("negative_prompt", "a string or None", type(negative_prompt).__name__)
        if (reference_image is None) != (reference_mask is None):
            missing = "reference_mask" if reference_mask is None else "reference_image"
            raise InputError(missing, "reference_image and reference_mask together, or neither", "only the other")
        p = self.parts
        negative = p.config.negative_prompt if negative_prompt is None else negative_prompt
        text = self._encode_text([negative, prompt]).float().cpu()
        uncond = p.unconditional_tokens.float().cpu()
        info: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative, "reference": None, "asea": {}}
        sem = uncond
        if reference_image is not None:
            ref_prompt = prompt if reference_prompt is None else reference_prompt
            features = self.encode_reference(reference_image, reference_mask, ref_prompt, asea_steps)
            sem = features.tokens.float().cpu()
            info["reference"] = {
                "image": _describe(reference_image),
                "mask": _describe(reference_mask),
                "prompt": ref_prompt,
                "asea_steps": asea_steps,
            }
            info["asea"] = features.asea
        info["engine_manifest_sha256"] = self.manifest_digest
        return Bank(text, torch.cat([uncond, sem]), info)

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        p = self.parts
        self._enter("reference")
        with self._tokenizer_lock:
            ids = p.tokenizer(
                prompts,
                padding="max_length",
                truncation=True,
                max_length=p.tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids
        text = p.engines["text_encoder"].run({"input_ids": ids.to(self.device)})["text_embeds"]
        self._done("text_encoder")
        return text

    # -- synthesis -----------------------------------------------------------------------------
    def run(
        self,
        image: imaging.ImageLike,
        mask: imaging.ImageLike,
        prompt: str | None = None,
        reference_image: imaging.ImageLike | None = None,
        reference_mask: imaging.ImageLike | None = None,
        *,
        reference_prompt: str | None = None,
        reference: SemanticFeatures | None = None,
        bank: Bank | str | os.PathLike | None = None,
        seed: int = 0,
        negative_prompt: str | None = None,
        bit_depth: int | None = None,
        **settings,
    ) -> SynthesisResult:
        """Synthesize a defect inside `mask` on `image` (any size). Without a reference the semantic branch gets
        the unconditional tokens. Instead of prompts and a reference, `bank` (a `Bank` from `prepare`, or its
        directory) gives the UNet the tensors they would make, and the reference side is never loaded.
        `settings` are `run_batch`'s (`sampling` or its fields as keywords, windows); this is `run_batch` of one
        target.

        `bit_depth` declares the depth of integer images (12-bit data in 16-bit files); results keep the input's
        mode and depth.
        """
        job = {
            "image": image,
            "mask": mask,
            "prompt": prompt,
            "reference_image": reference_image,
            "reference_mask": reference_mask,
            "reference_prompt": reference_prompt,
            "reference": reference,
            "bank": bank,
            "seed": seed,
            "negative_prompt": negative_prompt,
            "bit_depth": bit_depth,
        }
        return self.run_batch([job], **settings)[0]

    def run_batch(
        self,
        jobs: Sequence[Mapping[str, Any]],
        sampling: SamplingSettings | None = None,
        *,
        roi: str = "auto",
        roi_padding: int = 32,
        roi_min_size: int | None = None,
        blur_sigma: float | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        **overrides: Any,
    ) -> list[SynthesisResult]:
        """Synthesize several targets, their windows going through the UNet `batch_size` at a time (2 rows each
        with CFG; default: the engine dir's `--max-batch`). Each job is a dict of `run`'s per-target arguments
        (image, mask, prompt, reference_image / reference_mask or reference, reference_prompt, seed,
        negative_prompt, bit_depth); images of any sizes mix. A job's result equals its `run` within one grey
        level (batched arithmetic may round differently), since each window draws from its own generator.

        `sampling` (default: the paper's settings) says how: steps, strength, guidance, lambda, ASEA steps; keyword
        `overrides` replace its fields (`num_inference_steps=20`), anything else is refused by name.

        roi="auto" generates in context windows around the mask (`acsdk.inference.windows`): `roi_padding` image
        pixels around each mask, at least `roi_min_size` (default: half the model's size) on a side, masks whose
        windows overlap sharing one. roi="full" squashes the whole image to the model's size (the paper's setting
        on MVTec-sized images). Either way the result is pasted with a blend that is 1 on the label and feathered
        outward (`blur_sigma` image pixels, default 5 model pixels of the window), so the label is exactly where
        the defect was painted at full strength.
        """
        p = self.parts
        sampling = SamplingSettings.of(sampling, **overrides)
        sampling.check_schedule(p.scheduler_config)  # (a step count the schedule cannot take: before any model runs)
        if roi not in ROI_MODES:
            raise InputError("roi", f"one of {', '.join(ROI_MODES)}", repr(roi))
        roi_padding = check_int("roi_padding", roi_padding, 0)
        model_size = (p.config.height, p.config.width)
        min_size = max(model_size) // 2 if roi_min_size is None else check_int("roi_min_size", roi_min_size, 1)
        if blur_sigma is not None:
            blur_sigma = check_real("blur_sigma", blur_sigma, 0.0, 1e4)
        batch = self.max_batch if batch_size is None else check_int("batch_size", batch_size, 1)
        if batch > self.max_batch:
            raise InputError(
                "batch_size",
                f"at most {self.max_batch}, the engine dir's batch profile (rebuild it with export.build --max-batch "
                f"{batch})",
                str(batch),
            )
        if isinstance(jobs, (str, bytes)) or not isinstance(jobs, Sequence) or not jobs:
            raise InputError("jobs", "a non-empty list of dicts of run()'s per-target arguments", repr(jobs)[:80])
        for job in jobs:  # every seed before the first job's prompt or reference opens a model
            if isinstance(job, Mapping):
                check_seed("seed", job.get("seed", 0))
        prepared = [
            self._prepare(job, i, sampling.asea_steps, roi, roi_padding, min_size, sampling.cfg)
            for i, job in enumerate(jobs)
        ]
        tasks = [(j, k, window) for j, job in enumerate(prepared) for k, window in enumerate(job.windows)]
        shared: dict[str, float] = {}
        for start in range(0, len(tasks), batch):
            chunk = tasks[start : start + batch]
            t0 = time.perf_counter()
            crops = [(prepared[j], window) for j, _, window in chunk]
            images = torch.stack([imaging.resize_image(job.picture.rgb(w), *model_size) for job, w in crops])
            labels = [crop(job.label[None], w, fill="zeros")[0] for job, w in crops]
            masks = torch.stack([imaging.resize_mask(lab, *model_size)[None] for lab in labels])
            text = _rows([prepared[j].text for j, _, _ in chunk])
            semantic = _rows([prepared[j].semantic for j, _, _ in chunk])
            shared["preprocess"] = shared.get("preprocess", 0.0) + time.perf_counter() - t0
            notes: list[str] = []
            self._enter("target")
            generated = self.sampler(
                images,
                masks,
                text,
                semantic,
                seeds=[window_seed(prepared[j].seed, k) for j, k, _ in chunk],
                sampling=sampling,
                timings=shared,
                notes=notes,
                progress=progress,
            )
            t0 = time.perf_counter()
            for (j, _, window), label, out in zip(chunk, labels, generated, strict=True):
                sigma = feather_sigma(window, model_size) if blur_sigma is None else blur_sigma
                patch = imaging.resize_image(out, window.height, window.width)
                prepared[j].patches.append((window, patch, imaging.blend_mask(label, sigma)))
                prepared[j].notes += [n for n in notes if n not in prepared[j].notes]
            shared["postprocess"] = shared.get("postprocess", 0.0) + time.perf_counter() - t0
        return [self._finish(job, shared, len(tasks), batch) for job in prepared]

    @property
    def max_batch(self) -> int:
        """Images per UNet call the engines' profiles allow (`export.build --max-batch`); torch has no limit."""
        if self.manifest is None:
            return 64
        return int(self.manifest.get("settings", {}).get("max_batch", 1))

    def _prepare(
        self, job: Mapping[str, Any], index: int, asea_steps: int, roi: str, padding: int, min_size: int, cfg: bool
    ) -> _Job:
        """Validate one target, read it, plan its windows, and encode its prompt and reference."""
        p = self.parts
        if not isinstance(job, Mapping):
            raise InputError("jobs", "dicts of run()'s per-target arguments", f"item {index}: {type(job).__name__}")
        unknown = sorted(set(job) - set(JOB_KEYS))
        given = {k for k, v in job.items() if v is not None}
        if unknown or "image" not in job or "mask" not in job or not {"prompt", "bank"} & set(job):
            got = f"item {index} with keys {sorted(job)}"
            raise InputError("jobs", f"dicts with image, mask, prompt or bank and optionally {JOB_KEYS[4:]}", got)
        if not given & {"prompt", "bank"}:
            raise InputError("prompt", "a string (or bank=, a Bank from prepare())", "None")
        if "bank" in given and given & {"prompt", "negative_prompt", "reference", "reference_image", "reference_mask"}:
            raise InputError(
                "bank",
                "a bank instead of prompts and references (it holds what they make)",
                f"a bank and {sorted(given & {'prompt', 'negative_prompt', 'reference', 'reference_image'})}",
            )
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        cache_hits = {"text": False, "reference": False}
        seed = check_seed("seed", job.get("seed", 0))
        bank = self._bank(job["bank"]) if job.get("bank") is not None else None
        prompt, negative = job.get("prompt"), job.get("negative_prompt")
        reference, ref_image, ref_mask = job.get("reference"), job.get("reference_image"), job.get("reference_mask")
        if bank is None and not isinstance(prompt, str):
            raise InputError("prompt", "a string", type(prompt).__name__)
        if negative is not None and not isinstance(negative, str):
            raise InputError("negative_prompt", "a string or None", type(negative).__name__)
        if reference is not None and not isinstance(reference, SemanticFeatures):
            raise InputError("reference", "SemanticFeatures from encode_reference()", type(reference).__name__)
        if reference is not None and (ref_image is not None or ref_mask is not None):
            raise InputError("reference", "either reference= or reference_image/reference_mask", "both")
        if ref_image is not None and ref_mask is None:
            raise InputError("reference_mask", "the defect mask of reference_image", "None")
        if ref_mask is not None and ref_image is None:
            raise InputError("reference_image", "an image for reference_mask", "None")

        t0 = time.perf_counter()
        picture = imaging.load_picture(job["image"], "image", job.get("bit_depth"))
        label = imaging.load_mask(job["mask"], "mask")
        imaging.check_pair((picture.height, picture.width), label, "image", "mask")
        notes: list[str] = []
        model_size = (p.config.height, p.config.width)
        if roi == "full":
            windows = [Window(0, 0, picture.height, picture.width)]
        else:
            windows, notes = plan_windows(label.numpy() > 0.5, model_size, padding, min_size)
        timings["preprocess"] = time.perf_counter() - t0
        if bank is not None:  # what prompts and reference made once, in `prepare`: no reference side here
            text, semantic = (
                (bank.text_embeds, bank.semantic_tokens) if cfg else (bank.text_embeds[1:], bank.semantic_tokens[1:])
            )
            asea = dict(bank.info.get("asea") or {})
            return _Job(picture, label, windows, text, semantic, seed, asea, cache_hits, notes, timings, t_start)

        asea: dict = {}
        if reference is None and ref_image is not None:
            ref_prompt = job.get("reference_prompt")
            ref_prompt = prompt if ref_prompt is None else ref_prompt
            reference, cache_hits["reference"] = self._reference(
                ref_image, ref_mask, ref_prompt, asea_steps, 0.1, 1.0, timings
            )
        if reference is not None:
            sem = reference.tokens
            expected = tuple(p.unconditional_tokens.shape[1:])
            if tuple(sem.shape[1:]) != expected or sem.shape[0] != 1:
                raise InputError(
                    "reference",
                    f"semantic tokens of shape [1, {expected[0]}, {expected[1]}]",
                    f"shape {list(sem.shape)} (features of another model?)",
                )
            asea = dict(reference.asea)
        else:
            sem = p.unconditional_tokens

        t0 = time.perf_counter()
        negative = p.config.negative_prompt if negative is None else negative
        prompts = [negative, prompt] if cfg else [prompt]
        text, cache_hits["text"] = self._text_cache.get_or_compute(tuple(prompts), lambda: self._encode_text(prompts))
        semantic = torch.cat([p.unconditional_tokens.to(sem), sem]) if cfg else sem
        timings["text_encode"] = time.perf_counter() - t0
        return _Job(picture, label, windows, text, semantic, seed, asea, cache_hits, notes, timings, t_start)

    def _bank(self, bank: Bank | str | os.PathLike) -> Bank:
        """A bank for this engine dir, its tensors the shapes this model's UNet takes."""
        if isinstance(bank, (str, os.PathLike)):
            bank = Bank.load(bank)
        if not isinstance(bank, Bank):
            raise InputError("bank", "a Bank from prepare() or its directory", type(bank).__name__)
        bank.check_engine(self.manifest_digest)
        tokens = tuple(self.parts.unconditional_tokens.shape[1:])
        if (
            tuple(bank.semantic_tokens.shape) != (2, *tokens)
            or bank.text_embeds.dim() != 3
            or len(bank.text_embeds) != 2
        ):
            raise InputError(
                "bank",
                f"text_embeds [2, L, D] and semantic_tokens [2, {tokens[0]}, {tokens[1]}]",
                f"{list(bank.text_embeds.shape)} and {list(bank.semantic_tokens.shape)}",
            )
        return bank

    def _finish(self, job: _Job, shared: dict[str, float], n_windows: int, batch: int) -> SynthesisResult:
        t0 = time.perf_counter()
        pixels = job.picture.compose(job.patches)
        image = job.picture.to_pil(pixels)
        if image is None:
            job.notes.append("image: PIL has no mode for this input's depth and channels; .pixels holds the result")
        timings = {**shared, **{k: v + shared.get(k, 0.0) for k, v in job.timings.items()}}
        timings["postprocess"] = timings.get("postprocess", 0.0) + time.perf_counter() - t0
        timings["total"] = time.perf_counter() - job.started
        if n_windows > 1:
            timings.update(windows_in_call=float(n_windows), batch_size=float(batch))
        return SynthesisResult(
            image=image,
            mask=Image.fromarray((job.label.numpy() * 255).astype("uint8"), mode="L"),
            pixels=pixels,
            windows=[w.as_dict() for w in job.windows],
            timings=timings,
            asea=job.asea,
            seed=job.seed,
            cache_hits=job.cache_hits,
            notes=job.notes,
        )


JOB_KEYS = (
    "image",
    "mask",
    "prompt",
    "bank",
    "reference_image",
    "reference_mask",
    "reference_prompt",
    "reference",
    "seed",
    "negative_prompt",
    "bit_depth",
)


@dataclass
class _Job:
    """One target between run_batch's phases: read and planned, then generated window by window, then composed."""

    picture: imaging.Picture
    label: torch.Tensor
    windows: list[Window]
    text: torch.Tensor  # [2, T, D] with CFG (negative, prompt), else [1, T, D]
    semantic: torch.Tensor  # likewise: unconditional tokens, then the reference's
    seed: int
    asea: dict
    cache_hits: dict
    notes: list[str]
    timings: dict[str, float]
    started: float
    patches: list = field(default_factory=list)


def _rows(per_job: list[torch.Tensor]) -> torch.Tensor:
    """Per-job [2, ...] (or [1, ...]) rows as the sampler's layout: every first row, then every second one."""
    return torch.cat([torch.cat([t[r : r + 1] for t in per_job]) for r in range(per_job[0].shape[0])])


ROI_MODES = ("auto", "full")


def window_seed(seed: int, index: int) -> int:
    """The first window uses the run's seed; each further one a seed derived from (seed, index)."""
    return seed if index == 0 else (seed * 1_000_003 + index) % 2**63


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _describe(source: imaging.ImageLike) -> dict:
    """Where a reference came from, for a bank's record: a file's path and sha256, or an in-memory array."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        return {"file": str(source), "sha256": sha256_file(Path(source))}
    return {"file": None, "sha256": None}
