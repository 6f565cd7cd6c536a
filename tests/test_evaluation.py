"""acsdk evaluate downstream: metrics against hand-computed cases, the baselines, the detector, resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from acsdk import InputError, TrainingError
from acsdk.apps.cli import main as cli
from acsdk.data import load_category, make_mvtec_like
from acsdk.evaluation import (
    DownstreamSettings,
    au_pro,
    baselines,
    binary_metrics,
    detection_metrics,
    evaluate_downstream,
)
from acsdk.evaluation import downstream as ds
from acsdk.evaluation.baselines import cutpaste_anomaly, perlin_anomaly, perlin_mask, perlin_noise
from acsdk.evaluation.detector import Detector, focal_loss, image_scores, pool_kernel
from acsdk.evaluation.metrics import GRID_METRICS, au_pro_grid, f1_max_grid, grid_metrics
from acsdk.evaluation.report import TEST_SELECTION_NOTE, VERDICT_TOLERANCE, comparison, verdict
from acsdk.evaluation.sets import Pairs, RealSplit, TrainingSet, read_mask, read_pairs

TINY = DownstreamSettings(size=32, steps=30, batch_size=4, base_width=4, levels=3, eval_every=10, seed=0)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-real")
    make_mvtec_like(root, "plate", size=32, n_good=8, n_per_defect=6, defects=("hole", "scratch"), n_test_good=3)
    return root


def _synthetic_like(real, dest):
    """A set in generate's layout (pairs copied from the references: the layout is what is under test)."""
    for defect in ("hole", "scratch"):
        d = dest / "plate" / defect
        (d / "image").mkdir(parents=True)
        (d / "mask").mkdir()
        lines = []
        for i in range(2):
            shutil.copy(real / "plate" / "test" / defect / f"{i:03d}.png", d / "image" / f"{i:04d}.png")
            shutil.copy(real / "plate" / "ground_truth" / defect / f"{i:03d}_mask.png", d / "mask" / f"{i:04d}.png")
            lines.append(json.dumps({"index": i, "image": f"image/{i:04d}.png", "mask": f"mask/{i:04d}.png"}))
        (d / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return dest


# -- metrics -----------------------------------------------------------------------------------------------------


def test_perfect_inverted_and_constant_scorers():
    labels = np.array([0, 0, 0, 1, 1])
    assert binary_metrics(labels, labels * 1.0) == {"auroc": 1.0, "ap": 1.0, "f1_max": 1.0}
    assert binary_metrics(labels, 1.0 - labels)["auroc"] == 0.0
    constant = binary_metrics(labels, np.zeros(5))
    assert constant["auroc"] == 0.5
    assert constant["ap"] == pytest.approx(2 / 5)  # one threshold: precision 2/5 at recall 1
    assert constant["f1_max"] == pytest.approx(2 * 0.4 / 1.4)


def test_au_pro_of_a_hand_computed_case():
    # One 2x4 image: a 2-pixel defect scored 0.9 and 0.4, six normal pixels scored 0.8, 0.3, ... 0.
    # Thresholds high to low: (FPR 0, PRO 1/2), (1/6, 1/2), (1/6, 1), (2/6, 1): the area up to FPR 0.3 is
    # 1/6 * 1/2 + (0.3 - 1/6) * 1 = 0.21667, divided by 0.3 = 0.72222.
    mask = np.array([[[1, 1, 0, 0], [0, 0, 0, 0]]], dtype=bool)
    scores = np.array([[[0.9, 0.4, 0.8, 0.3], [0.2, 0.1, 0.05, 0.0]]])
    assert au_pro(mask, scores) == pytest.approx((1 / 12 + (0.3 - 1 / 6)) / 0.3)
    assert au_pro(mask, mask * 1.0) == pytest.approx(1.0)


def test_au_pro_weights_every_region_equally():
    # A 1-pixel region found first and a 3-pixel region never above any normal pixel: PRO is 1/2 up to
    # FPR 1 whatever the pixel counts (pixel-wise recall would be 1/4).
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0, 0] = True
    mask[0, 3, 1:4] = True
    scores = np.where(mask, 0.0, 0.5)
    scores[0, 0, 0] = 1.0
    assert au_pro(mask, scores) == pytest.approx(0.5)


def test_detection_metrics_need_both_kinds():
    masks = np.zeros((2, 4, 4), dtype=bool)
    with pytest.raises(InputError, match="both normal and anomalous"):
        detection_metrics(masks, np.zeros((2, 4, 4)), np.zeros(2))


def test_image_labels_are_given_not_read_from_masks():
    # Image 1 is anomalous (its folder says so) though its mask has no pixel at this size: with the folder labels
    # the image AUROC is 0.5 (0.85 of the good image sits between the two anomalous ones); from masks it would be 1.
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, 1, 1] = True
    maps, scores = np.where(masks, 0.9, 0.1), np.array([0.9, 0.8, 0.85])
    assert detection_metrics(masks, maps, scores, np.array([True, True, False]))["image_auroc"] == 0.5
    assert detection_metrics(masks, maps, scores)["image_auroc"] == 1.0  # the fallback without labels
    with pytest.raises(InputError, match="labels"):
        detection_metrics(masks, maps, scores, np.array([True, False]))


def test_verdict_is_a_tie_within_the_tolerance():
    assert VERDICT_TOLERANCE == 0.01
    assert verdict(0.905, 0.900) == "tie"  # any float difference used to decide
    assert verdict(0.51, 0.50) == "tie"  # exactly the tolerance (0.0100000000000000089 in floats) is still a tie
    assert verdict(0.95, 0.90) == "better" and verdict(0.90, 0.95) == "worse"
    assert verdict(0.95, 0.90, tolerance=0.1) == "tie"
    # several seeds, paired: the mean difference beyond the tolerance and every seed on the same side
    assert verdict([0.95, 0.93], [0.90, 0.90]) == "better"
    assert verdict([0.99, 0.89], [0.90, 0.90]) == "tie"  # mean +0.04, but one seed says worse
    assert verdict([0.85, 0.88], [0.90, 0.90]) == "worse"
    with pytest.raises(InputError, match="one per seed"):
        verdict([0.9, 0.8], [0.9])

    def run(ours, perlin):
        return {
            "synthetic": {"test": {"all": dict.fromkeys(ds.METRICS, ours)}},
            "perlin": {"test": {"all": dict.fromkeys(ds.METRICS, perlin)}},
        }

    assert set(comparison(run(0.905, 0.9))["perlin"].values()) == {"tie"}
    assert set(comparison(run(0.95, 0.9))["perlin"].values()) == {"better"}
    assert set(comparison(run(0.95, 0.9), run(0.89, 0.9))["perlin"].values()) == {"tie"}  # seeds disagree


# -- baselines and detector ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["perlin", "cutpaste"])
def test_baselines_make_valid_pairs_that_change_only_the_mask(kind):
    rng = np.random.default_rng(0)
    for _ in range(5):
        image, source = rng.random((32, 32, 3), dtype=np.float32), rng.random((32, 32, 3), dtype=np.float32)
        out, mask = perlin_anomaly(image, source, rng) if kind == "perlin" else cutpaste_anomaly(image, rng)
        assert out.shape == image.shape and out.dtype == np.float32 and mask.shape == (32, 32)
        assert mask.any() and not mask.all()
        assert 0 <= out.min() and out.max() <= 1
        np.testing.assert_array_equal(out[~mask], image[~mask])
        assert np.abs(out[mask] - image[mask]).mean() > 0.01


def test_perlin_masks_vary_in_scale_and_are_reproducible():
    a = [perlin_mask(64, np.random.default_rng(s)).mean() for s in range(8)]
    assert len({round(x, 3) for x in a}) > 4
    np.testing.assert_array_equal(perlin_mask(64, np.random.default_rng(3)), perlin_mask(64, np.random.default_rng(3)))


def test_perlin_draws_draems_scales_and_rotation(monkeypatch):
    """DRAEM: 2^k lattice cells per axis with k uniform in 0..5 (torch.randint(0, 6)), the noise rotated by an angle
    uniform in [-90, 90] degrees before the 0.5 threshold."""
    drawn = []

    def recording(shape, res, rng, angle=0.0):
        drawn.append((tuple(res), angle))
        return perlin_noise(shape, res, rng, angle)

    monkeypatch.setattr(baselines, "perlin_noise", recording)
    rng = np.random.default_rng(0)
    for _ in range(300):
        perlin_mask(64, rng)
    cells = {c for res, _ in drawn for c in res}
    assert cells == {1, 2, 4, 8, 16, 32}  # 2^6 was drawn too, and has no lattice cell wider than 1 px at 64 px
    angles = np.array([a for _, a in drawn])
    assert angles.min() >= -90 and angles.max() <= 90 and angles.min() < -80 and angles.max() > 80
    assert abs(angles.mean()) < 10


def test_perlin_rotation_turns_the_noise_and_fills_the_corners_with_zero():
    plain = perlin_noise((64, 64), (4, 4), np.random.default_rng(1))
    turned = perlin_noise((64, 64), (4, 4), np.random.default_rng(1), angle=90)
    assert np.allclose(turned, np.rot90(plain, 1)) or np.allclose(turned, np.rot90(plain, -1))
    assert not np.allclose(turned, plain)
    at45 = perlin_noise((64, 64), (4, 4), np.random.default_rng(1), angle=45)
    for corner in (at45[:6, :6], at45[:6, -6:], at45[-6:, :6], at45[-6:, -6:]):
        assert (corner == 0).all()  # rotated in from outside the noise image: DRAEM's fill, no anomaly there
    assert (at45[24:40, 24:40] != 0).mean() > 0.9


def test_perlin_blobs_keep_their_relative_size_at_small_images():
    """The same draw at 64 (and 32) px and at 256 px covers the same part of the image: the lattice spans the image,
    so the periods scale with it. (64 px masks were speckle from a 2^6 scale; 32 px ones were 2x too coarse.)"""
    from scipy import ndimage

    def area_at(size, seed):
        return perlin_mask(size, np.random.default_rng(seed))

    def pooled(mask, f):  # the 256-px mask seen at the small size: majority of each f x f block
        s = mask.shape[0] // f
        return mask.reshape(s, f, s, f).mean((1, 3)) >= 0.5

    ratios, specks = [], []
    for seed in range(40):
        small, big = area_at(64, seed), pooled(area_at(256, seed), 4)
        ratios.append(small.mean() / big.mean())
        labelled, _ = ndimage.label(small, structure=np.ones((3, 3)))
        sizes = np.bincount(labelled.ravel())[1:]
        specks.append((sizes == 1).sum() / small.sum())  # share of the mask in isolated single pixels
    ratios = np.array(ratios)
    assert ((ratios > 0.5) & (ratios < 2)).mean() >= 0.975, ratios
    assert np.mean(specks) < 0.08, np.mean(specks)
    ious, ratios32 = [], []
    for seed in range(40):
        small, big = area_at(32, seed), pooled(area_at(256, seed), 8)
        ious.append((small & big).sum() / max((small | big).sum(), 1))
        ratios32.append(small.mean() / max(big.mean(), 1e-9))
    assert np.median(ious) > 0.15 and 0.67 < np.median(ratios32) < 1.5, (np.median(ious), np.median(ratios32))


def test_image_score_pools_with_the_padding_counted_as_draem():
    """DRAEM: avg_pool2d(map, 21, stride=1, padding=10), whose default counts the zero padding in the mean."""
    assert pool_kernel(256) == 21
    maps = torch.zeros(1, 256, 256)
    maps[0, :11, :11] = 1.0  # an 11 x 11 response in the corner: every 21 x 21 box sees at most 121 of its pixels
    assert image_scores(maps, 21).item() == pytest.approx(121 / 441)  # without the padding it was 121 / 121 = 1
    maps[0, 100:121, 100:121] = 0.5
    assert image_scores(maps, 21).item() == pytest.approx(0.5)


def test_the_detector_learns_a_trivial_task():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Detector(base=8, levels=3)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)

    def batch(n):
        x = rng.uniform(0.2, 0.4, size=(n, 3, 32, 32)).astype(np.float32)
        m = np.zeros((n, 32, 32), dtype=bool)
        for i in range(n // 2):
            y0, x0 = rng.integers(0, 24, size=2)
            m[i, y0 : y0 + 8, x0 : x0 + 8] = True
        x[:, :, :, :][np.broadcast_to(m[:, None], x.shape)] = 0.9
        return torch.from_numpy(x), torch.from_numpy(m)

    for _ in range(80):
        x, m = batch(8)
        loss = focal_loss(model(x), m)
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    x, m = batch(8)
    with torch.no_grad():
        maps = torch.softmax(model(x), 1)[:, 1].numpy()
    assert binary_metrics(m.numpy(), maps)["auroc"] > 0.95


# -- reading the real and synthetic pairs ------------------------------------------------------------------------


def _category_256(root, mask_for):
    """plate at 256 px: 2 normals, 1 good test image, scratch 000-002 (000 the reference, 001 and 002 held out)
    with the masks `mask_for(index)` gives (uint8 or uint16 arrays)."""
    rng = np.random.default_rng(0)
    base = root / "plate"
    for folder in ("train/good", "test/good", "test/scratch", "ground_truth/scratch"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    for folder, n in (("train/good", 2), ("test/good", 1), ("test/scratch", 3)):
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(base / folder / f"{i:03d}.png")
    for i in range(3):
        Image.fromarray(mask_for(i)).save(base / "ground_truth" / "scratch" / f"{i:03d}_mask.png")
    return load_category(root, "plate")


def _line(value=255, dtype=np.uint8):
    m = np.zeros((256, 256), dtype=dtype)
    m[40:200, 101] = value  # 1 px wide at column 101: nearest from 256 to 64 samples columns 4k + 2, never 101
    return m


def test_thin_and_0_1_masks_stay_anomalous_at_the_detectors_size(tmp_path):
    masks = {0: _line(), 1: _line(), 2: _line(value=1)}  # 002 stored 0/1, as some tools write masks
    split = RealSplit.read(_category_256(tmp_path, masks.__getitem__), 64)
    assert split.test.defects == ["scratch", "scratch", "good"]
    assert split.test.labels.tolist() == [True, True, False]  # from the folders
    for m in split.test.masks[:2]:
        assert m[10:50, 25].all() and m.sum() == 40  # the line, max-pooled: column 101 // 4, rows 40 // 4 .. 200 // 4
    assert not split.test.masks[2].any()
    assert split.references.masks[0][10:50, 25].all()
    # a 16-bit mask (0/65535 or 0/1) and a colour one read alike
    for i, array in enumerate((_line(65535, np.uint16), _line(1, np.uint16))):
        Image.fromarray(array).save(tmp_path / f"m16_{i}.png")
        assert read_mask(tmp_path / f"m16_{i}.png", 64, tmp_path / "plate" / "test" / "scratch" / "001.png").sum() == 40
    Image.fromarray(np.stack([_line(), _line() * 0, _line() * 0], -1)).save(tmp_path / "red.png")
    assert read_mask(tmp_path / "red.png", 64, tmp_path / "plate" / "test" / "scratch" / "001.png").sum() == 40


def test_an_anomalous_image_with_an_empty_mask_is_refused_naming_it(tmp_path):
    masks = {0: _line(), 1: np.zeros((256, 256), np.uint8), 2: _line()}
    cat = _category_256(tmp_path, masks.__getitem__)
    with pytest.raises(InputError, match=r"empty mask .*001_mask\.png.*test/scratch/001\.png") as err:
        RealSplit.read(cat, 64)
    assert err.value.argument == "real"
    # the synthetic set's pairs go through the same reader
    image = tmp_path / "plate" / "test" / "scratch" / "000.png"
    empty = tmp_path / "plate" / "ground_truth" / "scratch" / "001_mask.png"
    with pytest.raises(InputError, match="empty mask") as err:
        read_pairs([(image, empty, "scratch")], 64, "synthetic")
    assert err.value.argument == "synthetic"
    thin = read_pairs([(image, tmp_path / "plate" / "ground_truth" / "scratch" / "000_mask.png", "scratch")], 64)
    assert thin.masks[0].sum() == 40 and thin.labels.tolist() == [True]


# -- the harness ----------------------------------------------------------------------------------------------------


def test_downstream_end_to_end_writes_the_comparison(real, tmp_path):
    synth = _synthetic_like(real, tmp_path / "synth")
    report = evaluate_downstream(real, "plate", tmp_path / "out", synthetic=synth, settings=TINY, progress=False)
    assert list(report["results"]) == ["synthetic", "perlin", "cutpaste", "real-train"]
    for r in report["results"].values():
        assert set(r["test"]) == {"all", "hole", "scratch"}
        assert all(0 <= v <= 1 for v in r["test"]["all"].values())
        assert r["selected_step"] in (10, 20, 30)
    assert set(report["synthetic_beats"]) == {"perlin", "cutpaste", "real-train"}
    for name, verdicts in report["synthetic_beats"].items():
        for metric, said in verdicts.items():
            ours, theirs = (
                report["results"]["synthetic"]["test"]["all"][metric],
                report["results"][name]["test"]["all"][metric],
            )
            want = (
                "better"
                if ours > theirs + VERDICT_TOLERANCE
                else "worse"
                if ours < theirs - VERDICT_TOLERANCE
                else "tie"
            )
            assert said == want, (name, metric, ours, theirs)
    assert report["verdict_tolerance"] == VERDICT_TOLERANCE
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| real-train |" in md and "optimistic" in md
    for plot in ("roc", "pr", "per_type", "detections"):
        assert (tmp_path / "out" / "plots" / f"{plot}.png").stat().st_size > 0
    # 4 held-out defects per type x 2 types + 3 good test images; 2 synthetic pairs per type minus validation
    assert report["results"]["real-train"]["train_pairs"] + 1 == 4


def test_resume_after_a_kill_gives_the_same_metrics(real, tmp_path, monkeypatch):
    whole = evaluate_downstream(real, "plate", tmp_path / "a", baselines=("perlin",), settings=TINY, progress=False)
    calls = {"n": 0}
    real_loss = ds.focal_loss

    def killed_at_step_25(logits, mask):
        calls["n"] += 1
        if calls["n"] == 26:
            raise KeyboardInterrupt  # what a kill looks like from here: after the step-20 state, before the end
        return real_loss(logits, mask)

    monkeypatch.setattr(ds, "focal_loss", killed_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        evaluate_downstream(real, "plate", tmp_path / "b", baselines=("perlin",), settings=TINY, progress=False)
    assert not (tmp_path / "b" / "perlin" / ds.METRICS_FILE).exists()
    monkeypatch.setattr(ds, "focal_loss", real_loss)
    with pytest.raises(InputError, match="--resume"):
        evaluate_downstream(real, "plate", tmp_path / "b", baselines=("perlin",), settings=TINY, progress=False)
    again = evaluate_downstream(
        real, "plate", tmp_path / "b", baselines=("perlin",), settings=TINY, resume=True, progress=False
    )
    assert again["results"] == whole["results"]


def test_nan_loss_stops_and_keeps_the_last_good_state(real, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = ds.focal_loss

    def nan_at_step_15(logits, mask):
        calls["n"] += 1
        loss = real_loss(logits, mask)
        return loss * float("nan") if calls["n"] == 16 else loss

    monkeypatch.setattr(ds, "focal_loss", nan_at_step_15)
    with pytest.raises(TrainingError, match="step 15") as err:
        evaluate_downstream(real, "plate", tmp_path / "o", baselines=("perlin",), settings=TINY, progress=False)
    assert "--resume" in str(err.value)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "o" / "perlin" / ds.STATE_FILE), framework="pt") as f:
        assert json.loads(f.metadata()["meta"])["step"] == 10
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys() if k.startswith("model."))


def test_bad_input_is_named_and_writes_nothing(real, tmp_path):
    def refused(match, **kw):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        args = {"settings": TINY, "progress": False, **kw}
        with pytest.raises(InputError, match=match):
            evaluate_downstream(args.pop("real", real), args.pop("category", "plate"), out, **args)
        assert not out.exists() or not any(out.rglob("*.safetensors"))

    refused("synthetic", synthetic=tmp_path / "nowhere")
    not_generate = tmp_path / "flat" / "plate" / "hole"
    not_generate.mkdir(parents=True)
    refused("metadata.jsonl", synthetic=tmp_path / "flat")
    foreign = _synthetic_like(real, tmp_path / "foreign")
    (foreign / "plate" / "hole").rename(foreign / "plate" / "dent")
    refused("dent", synthetic=foreign)
    broken = _synthetic_like(real, tmp_path / "broken")
    (broken / "plate" / "hole" / "mask" / "0001.png").unlink()
    refused("mask .mask/0001.png. is not a file", synthetic=broken)
    unpaired = _synthetic_like(real, tmp_path / "unpaired")
    Image.new("L", (20, 20)).save(unpaired / "plate" / "hole" / "mask" / "0000.png")
    refused("do not pair|size of its image", synthetic=unpaired)
    blank = _synthetic_like(real, tmp_path / "blank")
    Image.new("L", (32, 32)).save(blank / "plate" / "hole" / "mask" / "0000.png")
    refused(r"empty mask .*hole/mask/0000\.png", synthetic=blank)
    refused("baseline", baselines=("gan",))
    refused("size", settings=DownstreamSettings(size=30, levels=3))
    refused("batch_size", settings=DownstreamSettings(size=32, levels=3, batch_size=1))
    few = tmp_path / "few"
    make_mvtec_like(few, "plate", size=32, n_good=4, n_per_defect=1, defects=("hole",))
    shutil.rmtree(few / "plate" / "test" / "hole")
    (few / "plate" / "test" / "hole").mkdir()
    refused("held-out real defects", real=few)
    # Issue 28: each refused before any training step or file (these used to crash late, or silently pass)
    refused("levels", settings=DownstreamSettings(size=32, levels=0))
    refused("seed", settings=dataclasses.replace(TINY, seed=-1))
    refused("val_fraction", settings=dataclasses.replace(TINY, val_fraction=1.0))
    truncated = _synthetic_like(real, tmp_path / "truncated")
    png = truncated / "plate" / "hole" / "image" / "0001.png"
    png.write_bytes(png.read_bytes()[:60])
    refused(r"synthetic: expected a readable image file, got .*0001\.png", synthetic=truncated)
    no_good = tmp_path / "no_good"
    shutil.copytree(real, no_good)
    shutil.rmtree(no_good / "plate" / "test" / "good")
    refused("test/good", real=no_good)


def test_a_missing_scikit_learn_is_found_before_any_training(real, tmp_path, monkeypatch):
    import sys

    import acsdk.evaluation.downstream as downstream

    monkeypatch.setitem(sys.modules, "sklearn", None)
    trained = []
    monkeypatch.setattr(downstream, "train_one", lambda *a, **k: trained.append(a))
    with pytest.raises(InputError, match="scikit-learn"):
        evaluate_downstream(real, "plate", tmp_path / "o", settings=TINY, progress=False)
    assert not trained and not (tmp_path / "o").exists()


def test_junk_files_in_test_good_are_skipped_as_the_mvtec_reader_skips_them(real, tmp_path):
    junk = tmp_path / "junk"
    shutil.copytree(real, junk)
    (junk / "plate" / "test" / "good" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (junk / "plate" / "test" / "good" / "._000.png").write_bytes(b"\0\5\26\7")  # a macOS resource fork
    from acsdk.data import load_category

    split = RealSplit.read(load_category(junk, "plate"), 32)
    assert sum(d == "good" for d in split.test.defects) == 3


def test_resume_with_other_settings_is_refused(real, tmp_path):
    evaluate_downstream(real, "plate", tmp_path / "o", baselines=("cutpaste",), settings=TINY, progress=False)
    other = DownstreamSettings(**{**TINY.__dict__, "lr": 0.01})
    with pytest.raises(InputError, match="settings"):
        evaluate_downstream(
            real, "plate", tmp_path / "o", baselines=("cutpaste",), settings=other, resume=True, progress=False
        )
    # a run made before labels came from folders and the Perlin baseline became DRAEM's does not resume either
    record = json.loads((tmp_path / "o" / ds.SETTINGS_FILE).read_text())
    del record["protocol"]
    (tmp_path / "o" / ds.SETTINGS_FILE).write_text(json.dumps(record))
    with pytest.raises(InputError, match="different protocol"):
        evaluate_downstream(
            real, "plate", tmp_path / "o", baselines=("cutpaste",), settings=TINY, resume=True, progress=False
        )


def test_cli_evaluate_downstream(real, tmp_path, capsys):
    args = ["evaluate", "downstream", "--real", str(real), "--category", "plate", "--out", str(tmp_path / "o")]
    args += ["--baseline", "cutpaste", "--size", "32", "--steps", "10", "--batch-size", "4", "--width", "4"]
    assert cli([*args, "--levels", "3", "--eval-every", "5", "--quiet"]) == 0
    assert "cutpaste: image AUROC" in capsys.readouterr().out
    assert cli([*args, "--levels", "3", "--quiet"]) == 2  # the run exists: refused without --resume
    assert "--resume" in capsys.readouterr().err


def test_cli_evaluate_generation_without_weights_names_the_files(real, tmp_path, capsys):
    synth = _synthetic_like(real, tmp_path / "synth")
    args = ["evaluate", "generation", "--real", str(real), "--category", "plate", "--synthetic", str(synth)]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "vgg16-397923af.pth" in err and "pt_inception-2015-12-05" in err


def test_kill_9_and_resume_gives_the_same_metrics(real, tmp_path):
    """A real SIGKILL mid-run (subprocesses: the same interpreter and threads for the whole and the resumed run)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def command(out, *extra):
        args = ["evaluate", "downstream", "--real", str(real), "--category", "plate", "--out", str(out)]
        args += ["--baseline", "perlin", "--size", "32", "--steps", "60", "--batch-size", "4", "--width", "4"]
        return [sys.executable, "-m", "acsdk", *args, "--levels", "3", "--eval-every", "10", "--quiet", *extra]

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(command(tmp_path / "whole"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(command(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "perlin" / ds.STATE_FILE
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (tmp_path / "killed" / "perlin" / ds.METRICS_FILE).exists()
    subprocess.run(command(tmp_path / "killed", "--resume"), check=True, env=env, capture_output=True)
    whole = json.loads((tmp_path / "whole" / "report.json").read_text())["results"]
    resumed = json.loads((tmp_path / "killed" / "report.json").read_text())["results"]
    assert resumed == whole


# -- --protocol anomalydiffusion (issue 28 item 11) ------------------------------------------------------------------


def test_the_anomalydiffusion_preset_is_its_codes_settings():
    ad = DownstreamSettings.preset("anomalydiffusion")
    assert (ad.size, ad.base_width, ad.levels, ad.lr, ad.batch_size) == (256, 64, 6, 1e-4, 8)
    assert ad.steps == 200 * 63 == 12600  # 200 epochs of 500 samples in batches of 8: 63 batches an epoch
    assert ad.eval_every == 63  # one selection point per epoch
    assert ad.protocol == "anomalydiffusion" and ad.selects_on_test and not ad.flips
    ad.check()
    assert DownstreamSettings.preset() == DownstreamSettings() and DownstreamSettings().protocol == "acsdk"
    assert DownstreamSettings().flips and not DownstreamSettings().selects_on_test
    assert DownstreamSettings.preset("anomalydiffusion", steps=10).steps == 10  # any field can be overridden
    with pytest.raises(InputError, match="protocol"):
        DownstreamSettings.preset("draem")
    with pytest.raises(InputError, match="protocol"):
        DownstreamSettings(protocol="draem").check()


def test_batches_are_never_flipped_under_the_anomalydiffusion_protocol():
    # One anomalous pair with a mask in the top-left corner only: any flip moves it.
    mask = np.zeros((1, 8, 8), dtype=bool)
    mask[0, :2, :3] = True
    pairs = Pairs(np.zeros((1, 8, 8, 3), np.uint8), mask, ["a"], ["hole"])
    normals = Pairs(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8), bool), ["n"], ["good"])

    def anomalous_masks(settings):
        out = [ds._batch(TrainingSet("x", pairs), normals, 4, np.random.default_rng([0, s]), settings.flips)[1][2:]
               for s in range(20)]  # fmt: skip
        return torch.cat(out).numpy()

    assert (anomalous_masks(DownstreamSettings.preset("anomalydiffusion")) == mask).all()
    assert not (anomalous_masks(DownstreamSettings()) == mask).all()  # acsdk's protocol flips


def test_grid_metrics_on_hand_checkable_cases():
    # F1: normal pixels 0 and 0.5, defect pixels 0.52 and 1. Exactly, the threshold 0.52 separates them (F1 1).
    # The 21-step grid 0, 0.05, ..., 1 has no threshold in (0.5, 0.52]: at 0.50 precision 2/3, recall 1 (F1 0.8),
    # at 0.55 precision 1, recall 1/2 (F1 2/3).
    mask = np.array([[[0, 0], [1, 1]]], dtype=bool)
    maps = np.array([[[0.0, 0.5], [0.52, 1.0]]])
    assert binary_metrics(mask, maps)["f1_max"] == 1.0
    assert f1_max_grid(mask, maps) == pytest.approx(0.8)
    # AU-PRO: test_au_pro_of_a_hand_computed_case's image. 100 thresholds from 0 to 0.9 (step 0.0091) separate
    # every distinct score, so the grid curve is the exact one (0.72222). With 3 thresholds (0, 0.45, 0.9) the curve
    # is (0, 0), (0, 1/2) [0.9], (1/6, 1/2) [0.8 enters], (1, 1) [all]: up to FPR 0.3 the area is
    # 1/6 * 1/2 + (0.3 - 1/6) * (1/2 + 0.58) / 2 (PRO at 0.3 interpolated: 1/2 + (0.3 - 1/6) / (5/6) / 2 = 0.58).
    mask = np.array([[[1, 1, 0, 0], [0, 0, 0, 0]]], dtype=bool)
    scores = np.array([[[0.9, 0.4, 0.8, 0.3], [0.2, 0.1, 0.05, 0.0]]])
    assert au_pro_grid(mask, scores) == pytest.approx(au_pro(mask, scores)) == pytest.approx(0.72222, abs=1e-5)
    assert au_pro_grid(mask, scores, steps=3) == pytest.approx((1 / 12 + (0.3 - 1 / 6) * 1.08 / 2) / 0.3)
    # PRO per threshold is the mean over regions, whatever their size (test_au_pro_weights_every_region_equally)
    two = np.zeros((1, 4, 4), dtype=bool)
    two[0, 0, 0] = True
    two[0, 3, 1:4] = True
    s2 = np.where(two, 0.0, 0.5)
    s2[0, 0, 0] = 1.0
    assert au_pro_grid(two, s2) == pytest.approx(0.5)
    assert set(grid_metrics(mask, scores)) == set(GRID_METRICS) == {"pixel_f1_max_grid21", "pixel_au_pro_100"}
    with pytest.raises(InputError, match="steps"):
        au_pro_grid(mask, scores, steps=1)


def test_grid_metrics_are_close_to_the_exact_ones_on_smooth_maps():
    # Blobs in noise, as a detector's maps look: the 100-threshold AU-PRO is within 0.005 of the exact value here
    # (0.9820 vs 0.9819), and the grid F1-max, the exact curve sampled at 21 thresholds, is never above the exact one.
    from scipy import ndimage

    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[:64, :64]
    masks = np.zeros((6, 64, 64), dtype=bool)
    for i in range(6):
        for _ in range(3):
            y, x, r = rng.integers(5, 59), rng.integers(5, 59), rng.integers(2, 6)
            masks[i] |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    maps = ndimage.gaussian_filter(masks.astype(float), (0, 2, 2)) + 0.3 * rng.random(masks.shape)
    assert abs(au_pro_grid(masks, maps) - au_pro(masks, maps)) < 0.005
    exact, grid = binary_metrics(masks, maps)["f1_max"], f1_max_grid(masks, maps)
    assert grid <= exact and exact - grid < 0.05


def test_cli_protocol_anomalydiffusion_end_to_end(real, tmp_path, capsys, monkeypatch):
    flips = []
    real_batch = ds._batch
    monkeypatch.setattr(ds, "_batch", lambda *a: flips.append(a[4]) or real_batch(*a))
    out = tmp_path / "ad"
    args = ["evaluate", "downstream", "--real", str(real), "--category", "plate", "--out", str(out)]
    args += ["--baseline", "cutpaste", "--protocol", "anomalydiffusion", "--quiet"]
    # the preset's U-Net (64 x 6) and 12,600 steps, overridden to stay quick: explicit flags beat the preset
    small = ["--size", "32", "--steps", "10", "--width", "4", "--levels", "3", "--eval-every", "5"]
    assert cli([*args, *small]) == 0
    printed = capsys.readouterr().out
    assert "grid F1-max" in printed and "on test" in printed and TEST_SELECTION_NOTE in printed
    assert flips and not any(flips)  # every batch drawn without flips
    settings = json.loads((out / ds.SETTINGS_FILE).read_text())["settings"]
    assert settings["protocol"] == "anomalydiffusion"
    assert (settings["steps"], settings["base_width"], settings["size"]) == (10, 4, 32)  # the flags
    assert (settings["lr"], settings["batch_size"]) == (1e-4, 8)  # the preset
    report = json.loads((out / "report.json").read_text())
    assert (
        report["selection"]
        == TEST_SELECTION_NOTE
        == "selected on the test set, as AnomalyDiffusion's code does; optimistic"
    )
    r = report["results"]["cutpaste"]
    assert r["selected_on"] == "test" and r["selection"] == TEST_SELECTION_NOTE
    assert r["selected_step"] == r["best_on_test"]["step"] and r["validation_pairs"] == 0
    for part in r["test"].values():
        assert set(GRID_METRICS) <= set(part) and all(0 <= part[k] <= 1 for k in GRID_METRICS)
    history = json.loads((out / "cutpaste" / ds.METRICS_FILE).read_text())["history"]
    assert [p["step"] for p in history] == [5, 10] and not any("validation" in p for p in history)
    md = (out / "report.md").read_text()
    assert TEST_SELECTION_NOTE in md and "pixel_f1_max_grid21" in md and "pixel_au_pro_100" in md
    assert "anomalydiffusion" in md and "never on the test set" not in md

    # resume across protocols is refused, both ways, naming the difference; the run is left as it was
    before = (out / ds.SETTINGS_FILE).read_text()
    same_but_acsdk = DownstreamSettings(**{**settings, "protocol": "acsdk"})
    with pytest.raises(InputError, match=r"different settings\.protocol$"):
        evaluate_downstream(
            real, "plate", out, baselines=("cutpaste",), settings=same_but_acsdk, resume=True, progress=False
        )
    assert cli([*args[:-3], "--protocol", "acsdk", "--quiet", "--resume", *small]) == 2
    assert "settings.protocol" in capsys.readouterr().err
    assert (out / ds.SETTINGS_FILE).read_text() == before


def test_the_default_protocol_reports_no_grid_metrics_and_selects_on_validation(real, tmp_path):
    report = evaluate_downstream(real, "plate", tmp_path / "o", baselines=("cutpaste",), settings=TINY, progress=False)
    r = report["results"]["cutpaste"]
    assert r["selected_on"] == "validation" and report["selection"].startswith("selected on a validation split")
    assert set(r["test"]["all"]) == set(ds.METRICS)
    assert "AnomalyDiffusion's code does" not in (tmp_path / "o" / "report.md").read_text()
    # a run recorded before protocols had names (no settings.protocol) ran acsdk's, and resumes under it
    file = tmp_path / "o" / ds.SETTINGS_FILE
    record = json.loads(file.read_text())
    del record["settings"]["protocol"]
    file.write_text(json.dumps(record))
    again = evaluate_downstream(
        real, "plate", tmp_path / "o", baselines=("cutpaste",), settings=TINY, resume=True, progress=False
    )
    assert again["results"] == report["results"]
    with pytest.raises(InputError, match=r"different settings\.protocol"):
        evaluate_downstream(
            real, "plate", tmp_path / "o", baselines=("cutpaste",), resume=True, progress=False,
            settings=dataclasses.replace(TINY, protocol="anomalydiffusion"),
        )  # fmt: skip
