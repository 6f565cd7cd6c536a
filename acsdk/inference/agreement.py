"""How close two sets of generated images are: the numbers every gate in acsdk judges (INT8 against fp32, a sampler
setting against the default). Mean and 99th percentile |difference| inside the label, PSNR over the blend region
(the label and its feather inside each window: the only pixels generation may change)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .imaging import blend_mask
from .windows import Window, feather_sigma


@dataclass(frozen=True)
class Gate:
    """The agreed tolerance, grey levels of 8-bit images."""

    mean_max: float = 2.0  # mean |difference| inside the label
    p99_max: float = 8.0  # 99th percentile inside the label
    psnr_min: float = 35.0  # dB over the blend region

    def check(self, m: Mapping[str, float]) -> bool:
        return m["mean"] <= self.mean_max and m["p99"] <= self.p99_max and m["psnr_db"] >= self.psnr_min


def blend_region(result, label: np.ndarray, model_size: tuple[int, int]) -> np.ndarray:
    """The pixels the paste may change: the label and its feather, inside each generation window."""
    region = np.zeros_like(label)
    t = torch.from_numpy(label.astype(np.float32))
    for w in result.windows:
        window = Window(**w)
        rows, cols, _, _ = window.within(*label.shape)
        feather = blend_mask(t, feather_sigma(window, model_size)).numpy() > 0
        region[rows, cols] |= feather[rows, cols]
    return region


def agreement(pairs: Sequence[tuple[object, object]], model_size: tuple[int, int]) -> dict[str, float]:
    """Mean and p99 |a - b| inside the label and PSNR over the blend region, over (a, b) synthesis results of the
    same scenes (8-bit images: grey levels)."""
    inside, blended = [], []
    for a, b in pairs:
        diff = np.abs(a.pixels.astype(np.float64) - b.pixels.astype(np.float64))
        label = np.asarray(a.mask) > 0
        inside.append(diff[label].ravel())
        blended.append(diff[blend_region(a, label, model_size)].ravel())
    inside_all, blend_all = np.concatenate(inside), np.concatenate(blended)
    mse = float(np.mean(blend_all**2))
    return {
        "mean": float(inside_all.mean()),
        "p99": float(np.percentile(inside_all, 99)),
        "psnr_db": float(10 * np.log10(255**2 / max(mse, 1e-12))),
    }
