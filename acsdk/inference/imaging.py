"""Image and mask handling: accept what factory code has, validate it, resize, blur and paste back.

Images enter as PIL images, numpy arrays or paths, of any size, 8 to 32 bits, gray, RGB or RGBA; a `Picture`
keeps them as they came, and the model reads windows of them as float [3, h, w] in [0, 1]. A mask is a float
tensor [H, W] in {0, 1}.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError, check_int
from .windows import Window, crop, reference_window

ImageLike = Image.Image | np.ndarray | str | os.PathLike

_ARRAY_KINDS = "uint8, uint16, 32-bit integer, bool, or float in [0, 1]"


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


MAX_PIXELS = 100_000_000  # a documented limit: a clear error instead of running out of memory
_LUMA = (0.299, 0.587, 0.114)  # how PIL turns RGB into L; results go back to grayscale the same way


@dataclass
class Picture:
    """An input image as it came (its dtype, bit depth and mode kept) and its view as RGB in [0, 1].

    Results are composed into a copy of `pixels`, so every pixel the blend does not reach keeps its exact input
    value, and 16-bit (or 12-bit in 16) camera images are never squeezed through 8 bits.
    """

    pixels: np.ndarray  # HxWxC native array, C in {1, 3, 4}
    scale: float  # full scale of `pixels` (255, 65535, 2**bit_depth - 1, or 1.0 for floats)
    mode: str | None  # PIL mode the result is given back in, None where PIL has none (16-bit RGB)

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    def rgb(self, window: Window | None = None) -> torch.Tensor:
        """Float [3, h, w] in [0, 1], of the whole image or of a window (edge pixels replicated past the image)."""
        if window is None:
            return _to_rgb_float(self.pixels, self.scale)
        rows, cols, _, _ = window.within(self.height, self.width)
        return crop(_to_rgb_float(self.pixels[rows, cols], self.scale), window.shifted(rows.start, cols.start))

    def compose(self, patches: list[tuple[Window, torch.Tensor, torch.Tensor]]) -> np.ndarray:
        """A copy of `pixels` with each window's generated RGB [3, h, w] pasted by its blend [h, w]:
        out = b * generated + (1 - b) * input, written only where b > 0 (elsewhere: the input's values)."""
        out = self.pixels.copy()
        for window, generated, blend in patches:
            rows, cols, wrows, wcols = window.within(self.height, self.width)
            b = blend[wrows, wcols]
            region = out[rows, cols]
            orig = _to_rgb_float(region, self.scale)
            mixed = (b[None] * generated[:, wrows, wcols].float() + (1 - b[None]) * orig).clamp(0, 1)
            native = _from_rgb_float(mixed, region, self.scale)
            touched = (b > 0).numpy()
            region[touched] = native[touched]
        return out

    def to_pil(self, pixels: np.ndarray) -> Image.Image | None:
        """`pixels` (this picture's layout) as a PIL image of the input's mode; None where PIL has no such mode."""
        if self.mode is None:
            return None
        arr = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
        native = {"I;16": np.uint16, "I": np.int32, "F": np.float32}.get(self.mode, np.uint8)
        return Image.fromarray(np.ascontiguousarray(arr.astype(native)))  # PIL picks the mode from the dtype


def _to_rgb_float(pixels: np.ndarray, scale: float) -> torch.Tensor:
    unit = torch.from_numpy(np.ascontiguousarray(pixels[:, :, :3]).astype(np.float32) / np.float32(scale))
    unit = unit.permute(2, 0, 1)
    return unit.expand(3, -1, -1).contiguous() if unit.shape[0] == 1 else unit.contiguous()


def _from_rgb_float(rgb: torch.Tensor, like: np.ndarray, scale: float) -> np.ndarray:
    """RGB [3, h, w] in [0, 1] in the layout and dtype of `like` (gray by PIL's luma weights; alpha kept)."""
    if like.shape[2] == 1:
        values = sum(w * rgb[i] for i, w in enumerate(_LUMA))[None]
    else:
        values = rgb
    arr = values.permute(1, 2, 0).numpy()
    if np.issubdtype(like.dtype, np.floating):
        native = arr.astype(like.dtype)
    else:
        native = np.clip(np.round(arr * scale), 0, scale).astype(like.dtype)
    if like.shape[2] == 4:
        native = np.concatenate([native, like[:, :, 3:]], axis=2)
    return native


def load_picture(value: ImageLike, argument: str = "image", bit_depth: int | None = None) -> Picture:
    """Read an image of any supported kind, keeping its native values (see `Picture`).

    8-bit images (RGB, L, RGBA, palette) scale by 255; 16-bit ones (PIL I;16, uint16 arrays) by 65535, or by
    2**bit_depth - 1 when a bit depth is declared (12-bit data in 16-bit files); 32-bit integer images by their
    declared depth, else 65535 when their values fit 16 bits; floats must lie in [0, 1].
    """
    src = _open(value, argument)
    mode: str | None
    if isinstance(src, Image.Image):
        if src.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
            arr, mode = np.asarray(src).astype(np.uint16), "I;16"
        elif src.mode in ("I", "F", "L", "RGB", "RGBA"):
            arr, mode = np.asarray(src), src.mode
        elif src.mode in ("P", "LA", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
            keep_alpha = src.mode in ("LA", "PA") or (src.mode == "P" and "transparency" in src.info)
            mode = "RGBA" if keep_alpha else "RGB"
            arr = np.asarray(src.convert(mode))
        else:
            raise InputError(argument, "an image of mode RGB, L, RGBA, I;16, I or F", _describe(src))
    else:
        arr, mode = src, None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(argument, "an array of shape HxW, HxWx1, HxWx3 or HxWx4", _describe(src))
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(argument, "a non-empty image", _describe(src))
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        got = f"{arr.shape[0]} x {arr.shape[1]} = {arr.shape[0] * arr.shape[1] / 1e6:.0f} megapixels"
        raise InputError(argument, f"at most {MAX_PIXELS // 1_000_000} megapixels (tile larger images)", got)
    arr, scale = _scaled(arr, argument, bit_depth)
    if mode is None:
        mode = _array_mode(arr)
    return Picture(np.ascontiguousarray(arr), scale, mode)


def _scaled(arr: np.ndarray, argument: str, bit_depth: int | None) -> tuple[np.ndarray, float]:
    check_int("bit_depth", bit_depth, 1, optional=True)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255, 255.0
    if arr.dtype.byteorder == ">":  # big-endian 16-bit PIL data
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError(argument, "finite values", "an array containing NaN or Inf")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(argument, "values in [0, 1] for a float array", f"values in [{lo:g}, {hi:g}]")
        return arr.astype(np.float32), 1.0
    if arr.dtype not in (np.uint8, np.uint16, np.int32, np.uint32):
        raise InputError(argument, f"an array of dtype {_ARRAY_KINDS}", _describe(arr))
    if arr.dtype in (np.int32, np.uint32):
        if int(arr.min()) < 0:
            raise InputError(argument, "non-negative values in a 32-bit integer image", f"minimum {int(arr.min())}")
        natural = 16 if int(arr.max()) <= 65535 else 32
    else:
        natural = 8 * arr.dtype.itemsize
    depth = bit_depth or natural
    scale = float(2**depth - 1)
    if int(arr.max()) > scale:
        raise InputError(argument, f"values of at most {int(scale)} ({depth}-bit)", f"maximum {int(arr.max())}")
    return arr, scale


def _array_mode(arr: np.ndarray) -> str | None:
    """The PIL mode an array's results are given back in, None where PIL has none (16-bit colour)."""
    gray = arr.shape[2] == 1
    if arr.dtype == np.uint8:
        return "L" if gray else ("RGB" if arr.shape[2] == 3 else "RGBA")
    if arr.dtype == np.uint16:
        return "I;16" if gray else None
    if arr.dtype in (np.int32, np.uint32):
        return "I" if gray else None
    return "F" if gray else None


def load_image(value: ImageLike, argument: str = "image") -> torch.Tensor:
    """An image as RGB float [3, H, W] in [0, 1] (grayscale replicated, alpha dropped)."""
    return load_picture(value, argument).rgb()


def load_mask(value: ImageLike, argument: str = "mask") -> torch.Tensor:
    """Return a binary mask float [H, W] in {0, 1} by `read_mask`'s rule."""
    return torch.from_numpy(read_mask(value, argument)).float()


def read_mask(value: ImageLike, argument: str = "mask") -> np.ndarray:
    """The one mask reader (inference, generate, evaluation): bool [H, W]. A pixel is defect when its value is above
    half its type's range (0/255, 0/65535, floats in [0, 1]); an integer mask holding only 0 and 1 (a label map
    saved without scaling) counts its 1s. Colour masks count their brightest channel; alpha is ignored."""
    src = _open(value, argument)
    if isinstance(src, Image.Image):
        keep = src.mode in ("L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F", "RGB", "RGBA")
        src = np.asarray(src if keep else src.convert("L"))
        src = src.astype(np.uint16) if src.dtype.byteorder == ">" else src
    arr = src
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, :3].max(axis=2)
    if arr.ndim != 2:
        raise InputError(argument, "a single-channel mask (HxW or HxWx1)", _describe(src))
    if arr.dtype.kind in "iu" and arr.size and arr.max() == 1 and arr.min() >= 0:
        return arr == 1  # 0/1 label map
    values, scale = _scaled(arr, argument, None)
    return values.astype(np.float32) / np.float32(scale) > 0.5


def read_rgb8(value: ImageLike, argument: str = "image") -> np.ndarray:
    """The one 8-bit RGB reader (generate's contact sheets, evaluation, LPIPS, Inception): uint8 [H, W, 3], deeper
    images scaled by their depth as `load_picture` reads them, grey replicated, alpha dropped."""
    rgb = load_picture(value, argument).rgb()
    return (rgb.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def check_pair(size: tuple[int, int], mask: torch.Tensor, image_arg: str, mask_arg: str) -> None:
    """`mask` must have the image's (H, W) and at least one defect pixel."""
    if tuple(size) != tuple(mask.shape):
        raise InputError(
            mask_arg, f"the size of {image_arg} (H x W = {size[0]} x {size[1]})", f"{mask.shape[0]} x {mask.shape[1]}"
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
    # (separable: a k x k max pool costs k^2 per pixel, two 1-D pools 2k; at 2048 px and sigma 20, 40 s vs 0.1 s)
    reach = F.max_pool2d(mask[None, None].float(), (1, 2 * radius + 1), stride=1, padding=(0, radius))
    reach = F.max_pool2d(reach, (2 * radius + 1, 1), stride=1, padding=(radius, 0))
    return (m * (reach > 0)).clamp(0.0, 1.0)[0, 0]


def blend_mask(label: torch.Tensor, sigma: float) -> torch.Tensor:
    """1 on the label, a Gaussian feather outward from it (exactly 0 beyond 3 sigma): the paste never weakens the
    painted defect inside the label, so label and pixels agree."""
    return torch.maximum(label.float(), gaussian_blur_mask(label, sigma))


def reference_inputs(
    image: torch.Tensor, mask: torch.Tensor, window: str, size: int, mean: tuple, std: tuple, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """What CSM and ASEA read of a reference: the vision tower's pixels [1, 3, size, size] and the mask's coverage of
    the attention grid. `window` is the checkpoint's `reference_window`: "full" reads the whole image (the paper),
    "defect" a square around the defect (`windows.reference_window`); training and inference share this."""
    if window == "defect":
        win = reference_window(mask)
        image, mask = crop(image, win), crop(mask[None], win, fill="zeros")[0]
    return vision_pixels(image, size, mean, std), mask_coverage(mask, *grid)
