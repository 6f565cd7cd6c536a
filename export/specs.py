"""One declarative spec per exported component: the single source of truth for its IO.

A spec names its torch module (the engine-shaped wrappers of `acsdk.models.components`), its inputs
and outputs with dtypes and symbolic shapes, how its batch relates to the number of images, its
precision policy and tolerances, and how to make sample inputs. From it come the ONNX export's
dynamic shapes, the TensorRT and ORT-TensorRT profiles, the build-time verification and the
manifest entry; nothing about a component's IO is written twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from acsdk.models.checkpoint import Checkpoint
from acsdk.models.components import CSMQFormer, CSMVision, SGAUNet, TextEncoder, VAEDecoder, VAEEncoder
from acsdk.models.config import Configs

BATCH = "batch"


@dataclass(frozen=True)
class Dims:
    """Every size a spec may name, read from the model's configs and the build settings."""

    height: int
    width: int
    latent_height: int
    latent_width: int
    latent_channels: int
    latent_moments: int
    unet_in_channels: int
    text_length: int
    text_dim: int
    text_vocab: int
    vision_size: int
    image_tokens: int
    vision_dim: int
    qformer_length: int
    qformer_vocab: int
    semantic_tokens: int

    @classmethod
    def from_configs(cls, c: Configs, height: int, width: int) -> Dims:
        """Sizes from a model's config files (`Checkpoint.configs`, `preset_configs`): no weights needed."""
        f = c.vae_scale_factor
        vision = c.blip2["vision_config"]
        grid = c.attention_grid
        latent = int(c.vae.get("latent_channels", 4))
        return cls(
            height=height,
            width=width,
            latent_height=height // f,
            latent_width=width // f,
            latent_channels=latent,
            latent_moments=2 * latent,
            unet_in_channels=int(c.unet["in_channels"]),
            text_length=int(c.tokenizer.model_max_length),
            text_dim=int(c.text_encoder["hidden_size"]),
            text_vocab=int(c.text_encoder["vocab_size"]),
            vision_size=int(vision["image_size"]),
            image_tokens=1 + grid[0] * grid[1],
            vision_dim=int(vision["hidden_size"]),
            qformer_length=int(c.acsdk.qformer_max_length),
            qformer_vocab=int(c.blip2["qformer_config"]["vocab_size"]),
            semantic_tokens=int(c.acsdk.num_semantic_tokens),
        )

    def resolve(self, dim: int | str) -> int | str:
        return dim if isinstance(dim, int) or dim == BATCH else getattr(self, dim)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "float32" | "int64"
    shape: tuple[int | str, ...]  # ints, Dims field names, or "batch"
    sample: str = "normal"  # how to make a sample: normal | unit | ids:<vocab dim> | ones | timestep | scale

    def concrete(self, dims: Dims, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else int(dims.resolve(d)) for d in self.shape)

    def symbolic(self, dims: Dims) -> list[int | str]:
        return [dims.resolve(d) for d in self.shape]

    def make_sample(self, dims: Dims, batch: int, generator: torch.Generator) -> torch.Tensor:
        shape = self.concrete(dims, batch)
        kind, _, arg = self.sample.partition(":")
        if kind == "ids":
            return torch.randint(0, int(dims.resolve(arg)), shape, generator=generator, dtype=torch.int64)
        if kind == "ones":
            return torch.ones(shape, dtype=torch.int64)
        if kind == "timestep":
            return torch.randint(1, 1000, shape, generator=generator).to(torch.float32)
        if kind == "scale":
            return torch.ones(shape, dtype=torch.float32)
        x = torch.randn(shape, generator=generator, dtype=torch.float32)
        return x.clamp(-1, 1) if kind == "unit" else x


@dataclass(frozen=True)
class Tolerance:
    """Pass when max_abs <= atol + rtol * max|reference|."""

    atol: float
    rtol: float

    def allows(self, max_abs: float, ref_scale: float) -> bool:
        return max_abs <= self.atol + self.rtol * ref_scale


FP32_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)
# fp16 carries ~3 significant digits; through tens of layers errors of ~1e-3 of the output's scale
# are normal (measured on the tiny model: 1e-3..4e-3 of scale). Loose enough for that, tight enough
# to catch overflow or a wrong graph, which give O(1) errors or NaN.
FP16_TOLERANCE = Tolerance(atol=2e-2, rtol=2e-2)
# An INT8 or FP8 TensorRT plan against its own Q/DQ ONNX on ONNX Runtime CPU: the same quantized values, other
# float parts and rounding around them. Not measured on a GPU yet (none with TensorRT here); the image-level
# gate on ONNX Runtime is what the Q/DQ graph itself passed.
QDQ_TOLERANCE = Tolerance(atol=5e-2, rtol=5e-2)
QUANTIZED = ("int8", "fp8")  # precisions that come from a Q/DQ graph


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    build_module: Callable[[Checkpoint], nn.Module]  # loads only the parts this component needs
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch_per_image: int = 1  # the UNet runs CFG as batch 2; the VAE encoder takes image + masked image
    fp16: bool = True  # may be compiled in fp16 under --fp16
    keep_fp32_variant: bool = False  # --fp16 also ships an fp32 variant to fall back on
    fp32_scopes: tuple[str, ...] = ()  # module scopes kept in fp32 inside an fp16 graph
    verify_cases: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()  # named input overrides to check too
    note: str = ""

    # -- shapes and profiles -----------------------------------------------------------------
    def batch_range(self, max_batch: int) -> tuple[int, int, int]:
        """(min, opt, max) batch: opt is one image's worth, max covers `max_batch` images."""
        return 1, self.batch_per_image, self.batch_per_image * max_batch

    def profile(self, dims: Dims, max_batch: int) -> dict[str, dict[str, list[int]]]:
        lo, opt, hi = self.batch_range(max_batch)
        return {
            t.name: {
                "min": list(t.concrete(dims, lo)),
                "opt": list(t.concrete(dims, opt)),
                "max": list(t.concrete(dims, hi)),
            }
            for t in self.inputs
        }

    def sample_inputs(self, dims: Dims, batch: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        b = self.batch_per_image if batch is None else batch
        return {t.name: t.make_sample(dims, b, g) for t in self.inputs}

    def verification_inputs(self, dims: Dims) -> dict[str, dict[str, torch.Tensor]]:
        """The sample (seed 1) and each named case: the sample with some inputs filled with a value."""
        base = self.sample_inputs(dims, seed=1)
        cases = {"sample": base}
        for case, overrides in self.verify_cases:
            cases[case] = {**base, **{k: torch.full_like(base[k], v) for k, v in overrides}}
        return cases

    def io_entry(self, dims: Dims) -> dict:
        """The manifest's description of this component's interface."""
        return {
            "inputs": [dict(asdict(t), shape=t.symbolic(dims)) for t in self.inputs],
            "outputs": [dict(asdict(t), shape=t.symbolic(dims)) for t in self.outputs],
            "batch_per_image": self.batch_per_image,
        }

    def precision(self, fp16: bool) -> str:
        return "fp16" if fp16 and self.fp16 else "fp32"


def _t(name: str, dtype: str, *shape: int | str, sample: str = "normal") -> TensorSpec:
    return TensorSpec(name, dtype, tuple(shape), sample)


F32, I64 = "float32", "int64"

SPECS: dict[str, ComponentSpec] = {
    s.name: s
    for s in (
        ComponentSpec(
            "text_encoder",
            lambda c: TextEncoder(c.text_encoder()),
            inputs=(_t("input_ids", I64, BATCH, "text_length", sample="ids:text_vocab"),),
            outputs=(_t("text_embeds", F32, BATCH, "text_length", "text_dim"),),
            batch_per_image=2,
        ),
        ComponentSpec(
            "csm_vision",
            lambda c: CSMVision(c.vision()),
            inputs=(_t("pixel_values", F32, BATCH, 3, "vision_size", "vision_size"),),
            outputs=(_t("image_tokens", F32, BATCH, "image_tokens", "vision_dim"),),
        ),
        ComponentSpec(
            "csm_qformer",
            lambda c: CSMQFormer(c.qformer(), c.projection()),
            inputs=(
                _t("image_tokens", F32, BATCH, "image_tokens", "vision_dim"),
                _t("input_ids", I64, BATCH, "qformer_length", sample="ids:qformer_vocab"),
                _t("attention_mask", I64, BATCH, "qformer_length", sample="ones"),
            ),
            outputs=(_t("semantic_tokens", F32, BATCH, "semantic_tokens", "text_dim"),),
            fp16=False,
            note="kept fp32 like transformers keeps BLIP-2's Q-Former; runs once per reference",
        ),
        ComponentSpec(
            "unet",
            lambda c: SGAUNet(c.unet()),
            inputs=(
                _t("sample", F32, BATCH, "unet_in_channels", "latent_height", "latent_width"),
                _t("timestep", F32, BATCH, sample="timestep"),
                _t("text_embeds", F32, BATCH, "text_length", "text_dim"),
                _t("semantic_tokens", F32, BATCH, "semantic_tokens", "text_dim"),
                _t("semantic_scale", F32, 1, sample="scale"),
            ),
            outputs=(_t("noise_pred", F32, BATCH, "latent_channels", "latent_height", "latent_width"),),
            batch_per_image=2,
            # sin/cos of t * frequencies: in fp16 an argument near 1000 is only resolved to 0.5 rad.
            fp32_scopes=("unet.time_proj", "unet.time_embedding"),
            verify_cases=(("t=981", (("timestep", 981.0),)), ("t=1", (("timestep", 1.0),))),
        ),
        ComponentSpec(
            "vae_encoder",
            lambda c: VAEEncoder(c.vae()),
            inputs=(_t("image", F32, BATCH, 3, "height", "width", sample="unit"),),
            outputs=(_t("latent_moments", F32, BATCH, "latent_moments", "latent_height", "latent_width"),),
            batch_per_image=2,
            keep_fp32_variant=True,
            note="fp16 SD VAEs can overflow: an fp32 variant ships beside the fp16 one (used on NaN/Inf)",
        ),
        ComponentSpec(
            "vae_decoder",
            lambda c: VAEDecoder(c.vae()),
            inputs=(_t("latents", F32, BATCH, "latent_channels", "latent_height", "latent_width"),),
            outputs=(_t("image", F32, BATCH, 3, "height", "width"),),
            keep_fp32_variant=True,
            note="fp16 SD VAEs overflow into NaN/black images: an fp32 variant ships beside the fp16 one",
        ),
    )
}
