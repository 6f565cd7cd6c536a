"""A procedural MVTec-style dataset: textured parts with exact defect masks, for tests, the demo and training."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.files import atomic_dir

from ..errors import InputError

DEFECTS = ("hole", "scratch", "stain", "crack")


def _surface(size: int, rng: np.random.Generator, gray: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0.35, 0.65, size=3)
    waves = sum(
        0.06 * np.sin(2 * np.pi * (rng.uniform(1, 6) * xx + rng.uniform(1, 6) * yy) + rng.uniform(0, 6))
        for _ in range(3)
    )
    img = base[None, None, :] + waves[:, :, None] + rng.normal(0, 0.03, size=(size, size, 3))
    if gray:
        img = np.repeat(img.mean(axis=-1, keepdims=True), 3, axis=-1)
    return np.clip(img, 0, 1)


def _defect(kind: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(mask bool HxW, colour shift HxWx3) for one defect instance."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7, size=2) * size
    if kind == "hole":
        r = rng.uniform(0.06, 0.12) * size
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        shift = -0.35
    elif kind == "stain":
        ry, rx = rng.uniform(0.08, 0.16, size=2) * size
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        shift = np.array([0.15, 0.05, -0.15])
    elif kind in ("scratch", "crack"):
        a = rng.uniform(0, np.pi)
        half = rng.uniform(0.2, 0.35) * size
        t = np.linspace(-half, half, 400)
        wiggle = (rng.normal(0, 0.02 * size, 400).cumsum() * 0.1) if kind == "crack" else 0
        py, px = cy + t * np.sin(a) + wiggle, cx + t * np.cos(a)
        width = max(1.5, 0.025 * size) if kind == "scratch" else max(1.5, 0.02 * size)
        mask = np.zeros((size, size), dtype=bool)
        for y, x in zip(py, px, strict=True):
            mask |= (yy - y) ** 2 + (xx - x) ** 2 <= width**2
        shift = 0.3 if kind == "scratch" else -0.3
    else:
        raise InputError("kind", f"one of {DEFECTS}", repr(kind))
    return mask, np.broadcast_to(np.asarray(shift, dtype=np.float32), (3,))


def render_sample(kind: str, size: int, rng: np.random.Generator, gray: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One surface with one defect of `kind` ("good": none): (HxWx3 float image in [0, 1], HxW bool mask)."""
    img = _surface(size, rng, gray)
    if kind == "good":
        return img, np.zeros((size, size), dtype=bool)
    mask, shift = _defect(kind, size, rng)
    img[mask] = img[mask] + shift
    return np.clip(img, 0, 1), mask


def make_mvtec_like(
    root: str | os.PathLike,
    category: str = "plate",
    size: int = 64,
    n_good: int = 6,
    n_per_defect: int = 6,
    defects: tuple[str, ...] = ("hole", "scratch"),
    seed: int = 0,
    gray: bool = False,
    n_test_good: int = 2,
) -> Path:
    """Write ROOT/<category>/{train/good, test/good, test/<defect>, ground_truth/<defect>} with exact masks.

    The category is built in a temporary sibling and renamed into place: an existing one is refused, not mixed.
    """
    rng = np.random.default_rng(seed)
    if (Path(root) / category).exists():
        raise InputError("category", f"a category not yet under {root}", f"'{category}', which exists")
    with atomic_dir(Path(root) / category) as cat:
        for sub in ("train/good", "test/good"):
            (cat / sub).mkdir(parents=True)
        _write_category(cat, size, n_good, n_per_defect, defects, rng, gray, n_test_good)
    return Path(root)


def _write_category(
    cat: Path,
    size: int,
    n_good: int,
    n_per_defect: int,
    defects: tuple[str, ...],
    rng: np.random.Generator,
    gray: bool,
    n_test_good: int,
) -> None:

    def to_img(a: np.ndarray) -> Image.Image:
        u8 = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
        return Image.fromarray(u8[:, :, 0] if gray else u8)

    for i in range(n_good):
        to_img(_surface(size, rng, gray)).save(cat / "train/good" / f"{i:03d}.png")
    for i in range(n_test_good):
        to_img(_surface(size, rng, gray)).save(cat / "test/good" / f"{i:03d}.png")
    for kind in defects:
        (cat / "test" / kind).mkdir(parents=True, exist_ok=True)
        (cat / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_defect):
            img, mask = render_sample(kind, size, rng, gray)
            to_img(img).save(cat / "test" / kind / f"{i:03d}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(cat / "ground_truth" / kind / f"{i:03d}_mask.png")
