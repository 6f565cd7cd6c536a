"""The checkpoint format ("training artifacts") and its loader.

    ckpt/
      acsdk.json             format version, model resolution, adapter sizes, negative prompt
      unet/ vae/ text_encoder/ tokenizer/ scheduler/    SD-1.5 inpainting parts, diffusers layout
      blip2/ qformer_tokenizer/                         BLIP-2 stage 1, transformers layout
      adapter/adapter.safetensors                       BlipProj, ImageProj, every to_k_ip / to_v_ip

Every part loads through `from_pretrained` on a local path, so a real SD-1.5-inpainting and
blip2-itm-vit-g download drops into the same layout the tiny test checkpoint uses.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertTokenizer, Blip2ForImageTextRetrieval, CLIPTextModel, CLIPTokenizer

from runtime.files import atomic_dir

from ..errors import CheckpointError, InputError
from .config import CONFIG_NAME, ModelConfig
from .csm import QFormer, SemanticProjection
from .sga import install_sga, sga_processors

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter/adapter.safetensors"
SGA_PREFIX = "sga."

T = TypeVar("T")


def _load_part(root: Path, part: str, loader: Callable[[Path], T]) -> T:
    path = root / part
    if not path.is_dir():
        raise CheckpointError(part, path, "missing directory")
    try:
        return loader(path)
    except CheckpointError:
        raise
    except Exception as exc:  # from_pretrained raises OSError, ValueError, safetensors errors...
        raise CheckpointError(part, path, f"cannot be loaded ({type(exc).__name__}: {exc})") from exc


class AnomalyControlModel(nn.Module):
    """Every torch part of AnomalyControl, frozen, with the SGA processors installed on the UNet."""

    def __init__(
        self,
        config: ModelConfig,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        scheduler: DDIMScheduler,
        blip2: Blip2ForImageTextRetrieval,
        qformer_tokenizer: BertTokenizer,
        projection: SemanticProjection | None = None,
    ):
        super().__init__()
        self.config = config
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.blip2 = blip2
        self.tokenizer = tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.scheduler_config = dict(scheduler.config)
        if not sga_processors(unet):
            install_sga(unet, config.num_semantic_tokens)
        self.projection = projection or SemanticProjection(
            blip2.config.qformer_config.hidden_size,
            config.blip_proj_dim,
            unet.config.cross_attention_dim,
            config.num_semantic_tokens,
        )
        self.qformer = QFormer.from_blip2(blip2)
        self.eval()
        self.requires_grad_(False)

    # -- geometry, all from configs ------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def vision_image_size(self) -> int:
        return self.blip2.config.vision_config.image_size

    @property
    def attention_grid(self) -> tuple[int, int]:
        n = self.vision_image_size // self.blip2.config.vision_config.patch_size
        return (n, n)

    # -- adapter ---------------------------------------------------------------------------------
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"{k}": v for k, v in self.projection.state_dict().items()}
        for name, proc in sga_processors(self.unet).items():
            for key, value in proc.state_dict().items():
                out[f"{SGA_PREFIX}{name}.{key}"] = value
        return out

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor], source: object = "adapter") -> None:
        """Load adapter weights strictly: a missing, extra or mis-shaped key names itself."""
        own = self.adapter_state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise CheckpointError(
                "adapter", source, f"keys do not match the model: missing {missing[:4]}, unexpected {extra[:4]}"
            )
        for key, value in state.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise CheckpointError(
                    "adapter",
                    source,
                    f"'{key}' has shape {tuple(value.shape)}, the base model needs {tuple(own[key].shape)}",
                )
        with torch.no_grad():
            proj_state = {k: v for k, v in state.items() if not k.startswith(SGA_PREFIX)}
            self.projection.load_state_dict(proj_state)
            procs = sga_processors(self.unet)
            for key, value in state.items():
                if key.startswith(SGA_PREFIX):
                    name, _, param = key[len(SGA_PREFIX) :].rpartition(".to_")
                    getattr(procs[name], "to_" + param.split(".")[0]).weight.copy_(value)

    # -- persistence -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> AnomalyControlModel:
        root = Path(path)
        if not root.is_dir():
            raise CheckpointError("checkpoint", root, "not a directory")
        config = ModelConfig.load(root)
        kw = {"torch_dtype": dtype}
        unet = _load_part(root, "unet", lambda p: UNet2DConditionModel.from_pretrained(p, **kw))
        vae = _load_part(root, "vae", lambda p: AutoencoderKL.from_pretrained(p, **kw))
        text_encoder = _load_part(root, "text_encoder", lambda p: CLIPTextModel.from_pretrained(p, dtype=dtype))
        tokenizer = _load_part(root, "tokenizer", CLIPTokenizer.from_pretrained)
        scheduler = _load_part(root, "scheduler", DDIMScheduler.from_pretrained)
        # Eager attention: ASEA reads the Q-Former's cross-attention probabilities.
        blip2 = _load_part(
            root,
            "blip2",
            lambda p: Blip2ForImageTextRetrieval.from_pretrained(p, dtype=torch.float32, attn_implementation="eager"),
        )
        qtok = _load_part(root, "qformer_tokenizer", BertTokenizer.from_pretrained)
        if unet.config.in_channels != 9:
            raise CheckpointError(
                "unet", root / "unet", f"in_channels is {unet.config.in_channels}, inpainting needs 9"
            )
        model = cls(config, unet, vae, text_encoder, tokenizer, scheduler, blip2, qtok)
        adapter_file = root / ADAPTER_FILE
        if not adapter_file.is_file():
            raise CheckpointError("adapter", adapter_file, "missing file")
        state = _load_part(root, "adapter", lambda p: load_file(str(adapter_file)))
        model.load_adapter_state_dict(state, adapter_file)
        log.info("loaded checkpoint %s", root)
        return model.to(device)

    def save_pretrained(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the checkpoint into a temporary sibling and swap it in (`runtime.files.atomic_dir`): a crash at any
        moment leaves either the old checkpoint or the new one at `path`, never neither."""
        dest = Path(path)
        if dest.exists() and not overwrite:
            raise InputError("path", "a new directory, or overwrite=True to replace it", f"'{dest}', which exists")
        with atomic_dir(dest, replace=overwrite) as tmp:
            (tmp / CONFIG_NAME).write_text(self.config.to_json())
            procs = self.unet.attn_processors
            self.unet.set_attn_processor(AttnProcessor2_0())  # the diffusers part holds base weights only
            try:
                self.unet.save_pretrained(tmp / "unet")
            finally:
                self.unet.set_attn_processor(procs)
            self.vae.save_pretrained(tmp / "vae")
            self.text_encoder.save_pretrained(tmp / "text_encoder")
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            DDIMScheduler.from_config(self.scheduler_config).save_pretrained(tmp / "scheduler")
            self.blip2.save_pretrained(tmp / "blip2")
            self.qformer_tokenizer.save_pretrained(tmp / "qformer_tokenizer")
            (tmp / "adapter").mkdir()
            state = {k: v.detach().contiguous().cpu() for k, v in self.adapter_state_dict().items()}
            save_file(state, str(tmp / ADAPTER_FILE), metadata={"format": "acsdk-adapter"})
        return dest


def checkpoint_digest(path: str | os.PathLike) -> str:
    """sha256 over every file of a checkpoint (relative path and content), order-independent of the disk."""
    root = Path(path)
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(root)).encode())
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
