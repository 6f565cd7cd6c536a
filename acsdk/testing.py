"""Test helpers: tiny random checkpoints in the real format, textures, defects and masks (offline)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from .models.presets import TINY_RESOLUTION, build_model, preset_configs


def make_tiny_checkpoint(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random checkpoint (64 px, 8x8 attention grid) in the real format and return its path."""
    return build_model("tiny", seed).save_pretrained(path, overwrite=True)


def make_texture(size: int = TINY_RESOLUTION, seed: int = 0, gray: bool = False) -> np.ndarray:
    """A non-trivial HxWx3 uint8 texture (smooth colour waves plus grain), like a part's surface."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack(
        [0.5 + 0.25 * np.sin(2 * np.pi * (f * xx + g * yy) + p) for f, g, p in rng.uniform(0.5, 3.0, size=(3, 3))],
        axis=-1,
    )
    img = np.clip(base + rng.normal(0, 0.05, size=base.shape), 0, 1)
    if gray:
        img = img.mean(axis=-1)
    return (img * 255).round().astype(np.uint8)


def make_defect_pair(size: int = TINY_RESOLUTION, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image with a dark elliptical 'hole' and its exact HxW uint8 mask (0/255)."""
    rng = np.random.default_rng(seed + 1000)
    img = make_texture(size, seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7, size=2) * size
    ry, rx = rng.uniform(0.08, 0.18, size=2) * size
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    img = img.copy()
    img[inside] = (img[inside] * 0.25).astype(np.uint8)
    return img, (inside * 255).astype(np.uint8)


def make_box_mask(size: int, top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[top : top + height, left : left + width] = 255
    return mask


# -- public layouts, written from random weights ------------------------------------------------------------


@dataclass(frozen=True)
class PublicSources:
    """Random weights of a preset in the layouts public models come in."""

    sd_folder: Path  # diffusers StableDiffusionInpaintPipeline folder (model_index.json, safetensors)
    sd_single_file: Path  # one .safetensors in the original LDM / A1111 key layout
    sd_config: Path  # the diffusers folder without weights a single file is read against
    blip2_folder: Path  # transformers Blip2ForImageTextRetrieval folder with its tokenizer and image processor
    ip_adapter: Path  # IP-Adapter weights in ip-adapter_sd15's layout (image_proj, ip_adapter 1, 3, ...)


def write_public_sources(preset: str, root: str | os.PathLike, seed: int = 0) -> PublicSources:
    """Write a preset's SD-inpainting and BLIP-2 parts as a diffusers folder, a single LDM file and a transformers
    folder (what `acsdk init-checkpoint` reads), one part in memory at a time."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, CLIPTextConfig, CLIPTextModel

    c = preset_configs(preset)
    root = Path(root)
    torch.manual_seed(seed)
    pipe = StableDiffusionInpaintPipeline(
        vae=AutoencoderKL(**c.vae),
        text_encoder=CLIPTextModel(CLIPTextConfig(**c.text_encoder)),
        tokenizer=c.tokenizer,
        unet=UNet2DConditionModel(**c.unet),
        scheduler=DDIMScheduler.from_config(c.scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(root / "sd", safe_serialization=True)
    save_file(ldm_state_dict(pipe.unet, pipe.vae, pipe.text_encoder), str(root / "sd.safetensors"))
    save_file(ip_adapter_state_dict(pipe.unet, c.acsdk.num_semantic_tokens, seed), str(root / "ip-adapter.safetensors"))
    config_dir = root / "sd-config"
    shutil.copytree(root / "sd", config_dir, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    del pipe
    blip2 = Blip2ForImageTextRetrieval(Blip2Config(**c.blip2))
    blip2.save_pretrained(root / "blip2")
    del blip2
    c.qformer_tokenizer.save_pretrained(root / "blip2")
    processor = {
        "image_processor_type": "BlipImageProcessor",
        "size": {"height": c.vision_image_size, "width": c.vision_image_size},
        "image_mean": list(c.acsdk.image_mean),
        "image_std": list(c.acsdk.image_std),
        "do_normalize": True,
        "do_resize": True,
        "resample": 3,
    }
    (root / "blip2" / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    return PublicSources(
        root / "sd", root / "sd.safetensors", config_dir, root / "blip2", root / "ip-adapter.safetensors"
    )


def ip_adapter_state_dict(unet: nn.Module, num_tokens: int, seed: int = 0, image_dim: int = 1024) -> dict:
    """Random IP-Adapter weights for `unet` in the published file layout: `image_proj.*` (proj, norm) and
    `ip_adapter.<2k+1>.to_k_ip / to_v_ip.weight` for the k-th cross-attention layer."""
    g = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    out = {
        "image_proj.proj.weight": torch.randn(num_tokens * cross, image_dim, generator=g) * 0.02,
        "image_proj.proj.bias": torch.zeros(num_tokens * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    layers = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    for k, name in enumerate(layers):
        hidden = unet.get_submodule(name.rsplit(".processor", 1)[0]).to_k.out_features
        for p in ("to_k_ip", "to_v_ip"):
            out[f"ip_adapter.{2 * k + 1}.{p}.weight"] = torch.randn(hidden, cross, generator=g) * 0.02
    return out


_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def ldm_state_dict(unet: nn.Module, vae: nn.Module, text_encoder: nn.Module) -> dict[str, torch.Tensor]:
    """Diffusers / transformers weights in the original Stable Diffusion (LDM, A1111) single-file key layout."""
    out = {f"model.diffusion_model.{_ldm_unet_key(k, unet.config)}": v for k, v in unet.state_dict().items()}
    n = len(vae.config.block_out_channels)
    for key, value in vae.state_dict().items():
        new, value = _ldm_vae_key(key, value, n)
        out[f"first_stage_model.{new}"] = value
    for key, value in text_encoder.state_dict().items():  # transformers 5 names them without `text_model.`
        out[f"cond_stage_model.transformer.text_model.{key.removeprefix('text_model.')}"] = value
    return {k: v.contiguous() for k, v in out.items()}


def _ldm_unet_key(key: str, config) -> str:
    step = config.layers_per_block + 1
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2"}
    fixed.update({"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"})
    for old, new in fixed.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    parts = key.split(".")
    if parts[0] == "mid_block":
        kind, i, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        return f"middle_block.{2 * i}.{_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
    block, kind, i, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            return f"input_blocks.{(block + 1) * step}.0.op.{rest.removeprefix('conv.')}"
        index = 1 + block * step + i
    else:
        if kind == "upsamplers":
            slot = 2 if "CrossAttn" in config.up_block_types[block] else 1
            return f"output_blocks.{block * step + step - 1}.{slot}.{rest}"
        index = block * step + i
    prefix = "input_blocks" if parts[0] == "down_blocks" else "output_blocks"
    return f"{prefix}.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"{prefix}.{index}.1.{rest}"


def _resnet(rest: str) -> str:
    layer, _, param = rest.partition(".")
    return f"{_RESNET_TO_LDM[layer]}.{param}"


def _ldm_vae_key(key: str, value: torch.Tensor, levels: int) -> tuple[str, torch.Tensor]:
    side, rest = key.split(".", 1)
    if rest.startswith("conv_norm_out."):
        return f"{side}.norm_out.{rest.split('.', 1)[1]}", value
    parts = rest.split(".")
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            return (
                f"{side}.mid.block_{int(parts[2]) + 1}.{'.'.join(parts[3:]).replace('conv_shortcut', 'nin_shortcut')}",
                value,
            )
        layer = ".".join(parts[3:-1])
        if parts[-1] == "weight" and layer != "group_norm":
            value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        return f"{side}.mid.attn_1.{_VAE_ATTENTION_TO_LDM[layer]}.{parts[-1]}", value
    if parts[0] in ("down_blocks", "up_blocks"):
        i = int(parts[1])
        level, name = (i, "down") if parts[0] == "down_blocks" else (levels - 1 - i, "up")
        if parts[2] in ("downsamplers", "upsamplers"):
            return f"{side}.{name}.{level}.{name}sample.{'.'.join(parts[4:])}", value
        tail = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
        return f"{side}.{name}.{level}.block.{parts[3]}.{tail}", value
    return key, value
