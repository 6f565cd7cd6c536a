"""The synthesis baselines every anomaly-generation paper compares against, drawn on the fly from normal images.

perlin (DRAEM, Zavrtanik et al. 2021): a thresholded Perlin-noise mask whose inside is a texture blended with the
image at opacity 1 - beta, beta ~ U(0, 0.8). DRAEM's textures are DTD images; with none given, the source is
another normal image of the category with its colours remixed (channel permutation, inversion, gain), which
keeps the baseline offline. cutpaste (Li et al. 2021): a rectangle cut from the image, colour-jittered and pasted
elsewhere; the label is the pasted rectangle.

Both take and return float H x W x 3 images in [0, 1] and an H x W bool mask, from a numpy Generator.
"""

from __future__ import annotations

import numpy as np

BASELINES = ("perlin", "cutpaste")


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient noise in about [-1, 1] with `res` lattice cells per axis (shape must be a multiple of res)."""
    (h, w), (ry, rx) = shape, res
    angles = rng.uniform(0, 2 * np.pi, size=(ry + 1, rx + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y, x = np.meshgrid(np.arange(h) * ry / h, np.arange(w) * rx / w, indexing="ij")
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = y - y0, x - x0

    def dot(dy: int, dx: int) -> np.ndarray:
        g = grad[y0 + dy, x0 + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    uy, ux = fade(fy), fade(fx)
    top = dot(0, 0) * (1 - ux) + dot(0, 1) * ux
    bottom = dot(1, 0) * (1 - ux) + dot(1, 1) * ux
    return np.sqrt(2) * (top * (1 - uy) + bottom * uy)


def perlin_mask(size: int, rng: np.random.Generator, threshold: float = 0.5) -> np.ndarray:
    """DRAEM's mask: noise at lattice scale 2^k (k in 0..6 per axis, as in DRAEM) above `threshold`."""
    for _ in range(100):
        ry, rx = 2 ** rng.integers(0, 7, size=2)
        side = int(np.ceil(size / 64) * 64)  # a multiple of every scale; cropped back to size
        noise = perlin_noise((side, side), (int(ry), int(rx)), rng)[:size, :size]
        mask = noise > threshold
        if mask.any():
            return mask
    raise RuntimeError("Perlin noise gave no anomaly region in 100 draws")  # noise in [-1, 1]: never at 0.5


def _remix(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A texture source from a normal image: permuted channels, maybe inverted, with a random gain."""
    out = image[..., rng.permutation(3)]
    if rng.random() < 0.5:
        out = 1.0 - out
    return np.clip(out * rng.uniform(0.6, 1.4), 0, 1)


def perlin_anomaly(image: np.ndarray, source: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM's augmentation of `image` with texture from `source` (another normal image or a texture)."""
    mask = perlin_mask(image.shape[0], rng)
    texture = _remix(source, rng)
    beta = rng.uniform(0.0, 0.8)
    m = mask[..., None]
    out = image * (1 - m) + (1 - beta) * texture * m + beta * image * m
    return np.clip(out, 0, 1).astype(np.float32), mask


def cutpaste_anomaly(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste (the rectangle variant): area 2-15 % of the image, aspect ratio in [0.3, 3.3]."""
    h, w = image.shape[:2]
    area = rng.uniform(0.02, 0.15) * h * w
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3)))
    ph = int(np.clip(round(np.sqrt(area * aspect)), 2, h - 1))
    pw = int(np.clip(round(np.sqrt(area / aspect)), 2, w - 1))
    sy, sx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    patch = image[sy : sy + ph, sx : sx + pw].copy()
    patch = (patch - patch.mean()) * rng.uniform(0.9, 1.1) + patch.mean() + rng.uniform(-0.1, 0.1, size=3)
    ty, tx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    out, mask = image.copy(), np.zeros((h, w), dtype=bool)
    out[ty : ty + ph, tx : tx + pw] = patch
    mask[ty : ty + ph, tx : tx + pw] = True
    return np.clip(out, 0, 1).astype(np.float32), mask
