"""Context windows: where on a large image a defect is generated at model resolution, and how it goes back.

A small defect on a megapixel image is generated in a window around its mask (A1111's "only masked", diffusers'
`padding_mask_crop`, ComfyUI's crop-and-stitch), not in the whole image squashed to the model's size. A window is
the mask's bounding box grown by `padding`, at least `min_size`, at the model's aspect, moved inside the image;
masks whose windows would overlap share one. A window larger than the image in a direction extends past it,
filled by replicating the edge pixels (the model sees an undistorted picture; nothing outside the image is kept).

Three masks are kept apart:
  label       the input mask at the image's resolution: what the detector learns, returned unchanged
  generation  the label at the model's resolution inside the window (dilated to whole latent cells by the
              sampler): where the model paints
  blend       1 on the label, feathered outward with sigma 5 model pixels of the window, 0 beyond 3 sigma:
              how the painted window is pasted, so every label pixel carries the defect at full strength
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

FEATHER_SIGMA = 5.0  # model pixels at 512 (the paper's blur), scaled to the model's size
MODEL_REFERENCE_SIZE = 512


@dataclass(frozen=True)
class Window:
    """A rectangle in image pixels; it may extend past the image, where the edge pixels are replicated."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width

    def as_dict(self) -> dict:
        return asdict(self)

    def shifted(self, dy: int, dx: int) -> Window:
        """The same window in coordinates whose origin is (dy, dx)."""
        return Window(self.top - dy, self.left - dx, self.height, self.width)

    def within(self, height: int, width: int) -> tuple[slice, slice, slice, slice]:
        """(image rows, image cols, window rows, window cols) of the part of the window inside the image."""
        y0, x0 = max(self.top, 0), max(self.left, 0)
        y1, x1 = min(self.bottom, height), min(self.right, width)
        return (
            slice(y0, y1),
            slice(x0, x1),
            slice(y0 - self.top, y1 - self.top),
            slice(x0 - self.left, x1 - self.left),
        )


def feather_sigma(window: Window, model_size: tuple[int, int]) -> float:
    """The blend's sigma in image pixels: FEATHER_SIGMA model pixels (at 512) of this window."""
    model_px = FEATHER_SIGMA * max(model_size) / MODEL_REFERENCE_SIZE
    return model_px * max(window.height / model_size[0], window.width / model_size[1])


def plan_windows(
    mask: np.ndarray, model_size: tuple[int, int], padding: int, min_size: int
) -> tuple[list[Window], list[str]]:
    """Windows covering every defect pixel of `mask` (bool HxW), and notes on what was unusual."""
    from scipy import ndimage

    h, w = mask.shape
    labels, n = ndimage.label(mask)
    boxes = [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in ndimage.find_objects(labels)[:n]]
    windows = [_fit(b, h, w, model_size, padding, min_size) for b in boxes]
    merged = True
    while merged:  # near masks share a window: merge any two whose windows overlap, until none do
        merged = False
        for i in range(len(windows)):
            for j in range(i + 1, len(windows)):
                if _overlap(windows[i], windows[j]):
                    box = _union(boxes[i], boxes[j])
                    boxes = [b for k, b in enumerate(boxes) if k not in (i, j)] + [box]
                    windows = [x for k, x in enumerate(windows) if k not in (i, j)]
                    windows.append(_fit(box, h, w, model_size, padding, min_size))
                    merged = True
                    break
            if merged:
                break
    notes = []
    for win in windows:
        if win.top < 0 or win.left < 0 or win.bottom > h or win.right > w:
            notes.append(
                f"roi: window {win.as_dict()} is larger than the {h}x{w} image in a direction; the image's edges "
                "are replicated to fill it"
            )
    order = sorted(range(len(windows)), key=lambda k: (windows[k].top, windows[k].left))
    return [windows[k] for k in order], notes


def _fit(
    box: tuple[int, int, int, int], h: int, w: int, model_size: tuple[int, int], padding: int, min_size: int
) -> Window:
    y0, x0, y1, x1 = box
    mh, mw = model_size
    need_h, need_w = max(y1 - y0 + 2 * padding, min_size), max(x1 - x0 + 2 * padding, min_size)
    whole = max(h / mh, w / mw)  # the smallest window of the model's aspect holding the whole image
    while True:
        scale = max(need_h / mh, need_w / mw)
        # At the whole image's scale the window is the whole image's (below), reach or not, so the loop ends there
        # even where no window holds the reach: a model side of at most 6 feather sigmas (30/512 of the long side, an
        # aspect past ~17:1) never does. Where one does, this ends with the same window: scale only grows.
        if scale >= whole:
            break
        win_h, win_w = math.ceil(scale * mh), math.ceil(scale * mw)
        # The feather reaches 3 sigma past the label; keep that inside the window.
        reach = math.ceil(3 * feather_sigma(Window(0, 0, win_h, win_w), model_size))
        if win_h >= y1 - y0 + 2 * reach and win_w >= x1 - x0 + 2 * reach:
            break
        need_h, need_w = max(need_h, y1 - y0 + 2 * reach + 2), max(need_w, x1 - x0 + 2 * reach + 2)
    if scale >= whole:
        win_h, win_w = math.ceil(whole * mh), math.ceil(whole * mw)
    top = _place((y0 + y1) // 2 - win_h // 2, win_h, h)
    left = _place((x0 + x1) // 2 - win_w // 2, win_w, w)
    return Window(top, left, win_h, win_w)


def _place(start: int, size: int, limit: int) -> int:
    """Move [start, start + size) inside [0, limit); centre it on the image when it is larger than the image."""
    if size >= limit:
        return (limit - size) // 2
    return min(max(start, 0), limit - size)


def _overlap(a: Window, b: Window) -> bool:
    return a.top < b.bottom and b.top < a.bottom and a.left < b.right and b.left < a.right


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def crop(image: torch.Tensor, window: Window, fill: str = "replicate") -> torch.Tensor:
    """The window of a [C, H, W] tensor; parts past the image replicate its edge pixels (`fill="zeros"`: 0, for
    masks, which must not grow past the image)."""
    _, h, w = image.shape
    rows, cols, _, _ = window.within(h, w)
    inside = image[:, rows, cols]
    pads = (
        cols.start - window.left,
        window.right - cols.stop,
        rows.start - window.top,
        window.bottom - rows.stop,
    )
    if any(pads):
        padded = F.pad(inside[None].float(), pads, mode="replicate") if fill == "replicate" else None
        padded = F.pad(inside[None].float(), pads) if padded is None else padded
        inside = padded[0].to(image.dtype)
    return inside


REFERENCE_CONTEXT = 3.0  # a reference window is this many times its defect's extent


def reference_window(mask: torch.Tensor) -> Window:
    """A square around a reference's defect, REFERENCE_CONTEXT times its extent: the defect then spans about a
    third of the vision tower's attention grid, so ASEA has cells to steer to (a 30 px defect on a 1000 px image
    would fall inside one 14-px patch at 224). The square extends past the image where the image is smaller."""
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    h, w = mask.shape
    side = min(math.ceil(REFERENCE_CONTEXT * max(y1 - y0, x1 - x0)), max(h, w))
    return Window(_place((y0 + y1) // 2 - side // 2, side, h), _place((x0 + x1) // 2 - side // 2, side, w), side, side)
