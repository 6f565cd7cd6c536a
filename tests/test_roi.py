"""Megapixel images with small defects: windows around the mask, labels that match the pixels, any bit depth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from acsdk import InputError
from acsdk.inference import imaging
from acsdk.inference.windows import Window, feather_sigma, plan_windows, reference_window
from acsdk.testing import make_texture

RUN = {"num_inference_steps": 6, "guidance_scale": 1.0}


def _tiled(size: int, seed: int) -> np.ndarray:
    tile = make_texture(128, seed=seed)
    reps = math.ceil(size / 128)
    return np.tile(tile, (reps, reps, 1))[:size, :size].copy()


def _box(shape, top, left, h, w) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[top : top + h, left : left + w] = 255
    return m


def _change(res, image, mask) -> float:
    out = np.asarray(res.image).astype(float)
    return float(np.abs(out - image.astype(float))[mask > 0].mean())


def _far_from(mask: np.ndarray, reach: int) -> np.ndarray:
    from scipy import ndimage

    return ~ndimage.binary_dilation(mask > 0, iterations=reach + 1)


def test_small_defect_on_a_2048_image_is_as_strong_as_on_a_512_image(synth):
    """The same 30x30 defect: on 2048 px the window paints it as strongly as on 512 px."""
    small, big = _tiled(512, 1), _tiled(2048, 1)
    m_small, m_big = _box((512, 512), 200, 240, 30, 30), _box((2048, 2048), 200, 240, 30, 30)
    at_512 = synth.run(small, m_small, "a hole", seed=3, **RUN)
    at_2048 = synth.run(big, m_big, "a hole", seed=3, **RUN)
    assert len(at_2048.windows) == 1 and at_2048.windows[0]["height"] < 2048
    change_512, change_2048 = _change(at_512, small, m_small), _change(at_2048, big, m_big)
    assert change_2048 >= change_512 > 5.0
    window = Window(**at_2048.windows[0])
    reach = math.ceil(3 * feather_sigma(window, (64, 64)))
    far = _far_from(m_big, reach)
    assert np.array_equal(np.asarray(at_2048.image)[far], big[far]), "beyond the blend: the input's bytes"
    assert np.array_equal(np.asarray(at_2048.mask) > 0, m_big > 0), "the label is the input mask"


def test_label_pixels_carry_the_defect_at_full_strength(synth, monkeypatch):
    """Inside the label the blend is 1: every label pixel is the generated pixel, not a faded mix."""
    image = _tiled(1024, 2)
    mask = _box((1024, 1024), 500, 500, 12, 40)
    blends = []
    real = imaging.blend_mask

    def spy(label, sigma):
        b = real(label, sigma)
        blends.append((label.clone(), b))
        return b

    monkeypatch.setattr(imaging, "blend_mask", spy)
    synth.run(image, mask, "a scratch", seed=1, **RUN)
    ((label, blend),) = blends
    assert torch.all(blend[label > 0.5] == 1.0)
    assert blend[label < 0.5].max() < 1.0 and blend[label < 0.5].max() > 0


def test_a_5x6_pixel_defect_is_still_painted(synth):
    image = _tiled(2048, 3)
    mask = _box((2048, 2048), 1000, 1500, 5, 6)
    res = synth.run(image, mask, "a hole", seed=2, **RUN)
    assert _change(res, image, mask) > 5.0
    (window,) = res.windows
    assert 6 * 64 / window["width"] >= 1.0, "the defect spans model pixels (squashed: 6 * 64 / 2048 = 0.19)"


def test_two_far_apart_masks_get_a_window_and_a_defect_each(synth):
    image = _tiled(1024, 4)
    a, b = _box((1024, 1024), 40, 40, 20, 20), _box((1024, 1024), 950, 900, 20, 20)
    res = synth.run(image, np.maximum(a, b), "a stain", seed=5, **RUN)
    assert len(res.windows) == 2
    assert _change(res, image, a) > 5.0 and _change(res, image, b) > 5.0
    near = _box((1024, 1024), 40, 70, 20, 20)  # 10 px from `a`: one window serves both
    assert len(synth.run(image, np.maximum(a, near), "a stain", seed=5, **RUN).windows) == 1


def test_non_square_images_are_not_distorted(synth, monkeypatch):
    """A disc on a 1600x1100 image reaches the model as a disc (same extent up and across); the whole image
    squashed to the model's square would make it an ellipse of ratio 1600/1100."""
    yy, xx = np.mgrid[0:1100, 0:1600]
    image = np.full((1100, 1600, 3), 200, np.uint8)
    image[(yy - 550) ** 2 + (xx - 800) ** 2 <= 150**2] = 40
    mask = _box((1100, 1600), 545, 795, 10, 10)
    seen = []
    real = synth.sampler.__class__.__call__

    def capture(self, model_image, model_mask, *args, **kwargs):
        seen.append(model_image[0].mean(0) < 0.5)
        return real(self, model_image, model_mask, *args, **kwargs)

    monkeypatch.setattr(synth.sampler.__class__, "__call__", capture)
    res = synth.run(image, mask, "a hole", seed=1, roi_padding=200, **RUN)  # the window holds the whole disc
    synth.run(image, mask, "a hole", seed=1, roi="full", **RUN)
    assert res.image.size == (1600, 1100)

    def extent(dark: torch.Tensor) -> tuple[int, int]:
        ys, xs = torch.nonzero(dark, as_tuple=True)
        return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)

    (h_roi, w_roi), (h_full, w_full) = extent(seen[0]), extent(seen[1])
    assert abs(h_roi - w_roi) <= 2, (h_roi, w_roi)
    assert h_full / w_full > 1.3, "the squash (kept as roi='full') stretches it"


def test_16_bit_images_round_trip_without_clipping(synth):
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (256, 1))
    mask = _box((256, 256), 100, 30, 16, 16)
    res = synth.run(Image.fromarray(ramp), mask, "a hole", seed=1, **RUN)
    assert res.image.mode == "I;16" and res.pixels.dtype == np.uint16
    out = res.pixels[:, :, 0]
    far = _far_from(mask, 20)
    assert np.array_equal(out[far], ramp[far])
    assert out.max() == 65535 and len(np.unique(out[far])) > 250, "the bright end is not clipped to 255"
    twelve = (ramp >> 4).astype(np.uint16)  # 12-bit data in a 16-bit container
    res12 = synth.run(twelve, mask, "a hole", seed=1, bit_depth=12, **RUN)
    assert res12.pixels.max() <= 4095 and np.array_equal(res12.pixels[:, :, 0][far], twelve[far])
    with pytest.raises(InputError, match="12-bit"):
        synth.run(ramp, mask, "a hole", bit_depth=12, **RUN)


def test_windows_geometry():
    model = (512, 512)
    wins, notes = plan_windows(_box((2048, 2048), 1000, 1000, 30, 30) > 0, model, 32, 256)
    (w,) = wins
    assert w.height == w.width >= 256 and 0 <= w.top and w.bottom <= 2048 and not notes
    assert w.top <= 1000 and w.bottom >= 1030 and w.left <= 1000 and w.right >= 1030
    # on the edge: moved inside, not cut
    (edge,), _ = plan_windows(_box((2048, 2048), 0, 2040, 8, 8) > 0, model, 32, 256)
    assert edge.top == 0 and edge.right == 2048 and edge.height == 256
    # the mask touches every border: the whole image, said in the notes
    full = _box((1100, 1600), 0, 0, 1100, 1600) > 0
    (whole,), notes = plan_windows(full, model, 32, 256)
    assert whole.height == whole.width == 1600 and whole.left == 0 and notes
    # one pixel; an image smaller than the model
    (one,), _ = plan_windows(_box((300, 300), 150, 150, 1, 1) > 0, model, 32, 256)
    assert one.height == 256
    (small,), _ = plan_windows(_box((100, 100), 10, 10, 5, 5) > 0, model, 32, 256)
    assert (small.top, small.left, small.height, small.width) == (0, 0, 100, 100)


# A 5x10 defect on a 300x200 image (padding 32, min_size 16) under models of every aspect, and the window each
# gets: where the model's short side is at most 6 feather sigmas (30/512 of its long side, past ~17:1) no window
# holds the feather's reach, and the window is the whole image's. native/tests/test_imaging.cpp holds the C++ port
# to the same table. Before: an OverflowError (float infinity) from 1x100 on, a loop that never ended at 30x512.
ASPECT_WINDOWS = [
    ((1, 100), (0, -14900, 300, 30000)),
    ((100, 1), (-9850, 0, 20000, 200)),
    ((1, 10000), (0, -1499900, 300, 3000000)),
    ((10000, 1), (-999850, 0, 2000000, 200)),
    ((30, 512), (0, -2460, 300, 5120)),
    ((512, 30), (-1557, 0, 3414, 200)),
    ((31, 512), (0, -2378, 300, 4955)),
    ((64, 64), (108, 55, 74, 74)),
    ((512, 768), (108, 37, 74, 111)),
]


@pytest.mark.parametrize(("model", "want"), ASPECT_WINDOWS, ids=[f"{m[0]}x{m[1]}" for m, _ in ASPECT_WINDOWS])
def test_windows_end_for_every_model_aspect(model, want):
    import signal

    def hung(signum, frame):
        raise TimeoutError(f"plan_windows did not end for a {model} model")

    mask = np.zeros((300, 200), bool)
    mask[140:150, 90:95] = True
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        (win,), notes = plan_windows(mask, model, 32, 16)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert (win.top, win.left, win.height, win.width) == want
    assert win.top <= 140 and win.bottom >= 150 and win.left <= 90 and win.right >= 95
    assert bool(notes) == (win.height > 300 or win.width > 200)


def test_reference_window_puts_the_defect_on_several_attention_cells():
    big_mask = np.zeros((1024, 1024), np.uint8)
    big_mask[500:530, 300:330] = 255  # 30 px on 1000 px: one 14-px patch of a 224-px view holds a fifth of it
    big = torch.rand(3, 1024, 1024)
    m = torch.from_numpy(big_mask > 0).float()
    args = (224, (0.5,) * 3, (0.5,) * 3, (16, 16))
    _, full = imaging.reference_inputs(big, m, "full", *args)
    pixels, windowed = imaging.reference_inputs(big, m, "defect", *args)
    assert pixels.shape == (1, 3, 224, 224)
    assert int((full > 0).sum()) <= 4 and float(full.max()) < 0.5
    assert int((windowed > 0.9).sum()) >= 9, "the defect fills whole cells"
    win = reference_window(m)
    assert win.height == win.width == 90


def test_bad_roi_arguments_and_huge_images(synth):
    image, mask = _tiled(64, 1), _box((64, 64), 10, 10, 8, 8)
    with pytest.raises(InputError) as err:
        synth.run(image, mask, "a hole", roi="window", **RUN)
    assert err.value.argument == "roi"
    with pytest.raises(InputError) as err:
        synth.run(image, mask, "a hole", roi_padding=-1, **RUN)
    assert err.value.argument == "roi_padding"
    huge = np.zeros((10_001, 10_001), np.uint8)
    with pytest.raises(InputError, match="megapixels") as err:
        synth.run(huge, huge, "a hole", **RUN)
    assert err.value.argument == "image"
