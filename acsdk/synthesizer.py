"""`Synthesizer`: paint a defect into a normal image, inside a mask, guided by a defect reference."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from numbers import Integral, Real

import torch
from PIL import Image

from runtime import Engine, TorchEngine

from . import imaging
from .errors import InputError
from .features import SemanticFeatures
from .models.asea import run_asea
from .models.checkpoint import AnomalyControlModel
from .models.components import CSMQFormer, CSMVision, SGAUNet, TextEncoder, VAEDecoder, VAEEncoder
from .models.config import ModelConfig
from .models.csm import QFormer
from .pipeline import InpaintSampler, LatentGeometry

log = logging.getLogger(__name__)


@dataclass
class SynthesisResult:
    image: Image.Image  # RGB, the input's size
    mask: Image.Image  # "L", 0/255, the unblurred label mask at the input's size
    timings: dict[str, float] = field(default_factory=dict)
    asea: dict = field(default_factory=dict)
    seed: int = 0


@dataclass
class ModelParts:
    """What a Synthesizer needs, whether it came from a checkpoint (torch) or an engine dir."""

    config: ModelConfig
    engines: dict[str, Engine]
    qformer: QFormer  # torch, for ASEA's gradient
    tokenizer: object
    qformer_tokenizer: object
    scheduler_config: dict
    geometry: LatentGeometry
    vision_image_size: int
    attention_grid: tuple[int, int]
    unconditional_tokens: torch.Tensor  # [1, T, D]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise InputError(name, f"an integer >= {minimum}", repr(value))
    return int(value)


def _check_real(name: str, value: object, lo: float, hi: float, lo_open: bool = False) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise InputError(name, f"a finite number in {interval}", repr(value))
    return float(value)


class Synthesizer:
    """Runs AnomalyControl. Build it with `Synthesizer.from_checkpoint` (torch reference)."""

    def __init__(self, parts: ModelParts, device: torch.device):
        self.parts = parts
        self.device = device
        self.sampler = InpaintSampler(parts.engines, parts.scheduler_config, parts.geometry, device)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Synthesizer:
        """The torch reference: every component eager, straight from the training artifacts."""
        device = torch.device(device)
        model = AnomalyControlModel.from_pretrained(path, device=device)
        return cls(parts_from_model(model), device)

    # -- reference encoding ------------------------------------------------------------------
    def encode_reference(
        self,
        reference_image: imaging.ImageLike,
        reference_mask: imaging.ImageLike,
        reference_prompt: str,
        asea_steps: int = 5,
        *,
        asea_lr: float = 0.1,
        asea_alpha: float = 1.0,
    ) -> SemanticFeatures:
        """CSM + ASEA on a defect reference: the semantic tokens F_c, reusable across runs."""
        timings: dict[str, float] = {}
        return self._encode_reference(
            reference_image, reference_mask, reference_prompt, asea_steps, asea_lr, asea_alpha, timings
        )

    def _encode_reference(
        self, reference_image, reference_mask, reference_prompt, asea_steps, asea_lr, asea_alpha, timings
    ) -> SemanticFeatures:
        p = self.parts
        asea_steps = _check_int("asea_steps", asea_steps, 0)
        _check_real("asea_lr", asea_lr, 0.0, 1e3, lo_open=True)
        _check_real("asea_alpha", asea_alpha, 0.0, 1e6)
        if not isinstance(reference_prompt, str):
            raise InputError("reference_prompt", "a string", type(reference_prompt).__name__)
        ref = imaging.load_image(reference_image, "reference_image")
        ref_mask = imaging.load_mask(reference_mask, "reference_mask")
        imaging.check_pair(ref, ref_mask, "reference_image", "reference_mask")

        t0 = time.perf_counter()
        size = p.vision_image_size
        pixels = imaging.resize_image(ref, size, size)
        mean = torch.tensor(p.config.image_mean).view(3, 1, 1)
        std = torch.tensor(p.config.image_std).view(3, 1, 1)
        pixels = ((pixels - mean) / std)[None].to(self.device)
        e_v = p.engines["csm_vision"].run({"pixel_values": pixels})["image_tokens"].float()
        timings["csm_vision"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        tok = p.qformer_tokenizer(
            reference_prompt,
            padding="max_length",
            truncation=True,
            max_length=p.config.qformer_max_length,
            return_tensors="pt",
        )
        ids, attn = tok.input_ids.to(self.device), tok.attention_mask.to(self.device)
        region = imaging.mask_coverage(ref_mask, *p.attention_grid)
        result = run_asea(p.qformer, e_v, ids, attn, region, steps=asea_steps, lr=asea_lr, alpha=asea_alpha)
        timings["asea"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        tokens = p.engines["csm_qformer"].run(
            {"image_tokens": result.image_tokens, "input_ids": ids, "attention_mask": attn}
        )["semantic_tokens"]
        timings["csm_qformer"] = time.perf_counter() - t0
        log.info("ASEA: r %.4f -> %.4f in %d steps", result.r_before, result.r_after, asea_steps)
        return SemanticFeatures(tokens=tokens.float().cpu(), asea=result.as_dict(), prompt=reference_prompt)

    # -- synthesis -----------------------------------------------------------------------------
    def run(
        self,
        image: imaging.ImageLike,
        mask: imaging.ImageLike,
        prompt: str,
        reference_image: imaging.ImageLike | None = None,
        reference_mask: imaging.ImageLike | None = None,
        *,
        reference_prompt: str | None = None,
        reference: SemanticFeatures | None = None,
        seed: int = 0,
        num_inference_steps: int = 50,
        strength: float = 0.7,
        guidance_scale: float = 7.0,
        asea_steps: int = 5,
        semantic_scale: float = 1.0,
        negative_prompt: str | None = None,
        blur_sigma: float | None = None,
        progress: bool = False,
    ) -> SynthesisResult:
        """Synthesize one defect. Without any reference the semantic branch gets the unconditional tokens."""
        p = self.parts
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        seed = _check_int("seed", seed, 0)
        steps = _check_int("num_inference_steps", num_inference_steps, 1)
        strength = _check_real("strength", strength, 0.0, 1.0, lo_open=True)
        guidance_scale = _check_real("guidance_scale", guidance_scale, 0.0, 1e3)
        semantic_scale = _check_real("semantic_scale", semantic_scale, -1e3, 1e3)
        if blur_sigma is not None:
            blur_sigma = _check_real("blur_sigma", blur_sigma, 0.0, 1e4)
        if not isinstance(prompt, str):
            raise InputError("prompt", "a string", type(prompt).__name__)
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise InputError("negative_prompt", "a string or None", type(negative_prompt).__name__)
        if reference is not None and not isinstance(reference, SemanticFeatures):
            raise InputError("reference", "SemanticFeatures from encode_reference()", type(reference).__name__)
        if reference is not None and (reference_image is not None or reference_mask is not None):
            raise InputError("reference", "either reference= or reference_image/reference_mask", "both")
        if reference_image is not None and reference_mask is None:
            raise InputError("reference_mask", "the defect mask of reference_image", "None")
        if reference_mask is not None and reference_image is None:
            raise InputError("reference_image", "an image for reference_mask", "None")

        t0 = time.perf_counter()
        src = imaging.load_image(image, "image")
        label = imaging.load_mask(mask, "mask")
        imaging.check_pair(src, label, "image", "mask")
        h, w = p.config.height, p.config.width
        model_image = imaging.resize_image(src, h, w)[None]
        model_mask = imaging.resize_mask(label, h, w)[None, None]
        timings["preprocess"] = time.perf_counter() - t0

        asea: dict = {}
        if reference is None and reference_image is not None:
            reference = self._encode_reference(
                reference_image,
                reference_mask,
                prompt if reference_prompt is None else reference_prompt,
                asea_steps,
                0.1,
                1.0,
                timings,
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
        cfg = guidance_scale > 1.0
        prompts = (
            [p.config.negative_prompt if negative_prompt is None else negative_prompt, prompt] if cfg else [prompt]
        )
        ids = p.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=p.tokenizer.model_max_length, return_tensors="pt"
        ).input_ids
        text = p.engines["text_encoder"].run({"input_ids": ids.to(self.device)})["text_embeds"]
        semantic = torch.cat([p.unconditional_tokens.to(sem), sem]) if cfg else sem
        timings["text_encode"] = time.perf_counter() - t0

        generated = self.sampler(
            model_image,
            model_mask,
            text,
            semantic,
            seed=seed,
            num_inference_steps=steps,
            strength=strength,
            guidance_scale=guidance_scale,
            semantic_scale=semantic_scale,
            timings=timings,
            progress=progress,
        )

        t0 = time.perf_counter()
        in_h, in_w = src.shape[1:]
        gen_full = imaging.resize_image(generated[0], in_h, in_w)
        sigma = imaging.default_blur_sigma(in_h, in_w) if blur_sigma is None else blur_sigma
        blend = imaging.gaussian_blur_mask(label, sigma)
        out = imaging.soft_paste(src, gen_full, blend)
        timings["postprocess"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        label_img = Image.fromarray((label.numpy() * 255).astype("uint8"), mode="L")
        return SynthesisResult(
            image=Image.fromarray(out, mode="RGB"), mask=label_img, timings=timings, asea=asea, seed=seed
        )


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
        engines=engines,
        qformer=model.qformer,
        tokenizer=model.tokenizer,
        qformer_tokenizer=model.qformer_tokenizer,
        scheduler_config=model.scheduler_config,
        geometry=geometry,
        vision_image_size=model.vision_image_size,
        attention_grid=model.attention_grid,
        unconditional_tokens=uncond,
    )
