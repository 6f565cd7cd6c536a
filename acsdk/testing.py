"""Tiny random checkpoints and images with the full structure, built offline, for tests and the demo."""

from __future__ import annotations

import os
import string
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import (
    BertTokenizer,
    Blip2Config,
    Blip2ForImageTextRetrieval,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
)

from .models.checkpoint import AnomalyControlModel
from .models.config import ModelConfig

TINY_RESOLUTION = 64
_WORDS = (
    "a photo of the with and on in defect scratch hole crack stain contamination broken bent cut "
    "color fold glue poke print squeeze thread liquid metal bottle cable capsule carpet grid hazelnut "
    "leather nut pill screw tile toothbrush transistor wood zipper surface texture small large"
).split()


def _clip_tokenizer() -> CLIPTokenizer:
    """A character-level BPE vocabulary: every ASCII word tokenizes, no download needed."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab: dict[str, int] = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for w in _WORDS[:24]:  # a few merges so common words become single tokens
        for i in range(1, len(w)):
            left, right = w[:i], w[i] + ("</w>" if i == len(w) - 1 else "")
            merges.append((left, right))
            vocab.setdefault(left + right, len(vocab))
    for tok in ("<|startoftext|>", "<|endoftext|>"):
        vocab[tok] = len(vocab)
    merges = list(dict.fromkeys(merges))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _bert_tokenizer(model_max_length: int) -> BertTokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab_list = specials + _WORDS + pieces + ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    return BertTokenizer(vocab=vocab, model_max_length=model_max_length)


def build_tiny_model(seed: int = 0) -> AnomalyControlModel:
    """Every part of AnomalyControl at toy size (64 px images, 8x8 attention grid, 4 semantic tokens)."""
    torch.manual_seed(seed)
    config = ModelConfig(
        height=TINY_RESOLUTION, width=TINY_RESOLUTION, num_semantic_tokens=4, blip_proj_dim=48, qformer_max_length=16
    )
    cross_dim = 32
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 4,
        in_channels=9,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
    )
    tokenizer = _clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cross_dim,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    qtok = _bert_tokenizer(config.qformer_max_length)
    blip2_config = Blip2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 4,
            "initializer_range": 0.02,
        },
        qformer_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "cross_attention_frequency": 2,
            "encoder_hidden_size": 32,
            "vocab_size": len(qtok.get_vocab()),
            "max_position_embeddings": 64,
            "use_qformer_text_input": True,
            "initializer_range": 0.15,
        },
        text_config={
            "model_type": "opt",
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "ffn_dim": 32,
            "num_attention_heads": 2,
            "vocab_size": 64,
            "word_embed_proj_dim": 32,
        },
        num_query_tokens=8,
        image_text_hidden_size=16,
    )
    blip2_config._attn_implementation = "eager"
    blip2 = Blip2ForImageTextRetrieval(blip2_config)
    with torch.no_grad():
        # Spread the learned queries so query->image attention is not uniform from the start.
        blip2.query_tokens.normal_(0.0, 1.0)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        num_train_timesteps=1000,
    )
    model = AnomalyControlModel(config, unet, vae, text_encoder, tokenizer, scheduler, blip2, qtok)
    with torch.no_grad():
        # Non-zero adapter weights, so the reference visibly changes the UNet's output.
        for p in model.adapter_state_dict().values():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    return model


def make_tiny_checkpoint(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random checkpoint in the real format and return its path."""
    return build_tiny_model(seed).save_pretrained(path, overwrite=True)


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


def sd15_unet_config() -> dict:
    """Stable Diffusion 1.5 inpainting UNet's architecture (the hub config's values), for random-weight runs."""
    return {
        "sample_size": 64,
        "in_channels": 9,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    }


def build_sd15_sga_unet(seed: int = 0, num_tokens: int = 4) -> UNet2DConditionModel:
    """A real-size SGA UNet with random weights (~860 M parameters, 3.4 GB in fp32)."""
    from .models.sga import install_sga

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sd15_unet_config())
    install_sga(unet, num_tokens)
    return unet.eval().requires_grad_(False)
