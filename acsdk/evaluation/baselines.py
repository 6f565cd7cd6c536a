"""The synthesis baselines every anomaly-generation paper compares against, drawn on the fly from normal images.

perlin (DRAEM, Zavrtanik et al. 2021): a Perlin-noise mask as DRAEM draws it (lattice scales 2^0..2^5 at 256 px,
relative to the image at other sizes, rotated by U(-90, 90) degrees, thresholded at 0.5) whose inside is a texture
blended with the image at opacity 1 - beta, beta ~ U(0, 0.8). DRAEM's textures are DTD images; with none given, the
source is another normal image of the category with its colours remixed (channel permutation, inversion, gain),
which keeps the baseline offline. cutpaste (Li et al. 2021): a rectangle cut from the image, colour-jittered and pasted
elsewhere; the label is the pasted rectangle.

Both take and return float H x W x 3 images in [0, 1] and an H x W bool mask, from a numpy Generator.
"""

from __future__ import annotations

import numpy as np

BASELINES = ("perlin", "cutpaste")


# DRAEM's Perlin mask (VitjanZ/DRAEM, data_loader.py), at its 256 px training size: lattice cells per axis 2^k with
# k ~ U{0, ..., 5} per axis (`torch.randint(0, 6)`), the noise image rotated by an angle ~ U(-90, 90) degrees
# (imgaug `Affine(rotate=(-90, 90))`, which fills what rotates in from outside with 0), then thresholded at 0.5.
PERLIN_SCALE_EXPONENTS = (0, 6)  # half-open, as torch.randint: 2^0..2^5 cells per axis
PERLIN_ROTATION_DEGREES = 90.0  # the angle is uniform in [-90, 90]
PERLIN_THRESHOLD = 0.5


def perlin_noise(
    shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator, angle: float = 0.0
) -> np.ndarray:
    """2-D gradient noise in about [-1, 1] with `res` lattice cells across each axis of the image, rotated by `angle`
    degrees about the image centre; pixels whose rotated position falls outside the image are 0 (DRAEM's fill).

    The lattice spans the whole image whatever its size in pixels, so a blob covers the same fraction of a 64 px
    image as of a 256 px one (the image size scales the periods). Rotation evaluates the noise at the rotated
    coordinates (exact, where DRAEM interpolates the rotated noise image bilinearly).
    """
    (h, w), (ry, rx) = shape, res
    angles = rng.uniform(0, 2 * np.pi, size=(ry + 1, rx + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    if angle:
        a = np.deg2rad(angle)
        cy, cx = (h - 1) / 2, (w - 1) / 2
        yy, xx = (
            np.cos(a) * (yy - cy) - np.sin(a) * (xx - cx) + cy,
            np.sin(a) * (yy - cy) + np.cos(a) * (xx - cx) + cx,
        )
    eps = 1e-6  # a pixel rotated onto the border (90 degrees) stays inside despite rounding
    inside = (yy > -eps) & (yy < h - 1 + eps) & (xx > -eps) & (xx < w - 1 + eps)
    y = np.clip(yy, 0, h - 1) * ry / h
    x = np.clip(xx, 0, w - 1) * rx / w
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
    return np.where(inside, np.sqrt(2) * (top * (1 - uy) + bottom * uy), 0.0)


def perlin_parameters(rng: np.random.Generator) -> tuple[int, int, float]:
    """DRAEM's draw: lattice cells per axis (2^k each, k uniform in 0..5) and the rotation angle in degrees."""
    ky, kx = rng.integers(*PERLIN_SCALE_EXPONENTS, size=2)
    return 2 ** int(ky), 2 ** int(kx), float(rng.uniform(-PERLIN_ROTATION_DEGREES, PERLIN_ROTATION_DEGREES))


def perlin_mask(size: int, rng: np.random.Generator, threshold: float = PERLIN_THRESHOLD) -> np.ndarray:
    """DRAEM's mask at `size` px: rotated Perlin noise above `threshold`, with DRAEM's scales relative to the image
    (the lattice spans the image, so blobs keep their relative size at any `size`). An empty draw is drawn again."""
    for _ in range(100):
        ry, rx, angle = perlin_parameters(rng)
        mask = perlin_noise((size, size), (ry, rx), rng, angle) > threshold
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
