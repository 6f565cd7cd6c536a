"""The acsdk part of a checkpoint's configuration (`acsdk.json`); model sizes live in each part's own config."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import BertTokenizer, CLIPTokenizer

from ..errors import CheckpointError

FORMAT = "acsdk-checkpoint"
FORMAT_VERSION = 1
CONFIG_NAME = "acsdk.json"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_NEGATIVE_PROMPT = "monochrome, lowres, bad anatomy, worst quality, low quality"
REFERENCE_WINDOWS = ("full", "defect")


@dataclass(frozen=True)
class ModelConfig:
    height: int = 512
    width: int = 512
    num_semantic_tokens: int = 4
    blip_proj_dim: int = 1024
    qformer_max_length: int = 32
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    # What CSM reads of a reference: "full" (the whole image, as the paper) or "defect" (a window around its
    # defect, for small defects on large images). Fixed per checkpoint: the adapter is trained on one of them.
    reference_window: str = "full"

    def to_json(self) -> str:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}
        return json.dumps(data, indent=2)

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        file = Path(path) / CONFIG_NAME
        if not file.is_file():
            raise CheckpointError("acsdk.json", file, "missing; is this an acsdk checkpoint directory?")
        try:
            data = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError("acsdk.json", file, f"not readable JSON ({exc})") from exc
        if data.pop("format", None) != FORMAT:
            raise CheckpointError("acsdk.json", file, f"'format' is not '{FORMAT}'")
        version = data.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise CheckpointError(
                "acsdk.json", file, f"format_version {version!r} is not supported (this acsdk reads {FORMAT_VERSION})"
            )
        if data.get("extra") == {}:
            del data["extra"]  # acsdk 0.1.0 wrote an always-empty "extra"; nothing ever read it
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError("acsdk.json", file, f"unknown keys {unknown}")
        if data.get("reference_window", "full") not in REFERENCE_WINDOWS:
            raise CheckpointError("acsdk.json", file, f"reference_window must be one of {REFERENCE_WINDOWS}")
        for key in ("image_mean", "image_std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class Configs:
    """Everything that sizes an AnomalyControl model, without weights: what a checkpoint's config files hold
    (read cheaply by `Checkpoint.configs`, or made by a preset)."""

    acsdk: ModelConfig
    unet: dict
    vae: dict
    text_encoder: dict
    blip2: dict
    scheduler: dict
    tokenizer: CLIPTokenizer
    qformer_tokenizer: BertTokenizer

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def vision_image_size(self) -> int:
        return int(self.blip2["vision_config"]["image_size"])

    @property
    def attention_grid(self) -> tuple[int, int]:
        n = self.vision_image_size // int(self.blip2["vision_config"]["patch_size"])
        return (n, n)
