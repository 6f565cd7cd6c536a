"""Benchmark configurations: random models of a preset's size, built once and cached with their engines."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from acsdk.inference.settings import SamplingSettings
from acsdk.models.presets import build_model, preset_configs
from runtime.files import cache_dir

log = logging.getLogger(__name__)

# Paper settings (SamplingSettings' defaults): 50 DDIM steps at strength 0.7 (35 UNet calls), CFG 7, ASEA 5 steps.
PAPER = {k: v for k, v in SamplingSettings().as_dict().items() if k != "semantic_scale"}


@dataclass(frozen=True)
class BenchConfig:
    name: str
    end_to_end: bool  # whole images are practical on CPU
    resolutions: tuple[int, ...]  # UNet scaling
    batches: tuple[int, ...]

    @property
    def resolution(self) -> int:
        return preset_configs(self.name).acsdk.height


CONFIGS = {
    "tiny": BenchConfig("tiny", True, (64, 96, 128), (1, 2, 4)),
    "small": BenchConfig("small", True, (256, 384, 512), (1, 2, 4)),
    "sd15": BenchConfig("sd15", False, (512,), (2,)),
}


def checkpoint(config: str, root: Path | None = None) -> Path:
    path = (root or cache_dir() / "bench") / config / "checkpoint"
    if not (path / "acsdk.json").is_file():
        log.info("building the random %s checkpoint in %s", config, path)
        build_model(config, seed=0).save_pretrained(path, overwrite=True)
    return path


def engines(
    config: str,
    resolution: int | None = None,
    components: list[str] | None = None,
    max_batch: int = 2,
    opset: int = 18,
    root: Path | None = None,
) -> Path:
    """The config's fp32 ONNX engine dir at `resolution` (default: the preset's), built on first use."""
    from export.build import build_engine_dir

    res = resolution or preset_configs(config).acsdk.height
    tag = f"engines-{res}-b{max_batch}-o{opset}" + ("-" + "-".join(components) if components else "")
    path = (root or cache_dir() / "bench") / config / tag
    if not (path / "manifest.json").is_file():
        build_engine_dir(
            checkpoint(config, root),
            path,
            backend="onnxruntime",
            height=res,
            width=res,
            max_batch=max_batch,
            opset=opset,
            components=components,
            force=True,
            progress=True,
        )
    return path
