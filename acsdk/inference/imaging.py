"""Image and mask handling: accept what factory code has, validate it, blur and paste back.

Images enter as PIL images, numpy arrays or paths, in modes RGB, L or RGBA, of any size. Internally an
image is a float tensor [3, H, W] in [0, 1] and a mask a float tensor [H, W] in {0, 1}.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError

ImageLike = Image.Image | np.ndarray | str | os.PathLike

_ARRAY_KINDS = "uint8, bool, or float in [0, 1]"


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, Image.Image):
        return f"PIL image of mode {value.mode} and size {value.size}"
    return f"{type(value).__name__}"


def _open(value: ImageLike, argument: str) -> Image.Image | np.ndarray:
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise InputError(argument, "an image file", f"'{path}', which does not exist")
        try:
            with Image.open(path) as im:
                im.load()
                return im.copy()
        except Exception as exc:  # PIL raises many types for unreadable files
            raise InputError(argument, "a readable image file", f"'{path}' ({exc})") from exc
    if isinstance(value, (Image.Image, np.ndarray)):
        return value
    raise InputError(argument, "a PIL image, a numpy array or a path", _describe(value))


def _array_to_unit_float(arr: np.ndarray, argument: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError(argument, "finite values", "an array containing NaN or Inf")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(argument, "values in [0, 1] for a float array", f"values in [{lo:g}, {hi:g}]")
        return arr.astype(np.float32)
    raise InputError(argument, f"an array of dtype {_ARRAY_KINDS}", _describe(arr))


def load_image(value: ImageLike, argument: str = "image") -> torch.Tensor:
    """Return an RGB image as float [3, H, W] in [0, 1]; grayscale is replicated, alpha dropped."""
    src = _open(value, argument)
    if isinstance(src, Image.Image):
        if src.mode not in ("RGB", "L", "RGBA", "I;16", "I", "F", "P", "LA"):
            raise InputError(argument, "an image of mode RGB, L or RGBA", _describe(src))
        src = np.asarray(src.convert("RGB"))
    arr = src
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(argument, "an array of shape HxW, HxWx1, HxWx3 or HxWx4", _describe(src))
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(argument, "a non-empty image", _describe(src))
    unit = _array_to_unit_float(arr, argument)[:, :, :3]
    if unit.shape[2] == 1:
        unit = np.repeat(unit, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(unit)).permute(2, 0, 1).contiguous()


def load_mask(value: ImageLike, argument: str = "mask") -> torch.Tensor:
    """Return a binary mask float [H, W] in {0, 1}; values above one half count as defect."""
    src = _open(value, argument)
    if isinstance(src, Image.Image):
        src = np.asarray(src.convert("L"))
    arr = src
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, :3].max(axis=2)
    if arr.ndim != 2:
        raise InputError(argument, "a single-channel mask (HxW or HxWx1)", _describe(src))
    unit = _array_to_unit_float(arr, argument)
    return torch.from_numpy((unit > 0.5).astype(np.float32))


def check_pair(image: torch.Tensor, mask: torch.Tensor, image_arg: str, mask_arg: str) -> None:
    if tuple(image.shape[1:]) != tuple(mask.shape):
        raise InputError(
            mask_arg,
            f"the size of {image_arg} (H x W = {image.shape[1]} x {image.shape[2]})",
            f"{mask.shape[0]} x {mask.shape[1]}",
        )
    if not bool(mask.any()):
        raise InputError(mask_arg, "a mask with at least one defect pixel (value > 0.5)", "an empty mask")


def resize_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize with antialiasing of a [3, H, W] image, clamped to [0, 1]."""
    if tuple(image.shape[1:]) == (height, width):
        return image
    out = F.interpolate(image[None], size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return out[0].clamp(0.0, 1.0)


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest resize that never loses a defect: a target pixel is set when any source pixel it covers is."""
    if tuple(mask.shape) == (height, width):
        return mask
    m = mask[None, None].float()
    big = (max(height, mask.shape[0]), max(width, mask.shape[1]))
    if big != tuple(mask.shape):
        m = F.interpolate(m, size=big, mode="nearest")
    area = F.adaptive_max_pool2d(m, (height, width))
    return (area[0, 0] > 0).to(mask.dtype)


def latent_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, 1, H, W] mask -> {0, 1} float at latent size; a latent pixel is masked when any pixel it covers is."""
    return (F.adaptive_max_pool2d(mask.float(), tuple(size)) > 0).float()


def vision_pixels(image: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """A [3, H, W] image as the vision tower's input: resized to size x size, normalised, [1, 3, size, size]."""
    resized = resize_image(image, size, size)
    return ((resized - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))[None]


def mask_coverage(mask: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fraction of each attention-grid cell covered by the mask (area interpolation).

    The authors resize with nearest twice, which drops a defect smaller than a cell and zeroes ASEA's
    gradient; the area fraction keeps every defect pixel's weight.
    """
    return F.adaptive_avg_pool2d(mask[None, None].float(), (grid_h, grid_w))[0, 0]


def default_blur_sigma(height: int, width: int) -> float:
    """The paper's sigma of 5 px at 512 px, scaled with the image's longer side."""
    return 5.0 * max(height, width) / 512.0


def gaussian_blur_mask(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur truncated at 3 sigma: pixels beyond that reach stay exactly 0."""
    if sigma <= 0:
        return mask.clone()
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(torch.float32)
    m = mask[None, None].float()
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0)), kernel.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, radius, radius)), kernel.view(1, 1, -1, 1))
    # Exact zeros outside the reach: conv of zeros is zero, but rounding can leave 1e-9 residue.
    reach = F.max_pool2d(mask[None, None].float(), 2 * radius + 1, stride=1, padding=radius)
    return (m * (reach > 0)).clamp(0.0, 1.0)[0, 0]


def soft_paste(original: torch.Tensor, generated: torch.Tensor, blend: torch.Tensor) -> np.ndarray:
    """out = b*gen + (1-b)*orig as uint8 HxWx3; where b is 0 the original's bytes are kept as they are."""
    orig_u8 = to_uint8(original)
    mixed = to_uint8(blend[None] * generated + (1.0 - blend[None]) * original)
    keep = (blend <= 0).numpy()[:, :, None]
    return np.where(keep, orig_u8, mixed)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] float in [0, 1] -> HxWx3 uint8, rounding to nearest."""
    return (image.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
