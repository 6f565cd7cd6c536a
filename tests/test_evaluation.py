"""acsdk evaluate downstream: metrics against hand-computed cases, the baselines, the detector, resume, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from acsdk import InputError, TrainingError
from acsdk.apps.cli import main as cli
from acsdk.data import make_mvtec_like
from acsdk.evaluation import DownstreamSettings, au_pro, binary_metrics, detection_metrics, evaluate_downstream
from acsdk.evaluation import downstream as ds
from acsdk.evaluation.baselines import cutpaste_anomaly, perlin_anomaly, perlin_mask
from acsdk.evaluation.detector import Detector, focal_loss

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
        for metric, verdict in verdicts.items():
            ours, theirs = (
                report["results"]["synthetic"]["test"]["all"][metric],
                report["results"][name]["test"]["all"][metric],
            )
            assert verdict == ("better" if ours > theirs else "worse" if ours < theirs else "tie")
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
    refused("baseline", baselines=("gan",))
    refused("size", settings=DownstreamSettings(size=30, levels=3))
    refused("batch_size", settings=DownstreamSettings(size=32, levels=3, batch_size=1))
    few = tmp_path / "few"
    make_mvtec_like(few, "plate", size=32, n_good=4, n_per_defect=1, defects=("hole",))
    shutil.rmtree(few / "plate" / "test" / "hole")
    (few / "plate" / "test" / "hole").mkdir()
    refused("held-out real defects", real=few)


def test_resume_with_other_settings_is_refused(real, tmp_path):
    evaluate_downstream(real, "plate", tmp_path / "o", baselines=("cutpaste",), settings=TINY, progress=False)
    other = DownstreamSettings(**{**TINY.__dict__, "lr": 0.01})
    with pytest.raises(InputError, match="settings"):
        evaluate_downstream(
            real, "plate", tmp_path / "o", baselines=("cutpaste",), settings=other, resume=True, progress=False
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
