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

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertTokenizer, Blip2Config, Blip2ForImageTextRetrieval, CLIPTextModel, CLIPTokenizer
from transformers.models.blip_2.modeling_blip_2 import Blip2VisionModel

from runtime.files import atomic_dir

from ..errors import CheckpointError, InputError
from .config import CONFIG_NAME, Configs, ModelConfig
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


def _load_pretrained(root: Path, part: str, cls: type[T], **kwargs) -> T:
    """`cls.from_pretrained` on one part, refused when any weight was left at its random initialisation.

    The libraries only log missing keys; a checkpoint written by a newer transformers (which renamed CLIP's
    keys) would otherwise load as a silently random text encoder.
    """

    def load(path: Path) -> T:
        model, info = cls.from_pretrained(path, output_loading_info=True, **kwargs)
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            problem = f"{len(missing)} weights missing (first: {missing[:3]}); written by another library version?"
            raise CheckpointError(part, path, problem)
        return model

    return _load_part(root, part, load)


def _read_config(root: Path, part: str, file: str = "config.json") -> dict:
    path = root / part / file
    if not path.is_file():
        raise CheckpointError(part, path, "missing file")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(part, path, f"not readable JSON ({exc})") from exc


def check_state(own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], source: object) -> None:
    """Adapter weights must match the model key for key and shape for shape; a mismatch names itself."""
    missing, extra = sorted(set(own) - set(given)), sorted(set(given) - set(own))
    if missing or extra:
        raise CheckpointError(
            "adapter", source, f"keys do not match the model: missing {missing[:4]}, unexpected {extra[:4]}"
        )
    for key, value in given.items():
        if tuple(value.shape) != tuple(own[key].shape):
            need = tuple(own[key].shape)
            raise CheckpointError("adapter", source, f"'{key}' has shape {tuple(value.shape)}, the model needs {need}")


def sga_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The SGA processors' weights, keyed as in the adapter file (`sga.<processor name>.to_k_ip.weight`)."""
    return {
        f"{SGA_PREFIX}{name}.{key}": value
        for name, proc in sga_processors(unet).items()
        for key, value in proc.state_dict().items()
    }


def load_sga_state_dict(unet: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    procs = sga_processors(unet)
    with torch.no_grad():
        for key, value in state.items():
            name, _, param = key[len(SGA_PREFIX) :].rpartition(".")
            name, _, layer = name.rpartition(".")
            getattr(procs[name], layer).get_parameter(param).copy_(value)


class Checkpoint:
    """A checkpoint directory read part by part: configs at once (cheap), weights when a part is asked for.

    A real-size checkpoint is ~9 GB in fp32; export holds one component at a time through this, while
    `AnomalyControlModel.from_pretrained` asks for every part.
    """

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)
        if not self.root.is_dir():
            raise CheckpointError("checkpoint", self.root, "not a directory")
        self.config = ModelConfig.load(self.root)

    @functools.cached_property
    def configs(self) -> Configs:
        r = self.root
        unet = _read_config(r, "unet")
        if unet.get("in_channels") != 9:
            raise CheckpointError("unet", r / "unet", f"in_channels is {unet.get('in_channels')}, inpainting needs 9")
        return Configs(
            acsdk=self.config,
            unet=unet,
            vae=_read_config(r, "vae"),
            text_encoder=_read_config(r, "text_encoder"),
            blip2=_read_config(r, "blip2"),
            scheduler=_read_config(r, "scheduler", "scheduler_config.json"),
            tokenizer=_load_part(r, "tokenizer", CLIPTokenizer.from_pretrained),
            qformer_tokenizer=_load_part(r, "qformer_tokenizer", BertTokenizer.from_pretrained),
        )

    def adapter_state(self) -> dict[str, torch.Tensor]:
        file = self.root / ADAPTER_FILE
        if not file.is_file():
            raise CheckpointError("adapter", file, "missing file")
        return _load_part(self.root, "adapter", lambda p: load_file(str(file)))

    def unet(self, dtype: torch.dtype = torch.float32) -> UNet2DConditionModel:
        """The inpainting UNet with its SGA processors and their trained weights."""
        self.configs  # noqa: B018  (checks in_channels before loading 3.4 GB)
        unet = _load_pretrained(self.root, "unet", UNet2DConditionModel, torch_dtype=dtype)
        install_sga(unet, self.config.num_semantic_tokens)
        state = {k: v for k, v in self.adapter_state().items() if k.startswith(SGA_PREFIX)}
        check_state(sga_state_dict(unet), state, self.root / ADAPTER_FILE)
        load_sga_state_dict(unet, state)
        return unet.eval().requires_grad_(False)

    def vae(self, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
        return _load_pretrained(self.root, "vae", AutoencoderKL, torch_dtype=dtype).eval().requires_grad_(False)

    def text_encoder(self, dtype: torch.dtype = torch.float32) -> CLIPTextModel:
        return _load_pretrained(self.root, "text_encoder", CLIPTextModel, dtype=dtype).eval().requires_grad_(False)

    def blip2(self) -> Blip2ForImageTextRetrieval:
        """Vision tower and Q-Former; eager attention, because ASEA reads the cross-attention probabilities."""
        model = _load_pretrained(
            self.root, "blip2", Blip2ForImageTextRetrieval, dtype=torch.float32, attn_implementation="eager"
        )
        return model.eval().requires_grad_(False)

    def vision(self) -> Blip2VisionModel:
        """The vision tower alone (ViT-g: 1 B parameters), without allocating the rest of BLIP-2."""
        config = Blip2Config.from_dict(self.configs.blip2)
        with torch.device("meta"):
            model = Blip2VisionModel._from_config(config.vision_config, attn_implementation="eager")
        state = self._blip2_tensors(("vision_model.",), strip="vision_model.")
        _load_part(self.root, "blip2", lambda p: model.load_state_dict(state, strict=True, assign=True))
        return model.eval().requires_grad_(False)

    def qformer(self) -> QFormer:
        """Queries, text embeddings and Q-Former alone (what ASEA and the csm_qformer engine need)."""
        qformer = QFormer.from_config(Blip2Config.from_dict(self.configs.blip2))
        state = self._blip2_tensors(("query_tokens", "embeddings.", "qformer."))
        buffers = {name for name, _ in qformer.named_buffers()}
        result = qformer.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if k not in buffers]
        if missing or result.unexpected_keys:
            extra = result.unexpected_keys[:4]
            problem = f"Q-Former weights do not match its config: missing {missing[:4]}, unexpected {extra}"
            raise CheckpointError("blip2", self.root / "blip2", problem)
        return qformer.eval().requires_grad_(False)

    def projection(self) -> SemanticProjection:
        """BlipProj + ImageProj with their trained weights."""
        c = self.configs
        proj = SemanticProjection(
            c.blip2["qformer_config"]["hidden_size"],
            self.config.blip_proj_dim,
            c.unet["cross_attention_dim"],
            self.config.num_semantic_tokens,
        )
        state = {k: v for k, v in self.adapter_state().items() if not k.startswith(SGA_PREFIX)}
        check_state(proj.state_dict(), state, self.root / ADAPTER_FILE)
        proj.load_state_dict(state)
        return proj.eval().requires_grad_(False)

    def _blip2_tensors(self, prefixes: tuple[str, ...], strip: str = "") -> dict[str, torch.Tensor]:
        """The BLIP-2 weights whose names start with one of `prefixes` (`strip` removed), read from its safetensors
        file(s) without loading the rest."""
        folder = self.root / "blip2"
        index = folder / "model.safetensors.index.json"
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else []
        files = [folder / f for f in files] or [folder / "model.safetensors"]
        out = {}
        for file in files:
            if not file.is_file():
                raise CheckpointError("blip2", file, "missing weights file")
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    if key.startswith(prefixes):
                        out[key.removeprefix(strip)] = f.get_tensor(key)
        return out


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
    def configs(self) -> Configs:
        return Configs(
            self.config,
            dict(self.unet.config),
            dict(self.vae.config),
            self.text_encoder.config.to_dict(),
            self.blip2.config.to_dict(),
            self.scheduler_config,
            self.tokenizer,
            self.qformer_tokenizer,
        )

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
        return {**self.projection.state_dict(), **sga_state_dict(self.unet)}

    def load_adapter_state_dict(self, state: Mapping[str, torch.Tensor], source: object = "adapter") -> None:
        """Load adapter weights strictly: a missing, extra or mis-shaped key names itself."""
        check_state(self.adapter_state_dict(), state, source)
        with torch.no_grad():
            self.projection.load_state_dict({k: v for k, v in state.items() if not k.startswith(SGA_PREFIX)})
        load_sga_state_dict(self.unet, {k: v for k, v in state.items() if k.startswith(SGA_PREFIX)})

    # -- persistence -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> AnomalyControlModel:
        ckpt = Checkpoint(path)
        c = ckpt.configs
        scheduler = DDIMScheduler.from_config(c.scheduler)
        model = cls(
            ckpt.config,
            ckpt.unet(dtype),
            ckpt.vae(dtype),
            ckpt.text_encoder(dtype),
            c.tokenizer,
            scheduler,
            ckpt.blip2(),
            c.qformer_tokenizer,
            projection=ckpt.projection(),
        )
        log.info("loaded checkpoint %s", ckpt.root)
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
