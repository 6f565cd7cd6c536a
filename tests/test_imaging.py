import numpy as np
import pytest
import torch
from PIL import Image

from acsdk import InputError
from acsdk.inference import imaging


def test_modes_and_sources_give_rgb_in_unit_range(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = rgb[:, :, 0]
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 7, np.uint8)], axis=2)
    Image.fromarray(gray).save(tmp_path / "g.png")
    for src in (rgb, Image.fromarray(rgb), Image.fromarray(rgba), rgba, rgb.astype(np.float32) / 255):
        t = imaging.load_image(src)
        assert t.shape == (3, 20, 30)
        assert torch.allclose(t, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, atol=1e-6)
    for src in (gray, Image.fromarray(gray), tmp_path / "g.png", str(tmp_path / "g.png")):
        t = imaging.load_image(src)
        assert t.shape == (3, 20, 30)
        assert torch.equal(t[0], t[2])
        assert torch.allclose(t[0], torch.from_numpy(gray).float() / 255)


def test_mask_is_binary_from_any_source():
    m = np.zeros((8, 8), np.uint8)
    m[2:4, 2:4] = 200
    m[5, 5] = 100  # below one half: background
    for src in (m, Image.fromarray(m), m > 127, m.astype(np.float32) / 255, m[:, :, None]):
        t = imaging.load_mask(src)
        assert set(t.unique().tolist()) <= {0.0, 1.0}
        assert int(t.sum()) == 4


@pytest.mark.parametrize(
    "value, fragment",
    [
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
        (np.full((4, 4, 3), np.inf, np.float32), "NaN or Inf"),
        (np.zeros((4, 4, 3), np.int64), "dtype"),
        (np.zeros((4, 4, 2), np.uint8), "HxWx3"),
        (np.zeros((4, 4, 3), np.float32) + 2.0, "[0, 1]"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
        (12345, "PIL image"),
        ("/no/such/file.png", "does not exist"),
    ],
)
def test_bad_images_raise_input_error_naming_argument(value, fragment):
    with pytest.raises(InputError) as err:
        imaging.load_image(value, "image")
    assert err.value.argument == "image"
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_corrupt_image_file_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="readable image"):
        imaging.load_image(bad, "image")


def test_mask_with_three_distinct_channels_is_reduced_not_rejected_but_two_dims_required():
    with pytest.raises(InputError, match="single-channel"):
        imaging.load_mask(np.zeros((4, 4, 2), np.uint8), "mask")


def test_pair_checks_size_and_emptiness():
    with pytest.raises(InputError, match="10 x 12"):
        imaging.check_pair((10, 12), torch.ones(10, 10), "image", "mask")
    with pytest.raises(InputError, match="empty mask"):
        imaging.check_pair((10, 12), torch.zeros(10, 12), "image", "mask")


def test_resize_mask_never_loses_a_tiny_defect():
    m = torch.zeros(512, 512)
    m[100, 300] = 1.0
    small = imaging.resize_mask(m, 64, 64)
    assert small.sum() == 1
    assert imaging.mask_coverage(m, 16, 16).sum() > 0


def test_blur_is_exactly_zero_beyond_its_reach_and_one_deep_inside():
    m = torch.zeros(64, 64)
    m[20:40, 20:40] = 1
    sigma = 2.0
    b = imaging.gaussian_blur_mask(m, sigma)
    reach = int(np.ceil(3 * sigma))
    far = torch.ones(64, 64, dtype=torch.bool)
    far[20 - reach : 40 + reach, 20 - reach : 40 + reach] = False
    assert torch.all(b[far] == 0)
    assert torch.all(b[20 - reach + 1 : 40 + reach - 1, 20 - reach + 1 : 40 + reach - 1] > 0)
    assert b[30, 30] > 0.999


def test_compose_keeps_original_values_where_blend_is_zero_at_any_depth():
    from acsdk.inference.windows import Window

    rng = np.random.default_rng(0)
    for orig in (rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), rng.integers(0, 65536, (16, 16), dtype=np.uint16)):
        picture = imaging.load_picture(orig)
        blend = torch.zeros(16, 16)
        blend[4:8, 4:8] = 0.5
        out = picture.compose([(Window(0, 0, 16, 16), torch.rand(3, 16, 16), blend)])
        assert out.dtype == orig.dtype
        keep = (blend == 0).numpy()
        assert np.array_equal(out.reshape(orig.shape)[keep], orig[keep])
        assert not np.array_equal(out.reshape(orig.shape)[~keep], orig[~keep])


def test_one_mask_reader_counts_every_usual_encoding_alike(tmp_path):
    """inference, generate and evaluation read masks through `imaging.read_mask`: 0/255, 0/1 label maps, 16-bit,
    float and colour masks give the same pixels (a 0/1 mask used to read as empty, its image as good)."""
    from acsdk.inference.imaging import load_mask, read_mask, read_rgb8

    want = np.zeros((12, 10), bool)
    want[3:5, 2:9] = True
    encodings = {
        "u8_255.png": Image.fromarray(want.astype(np.uint8) * 255),
        "u8_01.png": Image.fromarray(want.astype(np.uint8)),
        "u16.png": Image.fromarray(want.astype(np.uint16) * 65535),
        "rgb.png": Image.fromarray(np.dstack([want.astype(np.uint8) * 200, np.zeros((12, 10, 2), np.uint8)])),
    }
    for name, im in encodings.items():
        im.save(tmp_path / name)
        assert np.array_equal(read_mask(tmp_path / name), want), name
    assert np.array_equal(read_mask(want.astype(np.float32)), want)
    assert torch.equal(load_mask(tmp_path / "u8_01.png"), torch.from_numpy(want).float())
    grey16 = (np.arange(120, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    rgb = read_rgb8(tmp_path / "grey16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 10, 3)
    assert np.array_equal(rgb[:, :, 0], np.round(grey16 / 65535 * 255).astype(np.uint8)), "scaled by depth"
