"""Generation metrics: IC-LPIPS (clustering core, LPIPS-VGG network, weight files) and the Inception Score.

Weights are random tensors written in the standard files' exact key layouts, so the loaders are tested against
those layouts without the real (downloaded) files.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from acsdk.data import load_category, make_mvtec_like
from acsdk.errors import InputError
from acsdk.evaluation import generation, inception, lpips
from acsdk.evaluation.generation import evaluate_generation, ic_lpips
from runtime.files import sha256_file

# torchvision's vgg16().features: (index in the Sequential, in channels, out channels) of each 3x3 conv.
VGG16_CONVS = [
    (0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512),
]  # fmt: skip
LIN_CHANNELS = [64, 128, 256, 512, 512]


def _vgg16_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, cin, cout in VGG16_CONVS:
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * math.sqrt(2.0 / (9 * cin))
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.01
    return state


def _lin_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(LIN_CHANNELS)}


def _inception_state(seed: int) -> dict[str, torch.Tensor]:
    """He-scaled random weights (activations stay O(1)), no `num_batches_tracked`, as in the released file."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in inception.state_shapes().items():
        if k.endswith(("conv.weight", "fc.weight")):
            state[k] = torch.randn(shape, generator=g) * math.sqrt(
                (1.0 if k == "fc.weight" else 2.0) / math.prod(shape[1:])
            )
        elif k.endswith(("running_var", "bn.weight")):
            state[k] = torch.rand(shape, generator=g) * 0.5 + 0.75
        else:  # bn.bias, running_mean, fc.bias
            state[k] = torch.randn(shape, generator=g) * 0.05
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The same random LPIPS weights as .pth (a plain dict, torch.save) and .safetensors; Inception as .pth."""
    root = tmp_path_factory.mktemp("weights")
    vgg, lin = _vgg16_state(0), _lin_state(1)
    (root / "pth").mkdir()
    (root / "st").mkdir()
    torch.save(vgg, root / "pth" / "vgg16-397923af.pth")
    torch.save(lin, root / "pth" / "vgg.pth")
    save_file(vgg, str(root / "st" / "vgg16-397923af.safetensors"))
    save_file(lin, str(root / "st" / "vgg.safetensors"))
    torch.save(_inception_state(2), root / "pt_inception-2015-12-05-6726825d.pth")
    return {"root": root, "vgg": vgg, "lin": lin, "inception": root / "pt_inception-2015-12-05-6726825d.pth"}


def _images(seed: int, n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------------------------------- IC-LPIPS core


def test_ic_lpips_toy_example_by_hand():
    # Points on a line, distance |a - b|. Centres 1, 12, 50, 100.
    #   0, 1, 2 -> centre 1 (distances 1, 0, 1 vs >= 10)
    #   10, 11, 13, 20 -> centre 12 (20: |20-12| = 8 < |20-50| = 30)
    #   99 -> centre 100, alone: skipped; centre 50 gets nobody: skipped.
    # cluster {0,1,2}: pairs 1, 2, 1 -> 4/3
    # cluster {10,11,13,20}: pairs 1, 3, 10, 2, 9, 7 -> 32/6 = 16/3
    # IC-LPIPS = (4/3 + 16/3) / 2 = 10/3
    generated = [0.0, 1.0, 2.0, 10.0, 11.0, 13.0, 20.0, 99.0]
    centres = [1.0, 12.0, 50.0, 100.0]
    res = ic_lpips(generated, centres, lambda a, b: np.abs(np.subtract.outer(np.asarray(a), np.asarray(b))))
    assert res["value"] == pytest.approx(10 / 3)
    assert [c["members"] for c in res["clusters"]] == [[0, 1, 2], [3, 4, 5, 6], [], [7]]
    values = [c["value"] for c in res["clusters"]]
    assert values[0] == pytest.approx(4 / 3) and values[1] == pytest.approx(16 / 3)
    assert values[2] is None and values[3] is None


def test_ic_lpips_without_pairs_is_none_and_needs_centres():
    dist = lambda a, b: np.abs(np.subtract.outer(np.asarray(a), np.asarray(b)))  # noqa: E731
    assert ic_lpips([0.0, 10.0], [0.0, 10.0], dist)["value"] is None
    with pytest.raises(InputError):
        ic_lpips([0.0], [], dist)


def test_subsample_is_seeded_and_bounded():
    paths = list(range(20))
    a, b = generation._subsample(paths, 5, seed=3), generation._subsample(paths, 5, seed=3)
    assert a == b and len(a) == 5 and a == sorted(a) and len(set(a)) == 5
    assert generation._subsample(paths, None, 3) == paths and generation._subsample(paths, 50, 3) == paths


def test_type_without_references_clusters_around_all_its_real_anomalies(tmp_path):
    # 2 real anomalies -> floor(2/3) = 0 references, so both become centres: stems 0 and 10 on a line.
    from acsdk.data.mvtec import MVTecCategory, Sample

    real = [Sample(tmp_path / "plate/test/hole" / f"{v:03d}.png", tmp_path / "m.png") for v in (0, 10)]
    cat = MVTecCategory(tmp_path, "plate", [], {"hole": real})
    generated = [tmp_path / f"{v}.png" for v in (1, 2, 4, 9, 12)]  # -> {1,2,4} around 0, {9,12} around 10

    def dist(a, b):
        return np.abs(np.subtract.outer([float(p.stem) for p in a], [float(p.stem) for p in b]))

    entry = generation._ic_lpips_type(cat, "hole", generated, dist, seed=0, max_per_type=None)
    assert entry["centres"].startswith("all real anomalies") and entry["n_centres"] == 2
    # {1,2,4}: pairs 1, 3, 2 -> 2; {9,12}: 3 -> (2 + 3) / 2 = 2.5
    assert entry["value"] == pytest.approx(2.5) and [c["members"] for c in entry["clusters"]] == [3, 2]
    assert entry["clusters"][1]["centre"] == "plate/test/hole/010.png"
    capped = generation._ic_lpips_type(cat, "hole", generated, dist, seed=0, max_per_type=2)
    assert capped["n_used"] == 2 and capped["n_generated"] == 5


# ------------------------------------------------------------------------------------------------- LPIPS network


def test_standard_lpips_layouts_match_the_network():
    assert lpips.backbone_shapes() == {k: tuple(v.shape) for k, v in _vgg16_state(0).items()}
    assert lpips.linear_shapes() == {k: tuple(v.shape) for k, v in _lin_state(0).items()}
    assert sum(math.prod(s) for s in lpips.backbone_shapes().values()) == 14_714_688  # VGG16's conv part


def test_lpips_zero_on_identity_symmetric_positive(weights):
    net, _ = lpips.load_lpips(weights["root"] / "pth")
    x, y = _images(0), _images(1)
    with torch.inference_mode():
        assert torch.equal(net(x, x), torch.zeros(2))
        d_xy, d_yx = net(x, y), net(y, x)
    assert torch.allclose(d_xy, d_yx) and (d_xy > 0).all()


def test_pth_and_safetensors_give_identical_distances(weights):
    a, files_a = lpips.load_lpips(weights["root"] / "pth")
    b, files_b = lpips.load_lpips(weights["root"] / "st")
    assert [f.suffix for f in files_b] == [".safetensors", ".safetensors"]
    c, _ = lpips.load_lpips([files_a[0], files_b[1]])  # an explicit (VGG16, lin) pair, mixed formats
    x, y = _images(2), _images(3)
    with torch.inference_mode():
        assert torch.equal(a(x, y), b(x, y)) and torch.equal(a(x, y), c(x, y))
        # The reference `lpips` 0.1.4 package (LPIPS(net="vgg", version="0.1")) gives these on the same weights and
        # images (its torchvision VGG16 swapped for these weights): the formula, taps and scaling agree.
        assert torch.allclose(a(x, y), torch.tensor([0.7315444, 0.7264202]), atol=1e-5)
    assert torch.equal(a.features[28].weight, weights["vgg"]["features.28.weight"])


def test_pairwise_matrix_matches_direct_form_with_and_without_cache(weights):
    net, _ = lpips.load_lpips(weights["root"] / "pth")
    imgs = {k: _images(10 + k, n=1, size=32)[0] for k in range(5)}
    items = list(imgs)
    ii, jj = np.meshgrid(items, items, indexing="ij")
    with torch.inference_mode():  # every pair through the direct form, in one batch
        direct = net(torch.stack([imgs[i] for i in ii.ravel()]), torch.stack([imgs[j] for j in jj.ravel()]))
    direct = direct.double().numpy().reshape(5, 5)
    roomy = lpips.PairwiseLPIPS(net, size=32, progress=False, loader=imgs.__getitem__)
    tight = lpips.PairwiseLPIPS(net, size=32, progress=False, loader=imgs.__getitem__, cache_bytes=1)
    assert tight.block == 1 and tight.capacity == 1
    for dist in (roomy, tight):
        full = dist(items, items)
        assert np.allclose(full, direct, atol=1e-4) and np.allclose(full, full.T) and (np.diag(full) == 0).all()
        assert np.allclose(dist(items[:2], items[2:]), direct[:2, 2:], atol=1e-4)
    assert roomy.forwards == 5  # each image through the network once


def test_renamed_or_misshaped_key_is_named(weights, tmp_path):
    vgg = dict(weights["vgg"])
    vgg["features.28.weights"] = vgg.pop("features.28.weight")
    save_file(vgg, str(tmp_path / "vgg16.safetensors"))
    with pytest.raises(InputError, match=r"features\.28\.weight") as e:
        lpips.load_lpips([tmp_path / "vgg16.safetensors", weights["root"] / "pth" / "vgg.pth"])
    assert e.value.argument == "lpips_weights" and "vgg16.safetensors" in str(e.value)
    lin = dict(weights["lin"])
    lin["lin3.model.1.weight"] = torch.rand(1, 256, 1, 1)
    torch.save(lin, tmp_path / "vgg.pth")
    with pytest.raises(InputError, match=r"lin3\.model\.1\.weight.*\[1, 256, 1, 1\]") as e:
        lpips.load_lpips([weights["root"] / "pth" / "vgg16-397923af.pth", tmp_path / "vgg.pth"])
    assert e.value.argument == "lpips_weights"


UNPICKLED = []


def _side_effect():
    UNPICKLED.append(True)
    return torch.zeros(1, 64, 1, 1)


class _Payload:
    """Unpickling this runs code: a plain unpickle would call `_side_effect`."""

    def __reduce__(self):
        return (_side_effect, ())


def test_pickle_with_objects_is_refused_not_run(weights, tmp_path):
    torch.save({**weights["lin"], "lin0.model.1.weight": _Payload()}, tmp_path / "vgg.pth")
    with pytest.raises(InputError, match="weights_only") as e:
        lpips.load_lpips([weights["root"] / "pth" / "vgg16-397923af.pth", tmp_path / "vgg.pth"])
    assert e.value.argument == "lpips_weights" and not UNPICKLED


def test_lpips_folder_without_the_linear_file_says_which(weights, tmp_path):
    shutil.copy(weights["root"] / "pth" / "vgg16-397923af.pth", tmp_path)
    with pytest.raises(InputError, match=r"without vgg\.pth.*PerceptualSimilarity|PerceptualSimilarity.*vgg\.pth"):
        lpips.load_lpips(tmp_path)


# ---------------------------------------------------------------------------------------------- Inception Score


def test_inception_score_hand_computed():
    # Identical predictions: p(y|x) = p(y), every KL is 0 -> IS = exp(0) = 1.
    uniform = np.full((20, 1008), 1 / 1008)
    assert inception.inception_score(uniform) == pytest.approx((1.0, 0.0))
    # One-hot over k = 4 classes, cycling, so each of the 10 splits (4 rows) holds each class once:
    # p(y) = 1/4 on those classes, KL(onehot || p(y)) = log 4 for every row -> IS = 4 in every split, std 0.
    onehot = np.eye(1008)[np.arange(40) % 4]
    assert inception.inception_score(onehot, splits=10) == pytest.approx((4.0, 0.0))
    # One split of rows [1,0], [1,0], [0,1], [0,1]: p(y) = (1/2, 1/2), KL = log 2 each -> IS = 2.
    assert inception.inception_score(np.eye(2)[[0, 0, 1, 1]], splits=1) == pytest.approx((2.0, 0.0))
    with pytest.raises(InputError):
        inception.inception_score(np.ones((3, 5)))


def test_inception_loads_standard_layout_and_gives_1008_logits(weights, tmp_path):
    state = torch.load(weights["inception"], map_location="cpu", weights_only=True)
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    # torchvision's inception_v3 has 27,161,264 parameters; less AuxLogits (3,326,696), plus 8 more classes (16,392)
    net = inception.load_inception(weights["inception"])
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    assert torch.equal(net.fc.bias, state["fc.bias"]) and torch.equal(
        net.Mixed_6e.branch7x7dbl_5.bn.running_var, state["Mixed_6e.branch7x7dbl_5.bn.running_var"]
    )
    x8 = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = x8.float()  # 0..255, as torch-fidelity takes it (it maps by (x-128)/128 after the resize, as we do)
    with torch.inference_mode():
        logits, biased = net(x), net(x, with_bias=True)
    assert logits.shape == (2, 1008) and torch.isfinite(logits).all()
    # torch-fidelity 0.4.0's FeatureExtractorInceptionV3 ("logits_unbiased") on these weights and x8 gives these:
    # the TF-port blocks (pools without padding, max-pool in Mixed_7c) agree.
    golden = torch.tensor([[-0.1260023, -1.5511863, -1.0169725], [-0.1380936, -1.5298737, -1.0345373]])
    assert torch.allclose(logits[:, :3], golden, atol=1e-4)
    assert torch.allclose(biased - logits, state["fc.bias"].expand(2, -1), atol=1e-5)
    state["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(state, tmp_path / "inc.pth")
    with pytest.raises(InputError, match=r"fc\.weight.*\[1000, 2048\]") as e:
        inception.load_inception(tmp_path / "inc.pth")
    assert e.value.argument == "inception_weights"


def test_inception_input_resize_is_tensorflow_1x_bilinear_as_torch_fidelity():
    """The resize before Inception equals torch-fidelity 0.4.0's `interpolate_bilinear_2d_like_tensorflow1x` on the
    vectors it produced (tests/data; up, down, and to 299 px, sampled every 13th pixel there); torch's own bilinear
    resize, which IS used before, does not."""
    ref = np.load(Path(__file__).parent / "data" / "tf1_bilinear_torch_fidelity_0.4.0.npz", allow_pickle=False)
    for case, (h, w) in {"up": (41, 37), "down": (29, 31), "is299": (299, 299)}.items():
        x = torch.from_numpy(ref[f"{case}_input"]).float()
        want = torch.from_numpy(ref[f"{case}_output"])
        ours = inception.resize_like_tf1(x, h, w)
        torchs = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        if case == "is299":
            ours, torchs = ours[:, :, ::13, ::13], torchs[:, :, ::13, ::13]
        assert ours.shape == want.shape and torch.allclose(ours, want, atol=1e-3), case
        assert (torchs - want).abs().max() > 1.0, f"{case}: torch's resize should differ (the old, wrong path)"


# ------------------------------------------------------------------------------------------- evaluate_generation


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A procedural MVTec-like root and an `acsdk generate`-shaped dir of 3 pairs per type (copies of real ones)."""
    base = tmp_path_factory.mktemp("gen")
    real = make_mvtec_like(
        base / "real", "plate", size=64, n_good=4, n_per_defect=6, defects=("hole", "scratch"), seed=0
    )
    cat = load_category(real, "plate")
    synth = base / "synth"
    for defect in ("hole", "scratch"):
        ddir = synth / "plate" / defect
        (ddir / "image").mkdir(parents=True)
        (ddir / "mask").mkdir()
        lines = []
        for i, sample in enumerate(cat.held_out(defect)[:3]):
            shutil.copy(sample.image, ddir / "image" / f"{i:04d}.png")
            shutil.copy(sample.mask, ddir / "mask" / f"{i:04d}.png")
            lines.append(json.dumps({"index": i, "image": f"image/{i:04d}.png", "mask": f"mask/{i:04d}.png"}))
        (ddir / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    return real, synth


def test_evaluate_generation_end_to_end(dataset, weights):
    real, synth = dataset
    res = evaluate_generation(
        real,
        "plate",
        synth,
        lpips_weights=weights["root"] / "pth",
        inception_weights=weights["inception"],
        progress=False,
    )
    ic = res["ic_lpips"]
    assert set(ic["per_type"]) == {"hole", "scratch"} and ic["image_size"] == 256
    for entry in ic["per_type"].values():
        # 6 real anomalies -> 2 references = 2 centres; 3 generated images -> some cluster has a pair
        assert entry["n_centres"] == 2 and entry["centres"] == "references" and entry["n_used"] == 3
        assert sum(c["members"] for c in entry["clusters"]) == 3
        assert math.isfinite(entry["value"]) and entry["value"] > 0
    assert ic["overall"] == pytest.approx(np.mean([e["value"] for e in ic["per_type"].values()]))
    assert ic["lpips_forwards"] == 2 * (3 + 2)  # each image once: the cache serves the pairwise step
    assert res["weights"]["lpips_linear"]["sha256"] == sha256_file(weights["root"] / "pth" / "vgg.pth")
    assert res["weights"]["inception"]["sha256"] == sha256_file(weights["inception"])
    assert (
        res["versions"]["torch"] == torch.__version__
        and res["seed"] == 0
        and res["generated"]
        == {
            "hole": 3,
            "scratch": 3,
        }
    )
    iscore = res["inception_score"]
    assert iscore["n_images"] == 6 and iscore["splits"] == 6 and math.isfinite(iscore["mean"])
    json.dumps(res)  # the CLI writes it as JSON


def test_only_inception_weights_skips_ic_lpips_with_what_it_needs(dataset, weights):
    real, synth = dataset
    res = evaluate_generation(real, "plate", synth, inception_weights=weights["inception"], progress=False)
    assert "vgg16-397923af.pth" in res["ic_lpips"]["skipped"] and "vgg.pth" in res["ic_lpips"]["skipped"]
    assert res["inception_score"]["n_images"] == 6


def test_no_weights_names_the_files(dataset):
    real, synth = dataset
    with pytest.raises(InputError) as e:
        evaluate_generation(real, "plate", synth)
    msg = str(e.value)
    assert "lpips_weights" in e.value.argument and "inception_weights" in e.value.argument
    assert "vgg16-397923af.pth" in msg and "vgg.pth" in msg and "pt_inception-2015-12-05-6726825d.pth" in msg


def _broken(synth, tmp_path, how: str):
    bad = tmp_path / "synth"
    shutil.copytree(synth, bad)
    hole = bad / "plate" / "hole"
    if how == "no category":
        shutil.rmtree(bad / "plate")
        (bad / "bottle").mkdir()
    elif how == "no metadata":
        (hole / "metadata.jsonl").unlink()
    elif how == "missing file":
        (hole / "image" / "0001.png").unlink()
    elif how == "unknown defect":
        shutil.copytree(hole, bad / "plate" / "crack")
    elif how == "no pairs":
        for d in ("hole", "scratch"):
            (bad / "plate" / d / "metadata.jsonl").write_text("")
    return bad


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("no category", "no folder 'plate'"),
        ("no metadata", "without metadata.jsonl"),
        ("missing file", "image/0001.png"),
        ("unknown defect", "crack"),
        ("no pairs", "no pairs"),
    ],
)
def test_bad_synthetic_layout_names_synthetic(dataset, weights, tmp_path, how, says):
    real, synth = dataset
    bad = _broken(synth, tmp_path, how)
    with pytest.raises(InputError, match=says) as e:
        evaluate_generation(real, "plate", bad, lpips_weights=weights["root"] / "pth", progress=False)
    assert e.value.argument == "synthetic" and "acsdk generate" in str(e.value)
