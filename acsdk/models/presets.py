"""Architecture presets: random AnomalyControl models of known sizes, built offline (no hub).

`tiny` and `demo` are toy sizes (tests, the shipped demo model), `small` keeps SD-1.5's block structure at
about a fifth of its width (CPU benchmarks), `sd15` is the real architecture (SD-1.5 inpainting + BLIP-2
ViT-g/14 + BERT-base Q-Former) with random weights. Test fixtures and the demo trainer build on these.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

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

from ..errors import InputError
from .checkpoint import AnomalyControlModel
from .config import Configs, ModelConfig
from .sga import install_sga

TINY_RESOLUTION = 64
_WORDS = (
    "a photo of the with and on in defect scratch hole crack stain contamination broken bent cut "
    "color fold glue poke print squeeze thread liquid metal bottle cable capsule carpet grid hazelnut "
    "leather nut pill screw tile toothbrush transistor wood zipper surface texture small large"
).split()


def tiny_clip_tokenizer() -> CLIPTokenizer:
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


def tiny_bert_tokenizer(model_max_length: int) -> BertTokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab_list = specials + _WORDS + pieces + ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    return BertTokenizer(vocab=vocab, model_max_length=model_max_length)


@dataclass(frozen=True)
class Preset:
    """Sizes of a random model with AnomalyControl's full structure. Configs come from code, not a hub."""

    resolution: int
    unet_blocks: tuple[int, ...]
    unet_cross_attn: tuple[bool, ...]  # per down level; the up path mirrors it
    unet_layers: int
    unet_head_dim: int
    unet_groups: int
    vae_blocks: tuple[int, ...]
    vae_layers: int
    vae_groups: int
    text_dim: int
    text_layers: int
    text_heads: int
    text_vocab: int | None  # None: the tokenizer's size
    vision_dim: int
    vision_layers: int
    vision_heads: int
    vision_size: int
    vision_patch: int
    qformer_dim: int
    qformer_layers: int
    qformer_heads: int
    queries: int
    blip_proj_dim: int
    qformer_length: int
    semantic_tokens: int = 4
    qformer_init: float = 0.02

    def unet_config(self) -> dict:
        down = tuple("CrossAttnDownBlock2D" if x else "DownBlock2D" for x in self.unet_cross_attn)
        up = tuple("CrossAttnUpBlock2D" if x else "UpBlock2D" for x in reversed(self.unet_cross_attn))
        return {
            "sample_size": self.resolution // 2 ** (len(self.vae_blocks) - 1),
            "in_channels": 9,
            "out_channels": 4,
            "down_block_types": down,
            "up_block_types": up,
            "block_out_channels": self.unet_blocks,
            "layers_per_block": self.unet_layers,
            "cross_attention_dim": self.text_dim,
            "attention_head_dim": self.unet_head_dim,
            "norm_num_groups": self.unet_groups,
        }


PRESETS: dict[str, Preset] = {
    # Toy: full synthesis in ~1-2 s on 2 CPU cores; what the tests and the demo run.
    "tiny": Preset(
        resolution=TINY_RESOLUTION,
        unet_blocks=(32, 64),
        unet_cross_attn=(True, True),
        unet_layers=1,
        unet_head_dim=8,
        unet_groups=8,
        vae_blocks=(16, 32, 32),
        vae_layers=1,
        vae_groups=8,
        text_dim=32,
        text_layers=2,
        text_heads=4,
        text_vocab=None,
        vision_dim=32,
        vision_layers=2,
        vision_heads=4,
        vision_size=32,
        vision_patch=4,
        qformer_dim=32,
        qformer_layers=4,
        qformer_heads=4,
        queries=8,
        blip_proj_dim=48,
        qformer_length=16,
        qformer_init=0.15,
    ),
    # The shipped demo model's sizes (trained from scratch by `python -m acsdk.train_base`): 64 px, an f=4
    # VAE (16x16 latents), attention at the two coarser UNet levels (../shared/DEMO-MODEL-NOTES.md).
    "demo": Preset(
        resolution=64,
        unet_blocks=(32, 64, 64),
        unet_cross_attn=(False, True, True),
        unet_layers=2,
        unet_head_dim=8,
        unet_groups=8,
        vae_blocks=(16, 32, 64),
        vae_layers=1,
        vae_groups=8,
        text_dim=64,
        text_layers=2,
        text_heads=4,
        text_vocab=None,
        vision_dim=48,
        vision_layers=2,
        vision_heads=4,
        vision_size=32,
        vision_patch=4,
        qformer_dim=48,
        qformer_layers=4,
        qformer_heads=4,
        queries=8,
        blip_proj_dim=48,
        qformer_length=16,
    ),
    # SD-1.5's block structure (4 levels, 3 with cross-attention, f=8 VAE, 77 text tokens, 257 image
    # tokens from a ViT/14 at 224 px, 32 queries) scaled down ~1/5 in width: 256 px end to end on CPU.
    "small": Preset(
        resolution=256,
        unet_blocks=(64, 128, 256, 256),
        unet_cross_attn=(True, True, True, False),
        unet_layers=2,
        unet_head_dim=8,
        unet_groups=32,
        vae_blocks=(32, 64, 128, 128),
        vae_layers=2,
        vae_groups=32,
        text_dim=256,
        text_layers=6,
        text_heads=4,
        text_vocab=None,
        vision_dim=256,
        vision_layers=8,
        vision_heads=4,
        vision_size=224,
        vision_patch=14,
        qformer_dim=256,
        qformer_layers=6,
        qformer_heads=4,
        queries=32,
        blip_proj_dim=256,
        qformer_length=32,
        qformer_init=0.05,
    ),
}


SD15_CONFIG_DIR = Path(__file__).resolve().parent.parent / "assets" / "configs" / "stable-diffusion-inpainting"
SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "num_train_timesteps": 1000,
}
NAMES = (*PRESETS, "sd15")


def preset_configs(name: str) -> Configs:
    """The configs of a preset: `sd15` is the public SD-1.5-inpainting + blip2-itm-vit-g configuration (shipped
    as data in `acsdk/assets/configs`), the others are scaled-down structures defined in `PRESETS`."""
    if name == "sd15":
        return _sd15_configs()
    if name not in PRESETS:
        raise InputError("preset", f"one of {list(NAMES)}", repr(name))
    c = PRESETS[name]
    tokenizer = tiny_clip_tokenizer()
    qtok = tiny_bert_tokenizer(c.qformer_length)
    n = len(c.vae_blocks)
    vae = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * n,
        "up_block_types": ("UpDecoderBlock2D",) * n,
        "block_out_channels": c.vae_blocks,
        "layers_per_block": c.vae_layers,
        "latent_channels": 4,
        "norm_num_groups": c.vae_groups,
        "sample_size": c.resolution,
    }
    text = {
        "vocab_size": c.text_vocab or len(tokenizer),
        "hidden_size": c.text_dim,
        "intermediate_size": 4 * c.text_dim,
        "num_hidden_layers": c.text_layers,
        "num_attention_heads": c.text_heads,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    blip2 = {
        "vision_config": {
            "hidden_size": c.vision_dim,
            "intermediate_size": 4 * c.vision_dim,
            "num_hidden_layers": c.vision_layers,
            "num_attention_heads": c.vision_heads,
            "image_size": c.vision_size,
            "patch_size": c.vision_patch,
            "initializer_range": 0.02,
        },
        "qformer_config": {
            "hidden_size": c.qformer_dim,
            "intermediate_size": 4 * c.qformer_dim,
            "num_hidden_layers": c.qformer_layers,
            "num_attention_heads": c.qformer_heads,
            "cross_attention_frequency": 2,
            "encoder_hidden_size": c.vision_dim,
            "vocab_size": len(qtok.get_vocab()),
            "max_position_embeddings": max(64, c.qformer_length),
            "use_qformer_text_input": True,
            "initializer_range": c.qformer_init,
        },
        "text_config": {
            "model_type": "opt",
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "ffn_dim": 32,
            "num_attention_heads": 2,
            "vocab_size": 64,
            "word_embed_proj_dim": 32,
        },
        "num_query_tokens": c.queries,
        "image_text_hidden_size": 16,
    }
    config = ModelConfig(
        height=c.resolution,
        width=c.resolution,
        num_semantic_tokens=c.semantic_tokens,
        blip_proj_dim=c.blip_proj_dim,
        qformer_max_length=c.qformer_length,
    )
    return Configs(config, c.unet_config(), vae, text, blip2, SCHEDULER, tokenizer, qtok)


def _sd15_configs() -> Configs:
    def read(part: str, file: str = "config.json") -> dict:
        data = json.loads((SD15_CONFIG_DIR / part / file).read_text())
        return {k: v for k, v in data.items() if not k.startswith("_") and k not in ("architectures", "model_type")}

    # blip2-itm-vit-g: the ViT-g/14 and Q-Former defaults of transformers, a Q-Former vocabulary of 30,523
    # (BERT-base uncased + [DEC]) with text input, 32 queries (as transformers' BLIP-2 conversion writes it).
    # initializer_range only shapes random weights: the public config's 1e-10 gives a random tower outputs of ~1e-5,
    # which fp16 cannot resolve and no checkpoint has; 0.02 gives the unit-scale activations real weights give.
    blip2 = Blip2Config(
        vision_config={"initializer_range": 0.02},
        qformer_config={"vocab_size": 30523, "use_qformer_text_input": True},
    ).to_dict()
    qtok = _bert_like_tokenizer(30523, 32)
    return Configs(
        ModelConfig(),
        read("unet"),
        read("vae"),
        read("text_encoder"),
        blip2,
        read("scheduler", "scheduler_config.json"),
        CLIPTokenizer.from_pretrained(SD15_CONFIG_DIR / "tokenizer"),
        qtok,
    )


def _bert_like_tokenizer(vocab_size: int, model_max_length: int) -> BertTokenizer:
    """A WordPiece vocabulary of the given size (the tiny one padded with unused pieces) for random weights."""
    base = tiny_bert_tokenizer(model_max_length).get_vocab()
    pieces = list(base) + [f"[unused{i}]" for i in range(vocab_size - len(base))]
    return BertTokenizer(vocab={t: i for i, t in enumerate(pieces)}, model_max_length=model_max_length)


def build_model(preset: str = "tiny", seed: int = 0) -> AnomalyControlModel:
    """A random AnomalyControl model of the given preset's sizes, with every part a real checkpoint has."""
    return build_from_configs(preset_configs(preset), seed, adapter_std=0.2 if preset == "tiny" else 0.02)


def build_from_configs(c: Configs, seed: int = 0, adapter_std: float = 0.02) -> AnomalyControlModel:
    """Random weights for `c`; the adapter too (std `adapter_std`), so a reference visibly changes the output."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**c.unet)
    vae = AutoencoderKL(**c.vae)
    text_encoder = CLIPTextModel(CLIPTextConfig(**c.text_encoder))
    blip2_config = Blip2Config(**c.blip2)
    blip2_config._attn_implementation = "eager"
    blip2 = Blip2ForImageTextRetrieval(blip2_config)
    with torch.no_grad():
        # Spread the learned queries so query->image attention is not uniform from the start.
        blip2.query_tokens.normal_(0.0, 1.0)
    scheduler = DDIMScheduler.from_config(c.scheduler)
    model = AnomalyControlModel(c.acsdk, unet, vae, text_encoder, c.tokenizer, scheduler, blip2, c.qformer_tokenizer)
    with torch.no_grad():
        for p in model.adapter_state_dict().values():
            if p.dim() > 1:
                p.normal_(0.0, adapter_std)
    return model


def build_sd15_sga_unet(seed: int = 0, num_tokens: int = 4) -> UNet2DConditionModel:
    """A real-size SGA UNet alone, random weights (~860 M parameters, 3.4 GB in fp32)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**preset_configs("sd15").unet)
    install_sga(unet, num_tokens)
    return unet.eval().requires_grad_(False)
