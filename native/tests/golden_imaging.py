"""Golden vectors for the native image ops and windows: `python native/tests/golden_imaging.py OUT.safetensors`.

Every case stores its inputs and the Python SDK's outputs (acsdk.inference.imaging / windows), so
native/tests/test_imaging.cpp can check the C++ ports against them. Keys are `<kind>.<case>.<field>`; all tensors are
float32 (integers, window rectangles and note characters are exact in float32) except feather sigmas (float64).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo's acsdk, installed or not

from safetensors.torch import save_file  # noqa: E402

from acsdk.inference.imaging import (  # noqa: E402
    blend_mask,
    gaussian_blur_mask,
    latent_mask,
    resize_image,
    resize_mask,
)
from acsdk.inference.windows import Window, crop, feather_sigma, plan_windows  # noqa: E402


def main(out_path: str) -> None:
    rng = np.random.default_rng(20240611)
    t: dict[str, torch.Tensor] = {}

    def image(c: int, h: int, w: int) -> torch.Tensor:
        return torch.from_numpy(rng.random((c, h, w), dtype=np.float32))

    # resize_image: down, up, non-integer ratios both ways, one axis up and one down, one axis unchanged, equal size.
    for name, (c, h, w), (oh, ow) in [
        ("down_97x61", (3, 97, 61), (64, 64)),
        ("down_300x200", (3, 300, 200), (64, 64)),
        ("up_16", (3, 16, 16), (64, 64)),
        ("up_64_to_97x130", (3, 64, 64), (97, 130)),
        ("down_nonint", (3, 50, 70), (33, 45)),
        ("up_nonint", (3, 40, 30), (57, 71)),
        ("mixed", (3, 100, 40), (60, 90)),
        ("height_only", (3, 50, 64), (32, 64)),
        ("width_only_gray", (1, 24, 200), (24, 7)),
        ("equal", (3, 20, 30), (20, 30)),
    ]:
        img = image(c, h, w)
        t[f"resize_image.{name}.in"] = img
        t[f"resize_image.{name}.out"] = resize_image(img, oh, ow).contiguous()

    # resize_mask: a single-pixel defect must survive a downscale; up, mixed and non-integer ratios.
    def sparse(h: int, w: int, p: float) -> torch.Tensor:
        return torch.from_numpy((rng.random((h, w)) < p).astype(np.float32))

    lone = torch.zeros(300, 200)
    lone[151, 77] = 1.0
    for name, mask, (oh, ow) in [
        ("single_pixel_down", lone, (64, 64)),
        ("single_pixel_down_odd", lone, (7, 13)),
        ("sparse_down", sparse(300, 200, 0.002), (64, 48)),
        ("up", sparse(16, 16, 0.1), (64, 64)),
        ("up_nonint", sparse(23, 17, 0.1), (61, 50)),
        ("mixed", sparse(37, 50, 0.05), (100, 23)),
        ("equal", sparse(20, 20, 0.2), (20, 20)),
    ]:
        t[f"resize_mask.{name}.in"] = mask
        t[f"resize_mask.{name}.out"] = resize_mask(mask, oh, ow).contiguous()

    # latent_mask (the Python takes [N, 1, H, W]).
    for name, mask, (oh, ow) in [
        ("512_to_64", sparse(512, 512, 0.0005), (64, 64)),
        ("nonint", sparse(100, 75, 0.01), (13, 10)),
        ("single_pixel", lone, (38, 25)),
    ]:
        t[f"latent_mask.{name}.in"] = mask
        t[f"latent_mask.{name}.out"] = latent_mask(mask[None, None], (oh, ow))[0, 0].contiguous()

    # gaussian_blur_mask / blend_mask: a blob touching the top edge, a lone pixel near the right edge.
    blob = torch.zeros(80, 60)
    blob[0:6, 20:31] = 1.0
    blob[3, 28:34] = 1.0
    blob[40, 57] = 1.0
    for sigma in (0.0, 1.3, 5.0, 0.2):
        name = f"sigma_{sigma:g}".replace(".", "p")
        t[f"blur.{name}.in"] = blob
        t[f"blur.{name}.sigma"] = torch.tensor([sigma], dtype=torch.float64)
        t[f"blur.{name}.blur"] = gaussian_blur_mask(blob, sigma).contiguous()
        t[f"blur.{name}.blend"] = blend_mask(blob, sigma).contiguous()

    # crop: inside, past the top-left, past the bottom-right, larger than the image; replicate and zeros.
    src = image(3, 50, 40)
    for name, win in [
        ("inside", Window(10, 10, 20, 15)),
        ("top_left", Window(-5, -7, 30, 30)),
        ("bottom_right", Window(30, 25, 40, 40)),
        ("larger", Window(-10, -5, 70, 50)),
    ]:
        for fill in ("replicate", "zeros"):
            key = f"crop.{name}_{fill}"
            t[f"{key}.in"] = src
            t[f"{key}.window"] = torch.tensor([win.top, win.left, win.height, win.width], dtype=torch.float32)
            t[f"{key}.replicate"] = torch.tensor([1.0 if fill == "replicate" else 0.0])
            t[f"{key}.out"] = crop(src, win, fill=fill).contiguous()

    # feather_sigma.
    for name, win, model in [
        ("square", Window(0, 0, 75, 75), (64, 64)),
        ("wide", Window(3, 4, 301, 200), (64, 96)),
        ("model512", Window(0, 0, 1000, 700), (512, 512)),
    ]:
        args = [win.top, win.left, win.height, win.width, *model]
        t[f"feather.{name}.args"] = torch.tensor(args, dtype=torch.float64)
        t[f"feather.{name}.out"] = torch.tensor([feather_sigma(win, model)], dtype=torch.float64)

    # plan_windows: two blobs close enough to share a window, one near the bottom-right edge.
    three = np.zeros((300, 200), dtype=bool)
    three[40:50, 30:45] = True
    three[70:80, 60:70] = True
    three[280:295, 185:199] = True
    three[285, 199] = True
    # diagonal neighbours are separate components under 4-connectivity
    diagonal = np.zeros((120, 90), dtype=bool)
    diagonal[10, 10] = diagonal[11, 11] = diagonal[12, 12] = True
    diagonal[100, 80:85] = True
    scattered = np.zeros((800, 600), dtype=bool)
    scattered[rng.integers(0, 800, 10), rng.integers(0, 600, 10)] = True
    # a chain: merging the first pair gives a window that reaches the third
    chain = np.zeros((600, 600), dtype=bool)
    chain[100:110, 100:200] = True
    chain[250:260, 230:240] = True
    chain[190:200, 300:310] = True
    chain[500:520, 20:30] = True
    for name, mask, model, padding, min_size in [
        ("three_blobs", three, (64, 64), 32, 32),
        ("min_size_over_image", three, (64, 64), 32, 400),
        ("wide_model", three, (64, 96), 16, 48),
        ("diagonal", diagonal, (64, 64), 4, 16),
        ("scattered", scattered, (64, 96), 16, 48),
        ("chain", chain, (64, 64), 32, 32),
        ("empty", np.zeros((30, 40), dtype=bool), (64, 64), 32, 32),
    ]:
        windows, notes = plan_windows(mask, model, padding, min_size)
        rects = [[w.top, w.left, w.height, w.width] for w in windows]
        t[f"plan.{name}.mask"] = torch.from_numpy(mask.astype(np.float32))
        t[f"plan.{name}.args"] = torch.tensor([*model, padding, min_size], dtype=torch.float32)
        t[f"plan.{name}.windows"] = torch.tensor(rects, dtype=torch.float32).reshape(-1, 4)
        text = "\n".join(notes).encode("utf-8")
        t[f"plan.{name}.notes"] = torch.tensor(list(text), dtype=torch.float32)
        print(f"plan {name}: {rects} notes={len(notes)}")

    save_file({k: v.contiguous().clone() for k, v in t.items()}, out_path)  # clone: inputs are shared between cases
    print(f"wrote {len(t)} tensors to {out_path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: golden_imaging.py OUT.safetensors")
    main(sys.argv[1])
