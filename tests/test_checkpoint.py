import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from acsdk import CheckpointError, InputError
from acsdk.models import AnomalyControlModel
from acsdk.models.checkpoint import ADAPTER_FILE

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "blip2", "qformer_tokenizer", "adapter")


def _state(model):
    return {k: v for k, v in model.state_dict().items()}


def test_round_trip_is_bit_exact(tiny_model, tmp_path):
    dest = tiny_model.save_pretrained(tmp_path / "again")
    again = AnomalyControlModel.from_pretrained(dest)
    a, b = _state(tiny_model), _state(again)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.config == tiny_model.config
    assert again.scheduler_config["num_train_timesteps"] == tiny_model.scheduler_config["num_train_timesteps"]


def test_diffusers_unet_part_holds_no_adapter_weights(tiny_ckpt):
    unet_weights = load_file(str(tiny_ckpt / "unet" / "diffusion_pytorch_model.safetensors"))
    assert not any("to_k_ip" in k for k in unet_weights)
    adapter = load_file(str(tiny_ckpt / ADAPTER_FILE))
    assert any(k.endswith("to_k_ip.weight") for k in adapter)
    assert "blip_proj.weight" in adapter and "image_proj.proj.weight" in adapter


def test_save_refuses_existing_dir_and_leaves_no_temp(tiny_model, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(InputError) as err:
        tiny_model.save_pretrained(tmp_path / "taken")
    assert err.value.argument == "path"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("atomic_swap", [True, False], ids=["exchange", "aside-then-rename"])
def test_overwrite_that_fails_at_the_swap_keeps_the_old_checkpoint(
    tiny_ckpt, tiny_model, tmp_path, monkeypatch, atomic_swap
):
    """Overwriting a checkpoint must never leave the destination empty: fail the final rename and the old one
    must still load. (Deleting the old one before renaming the new one in loses both.)"""
    import os

    import runtime.files

    dest = shutil.copytree(tiny_ckpt, tmp_path / "ckpt")
    before = load_file(str(dest / ADAPTER_FILE))
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.fspath(dst) == os.fspath(dest) and ".old-" not in os.fspath(src):
            raise OSError("simulated failure while renaming the new checkpoint in")
        return real_replace(src, dst)

    def failing_exchange(a, b):
        raise OSError("simulated failure of the atomic exchange")

    monkeypatch.setattr(os, "replace", failing_replace)
    if atomic_swap:
        monkeypatch.setattr(runtime.files, "_exchange", failing_exchange)
    else:
        monkeypatch.setattr(runtime.files, "_exchange", lambda a, b: False)
    model = AnomalyControlModel.from_pretrained(dest)
    with torch.no_grad():
        for p in model.projection.parameters():
            p.add_(1.0)
    with pytest.raises(OSError, match="simulated"):
        model.save_pretrained(dest, overwrite=True)
    monkeypatch.undo()
    after = load_file(str(dest / ADAPTER_FILE))
    assert all(torch.equal(before[k], after[k]) for k in before)
    AnomalyControlModel.from_pretrained(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp or aside directory left behind


@pytest.mark.parametrize("part", [p for p in PARTS])
def test_missing_part_is_named(tiny_ckpt, tmp_path, part):
    broken = shutil.copytree(tiny_ckpt, tmp_path / "ck")
    shutil.rmtree(broken / part)
    with pytest.raises(CheckpointError) as err:
        AnomalyControlModel.from_pretrained(broken)
    assert err.value.part == part
    assert part in str(err.value)


def test_corrupt_weights_are_named(tiny_ckpt, tmp_path):
    broken = shutil.copytree(tiny_ckpt, tmp_path / "ck")
    (broken / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as err:
        AnomalyControlModel.from_pretrained(broken)
    assert err.value.part == "vae"


@pytest.mark.parametrize(
    ("part", "file"), [("text_encoder", "model.safetensors"), ("unet", "diffusion_pytorch_model.safetensors")]
)
def test_weights_the_library_would_leave_random_are_refused(tiny_ckpt, tmp_path, part, file):
    """Keys renamed (as another transformers version writes them) load as random init unless we check."""
    broken = shutil.copytree(tiny_ckpt, tmp_path / "ck")
    state = load_file(str(broken / part / file))
    renamed = {f"renamed.{k}" if i == 0 else k: v for i, (k, v) in enumerate(sorted(state.items()))}
    save_file(renamed, str(broken / part / file), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="weights missing") as err:
        AnomalyControlModel.from_pretrained(broken)
    assert err.value.part == part


def test_missing_or_foreign_config(tiny_ckpt, tmp_path):
    broken = shutil.copytree(tiny_ckpt, tmp_path / "ck")
    cfg = json.loads((broken / "acsdk.json").read_text())
    cfg["format_version"] = 99
    (broken / "acsdk.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="format_version 99"):
        AnomalyControlModel.from_pretrained(broken)
    (broken / "acsdk.json").unlink()
    with pytest.raises(CheckpointError, match="acsdk.json"):
        AnomalyControlModel.from_pretrained(broken)
    with pytest.raises(CheckpointError, match="not a directory"):
        AnomalyControlModel.from_pretrained(tmp_path / "nowhere")


def test_adapter_shape_mismatch_names_the_key(tiny_ckpt, tmp_path):
    broken = shutil.copytree(tiny_ckpt, tmp_path / "ck")
    state = load_file(str(broken / ADAPTER_FILE))
    state["blip_proj.weight"] = torch.zeros(3, 3)
    save_file(state, str(broken / ADAPTER_FILE))
    with pytest.raises(CheckpointError, match="blip_proj.weight"):
        AnomalyControlModel.from_pretrained(broken)


def test_everything_is_frozen_after_loading(tiny_model):
    assert not any(p.requires_grad for p in tiny_model.parameters())
