"""The demo model's from-scratch recipe (`python -m acsdk.train_base`), run at smoke size."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from acsdk.errors import InputError
from acsdk.models.checkpoint import AnomalyControlModel
from acsdk.models.presets import build_model
from acsdk.models.sga import sga_processors
from acsdk.training.demo_model import CLASSES, STAGES, BaseTrainConfig, main, make_corpus, train_base

SMOKE = BaseTrainConfig(
    samples=96,
    vae_steps=30,
    vae_batch=8,
    csm_steps=3,
    csm_batch=8,
    unet_steps=3,
    unet_batch=4,
    warmup=2,
    adapter_steps=2,
    adapter_per_defect=3,
    adapter_batch=2,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_base") / "run"
    train_base(out, SMOKE)
    return out


def _parts_of_model(m: AnomalyControlModel) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "vae": m.vae.state_dict(),
        "blip2": m.blip2.state_dict(),
        "unet": {k: v for k, v in m.unet.state_dict().items() if "_ip." not in k},
        "text_encoder": m.text_encoder.state_dict(),
        "adapter": m.adapter_state_dict(),
    }


def _parts(path) -> dict[str, dict[str, torch.Tensor]]:
    return _parts_of_model(AnomalyControlModel.from_pretrained(path))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_corpus_is_seeded_and_masks_cover_defects():
    a, b = make_corpus(40, 64, seed=3), make_corpus(40, 64, seed=3)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["train_mask"], b["train_mask"])
    assert not torch.equal(a["image"], make_corpus(40, 64, seed=4)["image"])
    for i, label in enumerate(a["label"].tolist()):
        mask, train_mask = a["mask"][i], a["train_mask"][i]
        assert train_mask.sum() > 0, "every sample is inpainted somewhere"
        if CLASSES[label] == "good":
            assert mask.sum() == 0 and "with a" not in a["caption"][i]
        else:
            assert mask.sum() > 0 and bool((train_mask >= mask).all()), "the training mask holds the defect"
            assert a["caption"][i].endswith(CLASSES[label])


def test_each_stage_trains_only_its_parts(run):
    start = _parts_of_model(build_model(SMOKE.preset, SMOKE.seed))
    stage = {s: _parts(run / "stages" / s) for s in STAGES}
    trains = {"vae": {"vae"}, "csm": {"blip2"}, "unet": {"unet", "text_encoder", "adapter"}, "adapter": {"adapter"}}
    before = start
    for s in STAGES:
        for part in before:
            changed = not _same(before[part], stage[s][part])
            assert changed == (part in trains[s]), f"stage {s}: part {part} changed={changed}"
        before = stage[s]


def test_adapter_starts_from_the_trained_text_projections(run):
    m = AnomalyControlModel.from_pretrained(run / "stages" / "unet")
    procs = sga_processors(m.unet)
    assert procs
    for name, proc in procs.items():
        layer = m.unet.get_submodule(name.rsplit(".processor", 1)[0])
        assert torch.equal(proc.to_k_ip.weight, layer.to_k.weight)
        assert torch.equal(proc.to_v_ip.weight, layer.to_v.weight)


def test_vae_loss_falls_and_recipe_is_recorded(run):
    losses = [json.loads(line)["loss"] for line in (run / "logs" / "vae.jsonl").read_text().splitlines()]
    assert len(losses) == SMOKE.vae_steps
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    recipe = json.loads((run / "logs" / "recipe.json").read_text())
    assert recipe["config"] == dataclasses.asdict(SMOKE)
    assert list(recipe["stages"]) == list(STAGES)
    assert all("seconds" in recipe["stages"][s] for s in STAGES)
    m = AnomalyControlModel.from_pretrained(run / "model")
    assert m.config.negative_prompt == "", "CFG's unconditional branch is the dropped (empty) caption"
    assert m.vae.config.scaling_factor == pytest.approx(recipe["stages"]["vae"]["scaling_factor"])


def test_resume_keeps_finished_stages_and_redo_reruns_later_ones(run):
    before = {s: (run / "stages" / s / "unet").stat().st_mtime_ns for s in STAGES}
    train_base(run, SMOKE, resume=True)
    assert {s: (run / "stages" / s / "unet").stat().st_mtime_ns for s in STAGES} == before

    with pytest.raises(InputError, match="resume"):
        train_base(run, dataclasses.replace(SMOKE, vae_steps=SMOKE.vae_steps + 1), resume=True)

    adapter_before = _parts(run / "stages" / "adapter")["adapter"]
    train_base(run, dataclasses.replace(SMOKE, adapter_steps=3), resume=True, redo="adapter")
    after = {s: (run / "stages" / s / "unet").stat().st_mtime_ns for s in STAGES}
    assert {s: after[s] for s in ("vae", "csm", "unet")} == {s: before[s] for s in ("vae", "csm", "unet")}
    assert not _same(adapter_before, _parts(run / "stages" / "adapter")["adapter"])
    recipe = json.loads((run / "logs" / "recipe.json").read_text())
    assert recipe["config"]["adapter_steps"] == 3


def test_bad_arguments_exit_2_and_write_nothing(tmp_path, run):
    assert main(["--out", str(run)]) == 2  # exists, no --resume
    assert main(["--out", str(tmp_path / "x"), "--resume"]) == 2  # nothing to resume
    assert main(["--out", str(tmp_path / "y"), "--preset", "huge"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_defaults_are_the_recipe_of_the_shipped_demo_model():
    from pathlib import Path

    recipe = json.loads((Path(__file__).parents[1] / "docs" / "demo-model-recipe.json").read_text())
    assert recipe["config"] == dataclasses.asdict(BaseTrainConfig())
    assert list(recipe["stages"]) == list(STAGES)
