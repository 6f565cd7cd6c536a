import json

import numpy as np
import pytest
from PIL import Image

from acsdk import InputError
from acsdk.data import PromptSource, estimate_foreground, load_category, make_mvtec_like, sample_target_mask


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    make_mvtec_like(root, "plate", n_good=4, n_per_defect=6, defects=("hole", "scratch"))
    make_mvtec_like(root, "grid", n_good=3, n_per_defect=3, defects=("crack",), gray=True, seed=1)
    return root


def test_reader_and_paper_split(mvtec):
    cat = load_category(mvtec, "plate")
    assert len(cat.normals) == 4 and sorted(cat.anomalies) == ["hole", "scratch"]
    hole = cat.anomalies["hole"]
    assert [s.image.name for s in hole] == sorted(s.image.name for s in hole)
    assert all(s.mask.name == f"{s.image.stem}_mask.png" for s in hole)
    assert [s.image.name for s in cat.references("hole")] == ["000.png", "001.png"]  # floor(6/3)
    assert len(cat.held_out("hole")) == 4
    gray = load_category(mvtec, "grid")
    assert Image.open(gray.normals[0]).mode == "L"
    assert len(gray.references("crack")) == 1


def test_defect_subset_and_bad_names(mvtec):
    assert list(load_category(mvtec, "plate", ["scratch"]).anomalies) == ["scratch"]
    with pytest.raises(InputError) as err:
        load_category(mvtec, "plate", ["dent"])
    assert err.value.argument == "defects" and "hole" in str(err.value)
    with pytest.raises(InputError) as err:
        load_category(mvtec, "bottle")
    assert err.value.argument == "category" and "plate" in str(err.value)


def test_not_mvtec_shaped_says_what_was_expected(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_category(tmp_path / "none", "plate")
    (tmp_path / "plate" / "train" / "good").mkdir(parents=True)
    (tmp_path / "plate" / "test").mkdir()
    with pytest.raises(InputError, match="ground_truth"):
        load_category(tmp_path, "plate")


def test_corrupt_files_are_skipped_and_recorded(tmp_path):
    make_mvtec_like(tmp_path, "plate", n_good=3, n_per_defect=3, defects=("hole",))
    (tmp_path / "plate/train/good/001.png").write_bytes(b"not an image")
    (tmp_path / "plate/ground_truth/hole/002_mask.png").unlink()
    cat = load_category(tmp_path, "plate")
    assert len(cat.normals) == 2 and len(cat.anomalies["hole"]) == 2
    reasons = {s["file"].split("/")[-1]: s["reason"] for s in cat.skipped}
    assert "001.png" in reasons and "missing mask" in reasons["002.png"]


def test_prompts_template_and_captions(tmp_path):
    p = PromptSource()
    assert p("metal_nut", "color_stain") == "a photo of a metal nut with a color stain"
    caps = tmp_path / "c.json"
    caps.write_text(json.dumps({"hole/003.png": "a deep round hole", "004.png": "a small pit"}))
    p = PromptSource(captions=caps)
    from pathlib import Path

    assert p("plate", "hole", Path("plate/test/hole/003.png")) == "a deep round hole"
    assert p("plate", "hole", Path("plate/test/hole/004.png")) == "a small pit"
    assert p("plate", "hole", Path("plate/test/hole/005.png")) == "a photo of a plate with a hole"
    caps.write_text("[1, 2]")
    with pytest.raises(InputError) as err:
        PromptSource(captions=caps)
    assert err.value.argument == "captions"


def test_sampled_masks_nonempty_in_bounds_on_object_and_within_budget(mvtec):
    cat = load_category(mvtec, "plate")
    refs = [np.asarray(Image.open(s.mask)) > 127 for s in cat.references("scratch")]
    fg = np.zeros((64, 64), dtype=bool)
    fg[8:56, 12:52] = True
    for seed in range(40):
        rng = np.random.default_rng(seed)
        m = sample_target_mask(refs, (64, 64), rng, foreground=fg, max_fraction=0.1)
        assert m.shape == (64, 64) and m.dtype == bool
        assert 0 < m.sum() <= 0.1 * 64 * 64
        assert not (m & ~fg).any()
    a = sample_target_mask(refs, (64, 64), np.random.default_rng(3))
    b = sample_target_mask(refs, (64, 64), np.random.default_rng(3))
    assert np.array_equal(a, b)


def test_foreground_estimate():
    img = np.full((40, 40, 3), 20, np.uint8)
    img[10:30, 12:28] = 200
    fg = estimate_foreground(img)
    assert fg[20, 20] and not fg[2, 2]
    texture = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert estimate_foreground(texture).all()
