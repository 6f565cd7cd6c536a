"""Public weights in: Stable Diffusion inpainting and BLIP-2 stage 1 become an acsdk checkpoint.

    SD     a diffusers pipeline folder (model_index.json), one single-file .safetensors in the original LDM /
           A1111 key layout (read against the diffusers configs shipped in `acsdk/assets/configs`, or
           `sd_config`), or a hub id (downloaded when the hub is reachable)
    BLIP-2 a transformers `Blip2ForImageTextRetrieval` folder (Salesforce/blip2-itm-vit-g) or its hub id

Every part loads through its library's own loader (`from_pretrained`, `from_single_file`), safetensors only:
pickled files (.ckpt, .bin, .pt) are refused, never opened. The SGA adapter starts from an IP-Adapter file or
as IP-Adapter initialises one (`init_adapter`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import BertTokenizer, Blip2ForImageTextRetrieval, CLIPTextModel, CLIPTokenizer

from ..errors import CheckpointError, InputError, WriteError, check_int
from .checkpoint import AnomalyControlModel
from .config import CLIP_MEAN, CLIP_STD, REFERENCE_WINDOWS, ModelConfig
from .ip_adapter import import_ip_adapter, init_adapter, read_ip_adapter

log = logging.getLogger(__name__)

SD_CONFIG_DIR = Path(__file__).resolve().parent.parent / "assets" / "configs" / "stable-diffusion-inpainting"
PICKLED = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_SD_FILES = ["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"]
_SKIP = ["safety_checker/*", "feature_extractor/*", "*.fp16.*", "*non_ema*"]  # never needed, gigabytes
_BLIP2_FILES = ["*.json", "*.txt", "*.safetensors"]


@dataclass
class StableDiffusionParts:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler


def resolve(source: str | os.PathLike, argument: str, patterns: list[str]) -> Path:
    """A local path, or a hub id downloaded (safetensors and configs only) when the hub is reachable."""
    path = Path(source)
    if path.exists():
        return path
    name = str(source)
    if not _HUB_ID.match(name):
        raise InputError(
            argument, "a local folder or file, or a hub id like org/name", f"'{name}', which does not exist"
        )
    from huggingface_hub import constants, snapshot_download

    how = f"download it where the hub is reachable (`hf download {name} --local-dir DIR`) and pass DIR"
    if constants.HF_HUB_OFFLINE:
        raise InputError(argument, f"a local folder: the hub is offline here (HF_HUB_OFFLINE); {how}", f"'{name}'")
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, ignore_patterns=_SKIP))
    except Exception as exc:  # network, authentication, unknown repository...
        raise InputError(argument, f"a reachable hub id ({how})", f"'{name}' ({type(exc).__name__}: {exc})") from exc


def load_stable_diffusion(
    source: str | os.PathLike, sd_config: str | os.PathLike | None = None
) -> StableDiffusionParts:
    """SD-1.x inpainting parts from a diffusers folder, a single-file .safetensors or a hub id (see module doc)."""
    path = resolve(source, "sd", _SD_FILES)
    if path.is_file():
        parts = _from_single_file(path, Path(sd_config) if sd_config else SD_CONFIG_DIR)
    elif (path / "model_index.json").is_file():
        parts = _from_diffusers_folder(path)
    else:
        found = sorted(p.name for p in path.iterdir())[:8]
        raise InputError(
            "sd",
            "a diffusers pipeline folder (with model_index.json), a single-file .safetensors or a hub id",
            f"'{path}' holding {found or 'nothing'}",
        )
    _check_inpainting(parts.unet.config.in_channels, path)
    _check_widths(parts.unet.config.cross_attention_dim, parts.text_encoder.config.hidden_size)
    return parts


def _check_widths(cross_attention_dim: int, text_width: int) -> None:
    if cross_attention_dim != text_width:
        expected = f"a UNet whose cross-attention width equals its text encoder's width ({text_width})"
        raise InputError("sd", expected, f"cross_attention_dim {cross_attention_dim}")


def _check_inpainting(in_channels: int, path: Path) -> None:
    if in_channels != 9:
        raise InputError(
            "sd",
            "an inpainting model: a UNet with 9 input channels (latent, mask, masked image), e.g. "
            "stable-diffusion-inpainting or a fine-tune of it",
            f"'{path}', whose UNet has {in_channels} input channels (a text-to-image model)",
        )


def _from_diffusers_folder(path: Path) -> StableDiffusionParts:
    missing = [p for p in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (path / p).is_dir()]
    if missing:
        raise InputError(
            "sd",
            "a diffusers pipeline folder with unet, vae, text_encoder, tokenizer, scheduler",
            f"'{path}' lacking {missing}",
        )
    unet, text = (json.loads((path / p / "config.json").read_text()) for p in ("unet", "text_encoder"))
    _check_inpainting(unet.get("in_channels"), path)
    _check_widths(unet.get("cross_attention_dim"), text.get("hidden_size"))
    kw = {"use_safetensors": True, "low_cpu_mem_usage": True}
    try:
        return StableDiffusionParts(
            unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kw),
            vae=AutoencoderKL.from_pretrained(path, subfolder="vae", **kw),
            text_encoder=CLIPTextModel.from_pretrained(path, subfolder="text_encoder", use_safetensors=True),
            tokenizer=CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
            scheduler=DDIMScheduler.from_pretrained(path, subfolder="scheduler"),
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            "sd", path, f"cannot be loaded with safetensors only ({type(exc).__name__}: {exc})"
        ) from exc


def _from_single_file(path: Path, config: Path) -> StableDiffusionParts:
    if path.suffix.lower() in PICKLED:
        raise InputError(
            "sd",
            "a .safetensors file (pickled checkpoints can run code when opened; acsdk never opens them)",
            f"'{path}'. Convert it once, where you trust the file: python -c \"import torch, safetensors.torch as "
            f"s; d = torch.load('{path.name}', weights_only=True); s.save_file(d.get('state_dict', d), "
            "'model.safetensors')\"",
        )
    if path.suffix.lower() != ".safetensors":
        raise InputError("sd", "a single-file checkpoint ending in .safetensors", f"'{path}'")
    if not (config / "model_index.json").is_file():
        raise InputError("sd_config", "a diffusers folder with model_index.json and component configs", f"'{config}'")
    from diffusers import StableDiffusionInpaintPipeline
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            key = "model.diffusion_model.input_blocks.0.0.weight"
            if key in f.keys():
                _check_inpainting(f.get_slice(key).get_shape()[1], path)
        pipe = StableDiffusionInpaintPipeline.from_single_file(
            str(path), config=str(config), local_files_only=True, safety_checker=None, requires_safety_checker=False
        )
    except (InputError, CheckpointError):
        raise
    except Exception as exc:  # diffusers raises several types for a file of another model family
        raise CheckpointError(
            "sd", path, f"not an SD-1.x inpainting single file ({type(exc).__name__}: {exc})"
        ) from exc
    return StableDiffusionParts(
        pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, DDIMScheduler.from_config(pipe.scheduler.config)
    )


def load_blip2(source: str | os.PathLike) -> tuple[Blip2ForImageTextRetrieval, BertTokenizer, dict]:
    """The BLIP-2 stage-1 model, its Q-Former tokenizer and its image processor settings."""
    path = resolve(source, "blip2", _BLIP2_FILES)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InputError("blip2", "a transformers BLIP-2 folder (config.json, model.safetensors)", f"'{path}'")
    config = json.loads(config_file.read_text())
    classes = config.get("architectures") or []
    text_input = (config.get("qformer_config") or {}).get("use_qformer_text_input", False)
    if config.get("model_type") != "blip-2" or "Blip2ForImageTextRetrieval" not in classes or not text_input:
        lm = (config.get("text_config") or {}).get("model_type", "?")
        what = f"{classes or ['no architectures']} (model_type {config.get('model_type')!r}, language model {lm!r})"
        raise InputError(
            "blip2",
            "BLIP-2 stage 1, whose Q-Former reads text: Blip2ForImageTextRetrieval, e.g. Salesforce/blip2-itm-vit-g "
            "(the OPT / T5 generation models have no text input to the Q-Former)",
            what,
        )
    try:
        model = Blip2ForImageTextRetrieval.from_pretrained(
            path, dtype=torch.float32, attn_implementation="eager", use_safetensors=True
        )
        tokenizer = BertTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            "blip2", path, f"cannot be loaded with safetensors only ({type(exc).__name__}: {exc})"
        ) from exc
    processor_file = path / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    return model, tokenizer, processor


def init_checkpoint(
    sd: str | os.PathLike,
    blip2: str | os.PathLike,
    out: str | os.PathLike,
    *,
    ip_adapter: str | os.PathLike | None = None,
    num_semantic_tokens: int = 4,
    height: int | None = None,
    width: int | None = None,
    sd_config: str | os.PathLike | None = None,
    reference_window: str = "defect",
    force: bool = False,
    seed: int = 0,
) -> tuple[Path, str]:
    """Write an acsdk checkpoint from public SD-inpainting and BLIP-2 weights; return (path, how the adapter began).

    Holds every part in memory once (~9 GB in fp32 at real size) and writes atomically: an existing `out` is
    refused unless `force`, and replaced only once the new checkpoint is complete.
    """
    dest = Path(out)
    if dest.exists() and not force:
        raise InputError("out", "a new directory, or --force to replace it", f"'{dest}', which exists")
    check_int("num_semantic_tokens", num_semantic_tokens, 1)
    if reference_window not in REFERENCE_WINDOWS:
        raise InputError("reference_window", f"one of {REFERENCE_WINDOWS}", repr(reference_window))
    if ip_adapter is not None and not Path(ip_adapter).is_file():
        raise InputError(
            "ip_adapter", "an IP-Adapter .safetensors or .bin file", f"'{ip_adapter}', which does not exist"
        )
    parts = load_stable_diffusion(sd, sd_config)
    vision, qtok, processor = load_blip2(blip2)
    factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
    size = parts.unet.config.sample_size * factor
    blip_proj_dim = ModelConfig.blip_proj_dim  # IP-Adapter's image-embedding width (CLIP ViT-H: 1024)
    if ip_adapter is not None:  # its ImageProj fixes BlipProj's output width and the token count
        proj = read_ip_adapter(ip_adapter)["image_proj"].get("proj.weight")
        if proj is not None:
            blip_proj_dim = int(proj.shape[1])
            num_semantic_tokens = max(1, int(proj.shape[0]) // int(parts.unet.config.cross_attention_dim))
    config = ModelConfig(
        height=size if height is None else height,
        width=size if width is None else width,
        num_semantic_tokens=num_semantic_tokens,
        blip_proj_dim=blip_proj_dim,
        reference_window=reference_window,
        image_mean=tuple(processor.get("image_mean", CLIP_MEAN)),
        image_std=tuple(processor.get("image_std", CLIP_STD)),
    )
    torch.manual_seed(seed)  # BlipProj (and ImageProj, without an IP-Adapter file) start random
    model = AnomalyControlModel(
        config, parts.unet, parts.vae, parts.text_encoder, parts.tokenizer, parts.scheduler, vision, qtok
    )
    if ip_adapter is not None:
        import_ip_adapter(model, ip_adapter)
        how = f"ImageProj and to_k_ip/to_v_ip from {ip_adapter}; BlipProj random (seed {seed})"
    else:
        init_adapter(model)
        how = (
            "IP-Adapter's initialisation: to_k_ip/to_v_ip copied from to_k/to_v; BlipProj/ImageProj random (seed "
            f"{seed}) behind a closed LayerNorm gain, so lambda = 1 adds nothing before training"
        )
    try:
        path = model.save_pretrained(dest, overwrite=force)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise WriteError("out", dest, "no space left on device; nothing was written") from exc
        raise
    log.info("checkpoint %s written; adapter: %s", path, how)
    return path, how
