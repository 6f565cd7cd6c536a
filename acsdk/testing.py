"""Test helpers: tiny random checkpoints in the real format, textures, defects and masks (offline)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .models.presets import TINY_RESOLUTION, build_model


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
