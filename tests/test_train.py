"""Adapter training on the tiny checkpoint: loss falls, frozen weights stay, resume is exact, output exports."""

import json

import pytest
import torch
from safetensors.torch import load_file

from acsdk import InputError
from acsdk.data import make_mvtec_like
from acsdk.models import AnomalyControlModel
from acsdk.models.checkpoint import ADAPTER_FILE
from acsdk.training.adapter import (
    TrainConfig,
    build_dataset,
    load_state,
    loss_on_batch,
    train,
    trainable_parameters,
)

CFG = TrainConfig(steps=4, batch_size=2, grad_accum=1, lr=1e-3, save_every=2, asea_steps=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    make_mvtec_like(root, "plate", n_good=2, n_per_defect=6, defects=("hole", "scratch"))
    return root


@pytest.fixture(scope="module")
def trained(tiny_ckpt, data, tmp_path_factory):
    return train(tiny_ckpt, data, "plate", tmp_path_factory.mktemp("t") / "run", CFG, progress=False)


def test_steps_lower_the_loss_on_a_fixed_batch(tiny_ckpt, data, tmp_path):
    from diffusers import DDPMScheduler

    model = AnomalyControlModel.from_pretrained(tiny_ckpt)
    params = trainable_parameters(model)
    for p in params:
        p.requires_grad_(True)
    ds = build_dataset(model, data, "plate", tmp_path / "f", 1, "digest")
    sched = DDPMScheduler.from_config(model.scheduler_config)
    cfg = TrainConfig(drop_features=0, drop_caption=0, drop_both=0)

    def fixed_loss():
        return loss_on_batch(model, ds, torch.Generator().manual_seed(0), cfg, 1000, sched)

    opt = torch.optim.AdamW(params, lr=1e-3)
    before = float(fixed_loss().detach())
    for _ in range(10):
        opt.zero_grad()
        fixed_loss().backward()
        opt.step()
    assert float(fixed_loss().detach()) < before


def test_frozen_weights_are_bit_identical_and_adapter_moved(tiny_ckpt, trained):
    base = AnomalyControlModel.from_pretrained(tiny_ckpt)
    after = AnomalyControlModel.from_pretrained(trained)
    adapter_keys = {id(p) for p in trainable_parameters(after)}
    moved = 0
    for (name, p0), (_, p1) in zip(base.named_parameters(), after.named_parameters(), strict=True):
        if id(p1) in adapter_keys:
            moved += int(not torch.equal(p0, p1))
        else:
            assert torch.equal(p0, p1), name
    assert moved > 0
    losses = [json.loads(x)["loss"] for x in (trained / "training" / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == CFG.steps and all(l == l for l in losses)  # noqa: E741  (finite, logged every step)


def test_resume_after_k_steps_equals_uninterrupted(tiny_ckpt, data, trained, tmp_path):
    first = TrainConfig(**{**CFG.__dict__, "steps": 2})
    out = train(tiny_ckpt, data, "plate", tmp_path / "r", first, progress=False)
    assert load_state(out)[0]["step"] == 2
    train(tiny_ckpt, data, "plate", out, CFG, resume=True, progress=False)
    a, b = load_file(str(out / ADAPTER_FILE)), load_file(str(trained / ADAPTER_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class SimulatedCrash(Exception):
    pass


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_crash_inside_a_save_still_resumes_bit_exactly(tiny_ckpt, data, trained, tmp_path, monkeypatch, crash_at):
    """Kill the run at the `crash_at`-th file rename of its second save (step 4); the resume must still end on the
    uninterrupted run's adapter. With state split over several files renamed one by one it does not."""
    import os

    import acsdk.training.adapter as mod

    real_save, real_replace, saves = mod.save_state, os.replace, []

    def save_that_dies(*args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            renames = []

            def dying_replace(src, dst):
                renames.append(dst)
                if len(renames) == crash_at:
                    raise SimulatedCrash(dst)
                return real_replace(src, dst)

            monkeypatch.setattr(os, "replace", dying_replace)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(mod, "save_state", save_that_dies)
    with pytest.raises(SimulatedCrash):
        train(tiny_ckpt, data, "plate", tmp_path / "c", CFG, progress=False)
    monkeypatch.undo()
    out = train(tiny_ckpt, data, "plate", tmp_path / "c", CFG, resume=True, progress=False)
    a, b = load_file(str(out / ADAPTER_FILE)), load_file(str(trained / ADAPTER_FILE))
    assert all(torch.equal(a[k], b[k]) for k in b)
    steps = [json.loads(x)["step"] for x in (out / "training" / "loss.jsonl").read_text().splitlines()]
    assert steps == list(range(1, CFG.steps + 1))  # no step logged twice


def test_resume_refuses_another_config(tiny_ckpt, data, trained):
    other = TrainConfig(**{**CFG.__dict__, "lr": 5e-4})
    with pytest.raises(InputError) as err:
        train(tiny_ckpt, data, "plate", trained, other, resume=True, progress=False)
    assert err.value.argument == "resume"
    with pytest.raises(InputError) as err:
        train(tiny_ckpt, data, "plate", trained, CFG, progress=False)
    assert err.value.argument == "out"


def test_trained_output_exports(trained, tmp_path):
    from export.build import main

    assert main(["--checkpoint", str(trained), "--out", str(tmp_path / "e"), "--components", "csm_qformer", "-q"]) == 0


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_ckpt, data, tmp_path, monkeypatch):
    import acsdk.training.adapter as train_mod

    real = train_mod.loss_on_batch
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(train_mod, "loss_on_batch", flaky)
    with pytest.raises(train_mod.TrainingError, match="step 3"):
        train(tiny_ckpt, data, "plate", tmp_path / "n", CFG, progress=False)
    assert load_state(tmp_path / "n")[0]["step"] == 2  # the save before the NaN step
    AnomalyControlModel.from_pretrained(tmp_path / "n")  # still a loadable checkpoint


def test_cli_bad_data_exits_2(tiny_ckpt, tmp_path, capsys):
    from acsdk.training.adapter import main

    code = main(
        [
            "--checkpoint",
            str(tiny_ckpt),
            "--data",
            str(tmp_path / "none"),
            "--category",
            "plate",
            "--out",
            str(tmp_path / "o"),
            "--steps",
            "1",
        ]
    )
    assert code == 2
    assert "data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bf16_autocast_trains_only_the_adapter_and_fp16_needs_cuda(tiny_ckpt, data, tmp_path):
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 2, "precision": "bf16"})
    out = train(tiny_ckpt, data, "plate", tmp_path / "bf16", cfg, progress=False, device="cpu")
    losses = [json.loads(x)["loss"] for x in (out / "training" / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    base, after = AnomalyControlModel.from_pretrained(tiny_ckpt), AnomalyControlModel.from_pretrained(out)
    assert torch.equal(base.vae.encoder.conv_in.weight, after.vae.encoder.conv_in.weight)
    assert all(v.dtype == torch.float32 for v in after.adapter_state_dict().values()), "weights stay fp32"
    moved = after.adapter_state_dict()
    assert any(not torch.equal(v, moved[k]) for k, v in base.adapter_state_dict().items())

    fp16 = TrainConfig(**{**CFG.__dict__, "precision": "fp16"})
    with pytest.raises(InputError, match="precision"):
        train(tiny_ckpt, data, "plate", tmp_path / "fp16", fp16, progress=False, device="cpu")
    assert not (tmp_path / "fp16").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_fp16_mixed_precision_on_cuda_resumes_exactly(tiny_ckpt, data, tmp_path):
    cfg = TrainConfig(**{**CFG.__dict__, "precision": "fp16"})
    full = train(tiny_ckpt, data, "plate", tmp_path / "full", cfg, progress=False, device="cuda")
    half = train(
        tiny_ckpt,
        data,
        "plate",
        tmp_path / "half",
        TrainConfig(**{**cfg.__dict__, "steps": 2}),
        progress=False,
        device="cuda",
    )
    train(tiny_ckpt, data, "plate", half, cfg, resume=True, progress=False, device="cuda")
    a, b = load_file(str(full / ADAPTER_FILE)), load_file(str(half / ADAPTER_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "grad_scaler" in load_state(full)[0]


def test_augment_flips_image_and_mask_together_and_resumes_exactly(tiny_ckpt, data, tmp_path):
    from acsdk.training.adapter import augment_batch

    img = torch.rand(16, 3, 8, 8)
    mask = (img[:, :1] > 0.5).float()
    batch = {"image": img, "mask": mask, "feature": torch.rand(16, 4)}
    out = augment_batch(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out["feature"], batch["feature"])
    assert torch.equal((out["image"][:, :1] > 0.5).float(), out["mask"]), "mask follows its image"
    assert not torch.equal(out["image"], img), "some samples flipped"
    same = torch.equal(augment_batch(batch, torch.Generator().manual_seed(0))["image"], out["image"])
    assert same, "flips come from the generator"

    cfg = TrainConfig(**{**CFG.__dict__, "augment": True})
    full = train(tiny_ckpt, data, "plate", tmp_path / "full", cfg, progress=False)
    half = train(
        tiny_ckpt, data, "plate", tmp_path / "half", TrainConfig(**{**cfg.__dict__, "steps": 2}), progress=False
    )
    train(tiny_ckpt, data, "plate", half, cfg, resume=True, progress=False)
    a, b = load_file(str(full / ADAPTER_FILE)), load_file(str(half / ADAPTER_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)
