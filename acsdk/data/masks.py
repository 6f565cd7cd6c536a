"""Target masks for synthesis: reference masks of the same defect type under a random affine map,
kept on the object and within an area budget, never empty."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..errors import InputError


def _box_blur(x: np.ndarray, k: int) -> np.ndarray:
    pad = k // 2
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    c = np.cumsum(np.cumsum(x, axis=0), axis=1)
    c = np.pad(c, ((1, 0), (1, 0), (0, 0)))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def estimate_foreground(image: np.ndarray, threshold: float = 0.12) -> np.ndarray:
    """Pixels that differ from the border's median colour more than the border itself varies: the object.

    The image is blurred first so grain does not count. A texture (carpet, grid, tile...) varies at the
    border as much as inside; then, and whenever the estimate is implausible (under 5 % or over 95 % of
    the image), the whole image counts as foreground.
    """
    img = image.astype(np.float32) / 255.0
    if img.ndim == 2:
        img = img[:, :, None]
    img = _box_blur(img, max(3, (min(img.shape[:2]) // 32) | 1))
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    center = np.median(border, axis=0)
    distance = np.abs(img - center).max(axis=-1)
    border_spread = np.percentile(np.abs(border - center).max(axis=-1), 95)
    fg = distance > max(threshold, 1.5 * border_spread)
    frac = fg.mean()
    if frac < 0.05 or frac > 0.95:
        return np.ones(fg.shape, dtype=bool)
    return fg


def _affine(mask: np.ndarray, rng: np.random.Generator, scale_range: tuple[float, float]) -> np.ndarray:
    h, w = mask.shape
    im = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    angle = rng.uniform(-180, 180)
    s = rng.uniform(*scale_range)
    ys, xs = np.nonzero(np.asarray(im))
    cy, cx = (ys.mean(), xs.mean()) if len(ys) else (h / 2, w / 2)
    ty, tx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w  # where the defect's centre lands
    a = math.radians(angle)
    cos, sin = math.cos(a) / s, math.sin(a) / s
    # PIL maps output (x, y) to input: x_in = a*x + b*y + c, y_in = d*x + e*y + f
    coeffs = (cos, sin, cx - cos * tx - sin * ty, -sin, cos, cy + sin * tx - cos * ty)
    out = im.transform((w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.NEAREST)
    return np.asarray(out) > 0


def sample_target_mask(
    reference_masks: list[np.ndarray],
    shape: tuple[int, int],
    rng: np.random.Generator,
    foreground: np.ndarray | None = None,
    max_fraction: float = 0.25,
    scale_range: tuple[float, float] = (0.7, 1.3),
    tries: int = 20,
) -> np.ndarray:
    """A bool HxW mask: a reference mask moved, rotated, scaled and flipped; inside `foreground`; non-empty;
    covering at most `max_fraction` of the image."""
    if not reference_masks:
        raise InputError("reference_masks", "at least one mask", "none")
    h, w = shape
    fg = np.ones(shape, dtype=bool) if foreground is None else foreground
    budget = max(1, int(max_fraction * h * w))
    for _ in range(tries):
        src = reference_masks[int(rng.integers(len(reference_masks)))]
        if src.shape != shape:
            src = np.asarray(Image.fromarray((src > 0).astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST))
        area = max(1, int((src > 0).sum()))
        lo, hi = scale_range
        hi = min(hi, math.sqrt(budget / area))  # never scale past the area budget
        lo = min(lo, hi)
        mask = _affine(src, rng, (lo, hi)) & fg
        if 0 < mask.sum() <= budget:
            return mask
    # Fallback: a small disc on a random foreground pixel (never empty, always in bounds).
    ys, xs = np.nonzero(fg)
    i = int(rng.integers(len(ys)))
    r = max(1, int(0.05 * min(h, w)))
    yy, xx = np.ogrid[:h, :w]
    return (((yy - ys[i]) ** 2 + (xx - xs[i]) ** 2) <= r * r) & fg
