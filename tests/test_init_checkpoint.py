"""`acsdk init-checkpoint`: public layouts (diffusers folder, single LDM file, hub id; transformers BLIP-2) in, a
checkpoint out that loads, trains, exports and runs; and every way the input can be wrong."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import FAST
from safetensors.torch import load_file, save_file

import acsdk
from acsdk import CheckpointError, InputError
from acsdk.models import AnomalyControlModel
from acsdk.models.checkpoint import ADAPTER_FILE
from acsdk.models.importers import init_checkpoint
from acsdk.testing import write_public_sources


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return write_public_sources("tiny", tmp_path_factory.mktemp("public"), seed=3)


@pytest.fixture(scope="module")
def from_folder(sources, tmp_path_factory):
    path, how = init_checkpoint(sources.sd_folder, sources.blip2_folder, tmp_path_factory.mktemp("init") / "ckpt")
    assert "IP-Adapter's initialisation" in how
    return path


def _weights(ckpt, part):
    files = sorted((ckpt / part).glob("*.safetensors"))
    return {k: v for f in files for k, v in load_file(str(f)).items()}


def test_diffusers_folder_becomes_a_checkpoint_with_the_same_weights(sources, from_folder):
    for part in ("unet", "vae", "text_encoder"):
        a, b = _weights(sources.sd_folder, part), _weights(from_folder, part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    a, b = _weights(sources.blip2_folder.parent, "blip2"), _weights(from_folder, "blip2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = AnomalyControlModel.from_pretrained(from_folder)
    assert model.config.height == 64 and model.config.num_semantic_tokens == 4


def test_single_file_and_hub_id_give_the_same_checkpoint(sources, from_folder, tmp_path, monkeypatch):
    single, _ = init_checkpoint(
        sources.sd_single_file, sources.blip2_folder, tmp_path / "s", sd_config=sources.sd_config
    )
    import huggingface_hub
    from huggingface_hub import constants

    asked = []

    def download(repo_id, allow_patterns=None, **_):
        asked.append(repo_id)
        return str(sources.sd_folder if "inpainting" in repo_id else sources.blip2_folder)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    hub, _ = init_checkpoint("org/sd-inpainting", "Salesforce/blip2-itm-vit-g", tmp_path / "h")
    assert asked == ["org/sd-inpainting", "Salesforce/blip2-itm-vit-g"]
    for other in (single, hub):
        for part in ("unet", "vae", "text_encoder", "blip2"):
            a, b = _weights(from_folder, part), _weights(other, part)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (other.name, part)
        assert load_file(str(other / ADAPTER_FILE)).keys() == load_file(str(from_folder / ADAPTER_FILE)).keys()


def test_ip_adapter_initialisation_copies_attention_and_adds_nothing_at_lambda_1(from_folder):
    model = AnomalyControlModel.from_pretrained(from_folder)
    for name, proc in model.unet.attn_processors.items():
        if name.endswith("attn2.processor"):
            layer = model.unet.get_submodule(name.rsplit(".processor", 1)[0])
            assert torch.equal(proc.to_k_ip.weight, layer.to_k.weight)
            assert torch.equal(proc.to_v_ip.weight, layer.to_v.weight)
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 9, 16, 16, generator=g)
    text = torch.randn(2, 77, 32, generator=g)
    features = model.projection(torch.randn(2, model.projection.blip_proj.in_features, generator=g))
    assert torch.equal(features, torch.zeros_like(features)), "the closed gate makes F_c = 0 for any feature"
    context = torch.cat([text, features], dim=1)

    def noise(scale: float) -> torch.Tensor:
        kw = {"semantic_scale": torch.tensor([scale])}
        return model.unet(sample, torch.tensor([500, 500]), context, cross_attention_kwargs=kw).sample

    assert torch.equal(noise(1.0), noise(0.0))


def test_checkpoint_from_public_weights_trains_exports_and_runs(from_folder, tmp_path, scene):
    from acsdk.data import make_mvtec_like
    from acsdk.training.adapter import TrainConfig, train
    from export.build import build_engine_dir

    data = make_mvtec_like(tmp_path / "data", "plate", n_good=2, n_per_defect=3)
    cfg = TrainConfig(steps=2, batch_size=2, grad_accum=1, lr=1e-2, save_every=2, asea_steps=1, drop_features=0.0)
    trained = train(from_folder, data, "plate", tmp_path / "trained", cfg, progress=False)
    before, after = load_file(str(from_folder / ADAPTER_FILE)), load_file(str(trained / ADAPTER_FILE))
    gain = "image_proj.norm.weight"
    assert torch.count_nonzero(before[gain]) == 0 and torch.count_nonzero(after[gain]) > 0, "training opens the gate"
    engines = build_engine_dir(trained, tmp_path / "engines", backend="onnxruntime", progress=False)
    synth = acsdk.Synthesizer(engines, backend="onnxruntime", device="cpu")
    ref = {"reference_image": scene["reference_image"], "reference_mask": scene["reference_mask"]}
    res = synth.run(scene["image"], scene["mask"], "a photo of a plate with a hole", **ref, seed=1, **FAST)
    assert res.image.size == (64, 64) and res.asea["r_after"] > res.asea["r_before"]
    changed = np.asarray(res.image).astype(int) != scene["image"].astype(int)
    assert changed.any(axis=-1)[scene["mask"] > 0].mean() > 0.5


def test_ip_adapter_file_starts_the_adapter(sources, tmp_path):
    from acsdk.models.presets import build_model

    ref = build_model("tiny", seed=3)  # same processor layout as the public sources
    g = torch.Generator().manual_seed(1)
    image_proj = {k: torch.randn(v.shape, generator=g) for k, v in ref.projection.image_proj.state_dict().items()}
    ip = {}
    for i, (name, proc) in enumerate(ref.unet.attn_processors.items()):
        if name.endswith("attn2.processor"):
            ip.update({f"{i}.{k}": torch.randn(v.shape, generator=g) for k, v in proc.state_dict().items()})
    file = tmp_path / "ip.safetensors"
    flat = {**{f"image_proj.{k}": v for k, v in image_proj.items()}, **{f"ip_adapter.{k}": v for k, v in ip.items()}}
    save_file(flat, str(file))
    path, how = init_checkpoint(sources.sd_folder, sources.blip2_folder, tmp_path / "c", ip_adapter=file)
    assert str(file) in how
    adapter = load_file(str(path / ADAPTER_FILE))
    assert torch.equal(adapter["image_proj.proj.weight"], image_proj["proj.weight"])


# -- bad input --------------------------------------------------------------------------------------------------


def _neither(tmp_path, sources):
    folder = tmp_path / "random"
    (folder / "weights").mkdir(parents=True)
    (folder / "notes.txt").write_text("x")
    return folder, sources.blip2_folder


def _text_to_image(tmp_path, sources):
    folder = shutil.copytree(sources.sd_folder, tmp_path / "t2i")
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "in_channels": 4}))
    return folder, sources.blip2_folder


def _widths_differ(tmp_path, sources):
    folder = shutil.copytree(sources.sd_folder, tmp_path / "wide")
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "cross_attention_dim": 1024}))
    return folder, sources.blip2_folder


def _text_to_image_single_file(tmp_path, sources):
    file = tmp_path / "t2i.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3)}, str(file))
    return file, sources.blip2_folder


def _blip2_generation_model(tmp_path, sources):
    folder = shutil.copytree(sources.blip2_folder, tmp_path / "opt")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["Blip2ForConditionalGeneration"]
    config["qformer_config"]["use_qformer_text_input"] = False
    (folder / "config.json").write_text(json.dumps(config))
    return sources.sd_folder, folder


def _pickle(tmp_path, sources):
    file = tmp_path / "sd-v1-5-inpainting.ckpt"
    file.write_bytes(b"not opened")
    return file, sources.blip2_folder


def _hub_offline(tmp_path, sources):
    return "runwayml/stable-diffusion-inpainting", sources.blip2_folder


def _missing(tmp_path, sources):
    return tmp_path / "nope", sources.blip2_folder


@pytest.mark.parametrize(
    ("make", "argument", "says"),
    [
        (_neither, "sd", "notes.txt"),
        (_text_to_image, "sd", "4 input channels"),
        (_text_to_image_single_file, "sd", "4 input channels"),
        (_widths_differ, "sd", "cross_attention_dim 1024"),
        (_blip2_generation_model, "blip2", "Blip2ForImageTextRetrieval"),
        (_pickle, "sd", "safetensors"),
        (_hub_offline, "sd", "runwayml/stable-diffusion-inpainting"),
        (_missing, "sd", "does not exist"),
    ],
    ids=[
        "neither-layout",
        "unet-4-channels",
        "single-file-4-channels",
        "unet-text-widths",
        "blip2-opt",
        "ckpt-pickle",
        "hub-offline",
        "missing",
    ],
)
def test_bad_sources_are_named(sources, tmp_path, monkeypatch, make, argument, says):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was opened"))
    sd, blip2 = make(tmp_path, sources)
    with pytest.raises(InputError) as err:
        init_checkpoint(sd, blip2, tmp_path / "out")
    assert err.value.argument == argument and says in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists()


def test_adapter_of_another_width_is_refused_by_key(sources, tmp_path):
    file = tmp_path / "ip-sd2.safetensors"
    wide = {"image_proj.proj.weight": torch.zeros(4 * 1024, 1024), "ip_adapter.1.to_k_ip.weight": torch.zeros(32, 1024)}
    save_file(wide, str(file))
    with pytest.raises(CheckpointError) as err:
        init_checkpoint(sources.sd_folder, sources.blip2_folder, tmp_path / "out", ip_adapter=file)
    assert "ip_adapter" in str(err.value) or "image_proj" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_existing_out_needs_force_and_full_disk_leaves_nothing(sources, from_folder, tmp_path, monkeypatch):
    from acsdk.errors import WriteError

    taken = shutil.copytree(from_folder, tmp_path / "taken")
    with pytest.raises(InputError) as err:
        init_checkpoint(sources.sd_folder, sources.blip2_folder, taken)
    assert err.value.argument == "out"

    import acsdk.models.checkpoint as ckpt_mod

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod, "save_file", full_disk)  # the adapter, the last part written
    with pytest.raises(WriteError, match="no space left"):
        init_checkpoint(sources.sd_folder, sources.blip2_folder, taken, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"], "no temporary directory left"
    assert _weights(taken, "unet").keys() == _weights(from_folder, "unet").keys(), "the old checkpoint is intact"


def test_cli_init_checkpoint(sources, tmp_path, capsys):
    from acsdk.apps.cli import main

    out = tmp_path / "c"
    assert (
        main(
            ["init-checkpoint", "--sd", str(sources.sd_folder), "--blip2", str(sources.blip2_folder), "--out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "adapter: IP-Adapter's initialisation" in printed and "acsdk.train" in printed
    assert (
        main(
            ["init-checkpoint", "--sd", str(sources.sd_folder), "--blip2", str(sources.blip2_folder), "--out", str(out)]
        )
        == 2
    )
    assert "--force" in capsys.readouterr().err
