import math

import numpy as np
import pytest
from conftest import FAST, pixels
from PIL import Image

from acsdk import InputError, SemanticFeatures


@pytest.fixture(scope="module")
def base(tiny_ckpt, scene):
    from acsdk import Synthesizer

    fresh = Synthesizer.from_checkpoint(tiny_ckpt)  # empty caches: every stage runs
    return fresh.run(
        scene["image"],
        scene["mask"],
        "a photo of a surface with a hole",
        scene["reference_image"],
        scene["reference_mask"],
        seed=5,
        **FAST,
    )


def test_result_contract(base, scene):
    assert base.image.mode == "RGB" and base.image.size == (64, 64)
    assert base.mask.mode == "L" and base.mask.size == (64, 64)
    assert np.array_equal(pixels(base.mask) > 0, scene["mask"] > 0)
    assert set(np.unique(pixels(base.mask))) <= {0, 255}
    stages = {"preprocess", "csm_vision", "asea", "text_encode", "vae_encode", "denoise", "vae_decode", "total"}
    assert stages <= set(base.timings)
    assert base.timings["denoise_steps"] == 7  # 10 steps at strength 0.7
    assert base.asea["r_after"] > base.asea["r_before"]


def test_pixels_beyond_blur_reach_are_bit_identical(base, scene):
    sigma = 5.0 * 64 / 512  # 5 model pixels at 512, of a window that is the whole 64-px image
    reach = math.ceil(3 * sigma)
    mask = scene["mask"] > 0
    near = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    near[max(ys.min() - reach, 0) : ys.max() + reach + 1, max(xs.min() - reach, 0) : xs.max() + reach + 1] = True
    out = pixels(base.image)
    assert np.array_equal(out[~near], scene["image"][~near])
    assert not np.array_equal(out[mask], scene["image"][mask])


def test_same_seed_same_output_other_seed_differs(synth, scene, base):
    again = synth.run(
        scene["image"],
        scene["mask"],
        "a photo of a surface with a hole",
        scene["reference_image"],
        scene["reference_mask"],
        seed=5,
        **FAST,
    )
    other = synth.run(
        scene["image"],
        scene["mask"],
        "a photo of a surface with a hole",
        scene["reference_image"],
        scene["reference_mask"],
        seed=6,
        **FAST,
    )
    assert np.array_equal(pixels(again.image), pixels(base.image))
    assert not np.array_equal(pixels(other.image), pixels(base.image))


def test_semantic_scale_zero_ignores_the_reference(synth, scene):
    from acsdk.testing import make_defect_pair

    other_ref, other_mask = make_defect_pair(64, seed=11)
    common = dict(seed=2, semantic_scale=0.0, **FAST)
    a = synth.run(scene["image"], scene["mask"], "a hole", scene["reference_image"], scene["reference_mask"], **common)
    b = synth.run(scene["image"], scene["mask"], "a hole", other_ref, other_mask, **common)
    assert np.array_equal(pixels(a.image), pixels(b.image))
    c = synth.run(
        scene["image"],
        scene["mask"],
        "a hole",
        scene["reference_image"],
        scene["reference_mask"],
        **dict(common, semantic_scale=1.0),
    )
    d = synth.run(scene["image"], scene["mask"], "a hole", other_ref, other_mask, **dict(common, semantic_scale=1.0))
    assert not np.array_equal(pixels(c.image), pixels(d.image))


def test_encoded_reference_reuses_and_round_trips(synth, scene, base, tmp_path):
    feats = synth.encode_reference(
        scene["reference_image"],
        scene["reference_mask"],
        "a photo of a surface with a hole",
        asea_steps=FAST["asea_steps"],
    )
    path = feats.save(tmp_path / "ref.safetensors")
    loaded = SemanticFeatures.load(path)
    assert loaded.asea == feats.asea and loaded.prompt == feats.prompt
    kw = {k: v for k, v in FAST.items() if k != "asea_steps"}
    res = synth.run(scene["image"], scene["mask"], "a photo of a surface with a hole", reference=loaded, seed=5, **kw)
    assert np.array_equal(pixels(res.image), pixels(base.image))
    assert "asea" not in res.timings and "csm_vision" not in res.timings


def test_any_size_and_mode_pastes_back_at_input_size(synth):
    from acsdk.testing import make_texture

    big = Image.fromarray(make_texture(96, seed=4, gray=True)).resize((150, 90))  # L mode, non-square
    mask = np.zeros((90, 150), np.uint8)
    mask[30:50, 60:90] = 255
    rgba = Image.fromarray(np.asarray(big.convert("RGBA")))
    res = synth.run(big, mask, "a scratch", num_inference_steps=4, guidance_scale=1.0)
    assert res.image.size == (150, 90)
    res2 = synth.run(rgba, Image.fromarray(mask), "a scratch", num_inference_steps=4, guidance_scale=1.0)
    assert res.image.mode == "L" and res2.image.mode == "RGBA", "results keep the input's mode"
    out_rgba = pixels(res2.image)
    assert np.array_equal(out_rgba[:, :, 3], np.asarray(rgba)[:, :, 3]), "alpha kept"
    gray_of_rgba = np.asarray(res2.image.convert("L")).astype(int)
    assert np.abs(pixels(res.image).astype(int) - gray_of_rgba).max() <= 1  # same content, gray by PIL's luma


def test_tiny_target_mask_still_inpaints(synth, scene):
    mask = np.zeros((64, 64), np.uint8)
    mask[10, 10] = 255
    res = synth.run(scene["image"], mask, "a hole", num_inference_steps=4, blur_sigma=0)
    out = pixels(res.image)
    assert not np.array_equal(out[10, 10], scene["image"][10, 10])
    changed = np.any(out != scene["image"], axis=2)
    assert changed.sum() == 1


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 2.5}, "num_inference_steps"),
        ({"strength": 0.0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"strength": float("nan")}, "strength"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"seed": -3}, "seed"),
        ({"asea_steps": -1}, "asea_steps"),
        ({"blur_sigma": -1.0}, "blur_sigma"),
        ({"prompt": 3}, "prompt"),
        ({"reference_mask": None}, "reference_mask"),
        ({"reference_image": None}, "reference_image"),
        ({"mask": np.zeros((64, 64), np.uint8)}, "mask"),
        ({"mask": np.ones((32, 64), np.uint8)}, "mask"),
        ({"image": np.full((64, 64, 3), np.nan, np.float32)}, "image"),
        ({"image": np.zeros((64, 64, 5), np.uint8)}, "image"),
        ({"reference_image": np.zeros((64, 64, 3), np.complex64)}, "reference_image"),
        ({"reference": "features.safetensors"}, "reference"),
    ],
)
def test_bad_input_is_a_typed_error(synth, scene, kwargs, argument):
    call = dict(
        image=scene["image"],
        mask=scene["mask"],
        prompt="a hole",
        reference_image=scene["reference_image"],
        reference_mask=scene["reference_mask"],
        num_inference_steps=2,
        asea_steps=1,
    )
    if argument == "reference_image":
        call["reference_mask"] = scene["reference_mask"]
    if argument == "reference":
        call.pop("reference_image"), call.pop("reference_mask")
    call.update(kwargs)
    with pytest.raises(InputError) as err:
        synth.run(**call)
    assert err.value.argument == argument
    assert "expected" in str(err.value)


def test_features_of_another_model_are_refused(synth, scene):
    import torch

    with pytest.raises(InputError, match="another model"):
        synth.run(scene["image"], scene["mask"], "x", reference=SemanticFeatures(torch.zeros(1, 4, 7)))


def test_load_features_rejects_other_files(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(InputError, match="another kind"):
        SemanticFeatures.load(tmp_path / "x.safetensors")
    with pytest.raises(InputError, match="does not exist"):
        SemanticFeatures.load(tmp_path / "none.safetensors")
