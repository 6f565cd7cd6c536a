import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from acsdk import CheckpointError
from acsdk.models import AnomalyControlModel
from acsdk.models.checkpoint import ADAPTER_FILE, PARTS


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
    with pytest.raises(FileExistsError):
        tiny_model.save_pretrained(tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


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
