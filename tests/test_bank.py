"""`acsdk prepare`: a defect type's reference side as a bank, exactly what `run` feeds the UNet, checked on load."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import acsdk
from acsdk import InputError
from acsdk.apps.cli import main
from acsdk.inference.bank import INFO, TENSORS, Bank
from runtime.errors import IntegrityError
from runtime.files import sha256_file


@pytest.fixture(scope="module")
def ort(engine_dir):
    return acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")


@pytest.fixture(scope="module")
def files(scene, tmp_path_factory):
    d = tmp_path_factory.mktemp("bank-inputs")
    for name in ("image", "mask", "reference_image", "reference_mask"):
        Image.fromarray(np.asarray(scene[name])).save(d / f"{name}.png")
    return d


def test_the_bank_holds_what_run_feeds_the_unet(ort, files, tmp_path, monkeypatch):
    bank = ort.prepare("a scratch", files / "reference_image.png", files / "reference_mask.png", asea_steps=2)
    seen = {}
    real = ort.sampler.__call__.__func__ if hasattr(ort.sampler.__call__, "__func__") else None
    assert real is not None

    def spy(self, images, masks, text, semantic, **kw):
        seen["text"], seen["semantic"] = text.float().cpu(), semantic.float().cpu()
        return real(self, images, masks, text, semantic, **kw)

    monkeypatch.setattr(type(ort.sampler), "__call__", spy)
    ort.run(
        files / "image.png", files / "mask.png", "a scratch", files / "reference_image.png",
        files / "reference_mask.png", asea_steps=2, num_inference_steps=4, roi="full",
    )  # fmt: skip
    assert torch.equal(seen["text"], bank.text_embeds) and torch.equal(seen["semantic"], bank.semantic_tokens)
    assert bank.info["reference"]["image"]["sha256"] == sha256_file(files / "reference_image.png")
    assert bank.info["engine_manifest_sha256"] == sha256_file(ort.engine_dir / "manifest.json")

    dest = bank.save(tmp_path / "crack")
    back = Bank.load(dest, bank.info["engine_manifest_sha256"])
    assert torch.equal(back.text_embeds, bank.text_embeds) and back.info["asea"] == bank.info["asea"]


def test_without_a_reference_the_semantic_branch_is_unconditional(ort):
    bank = ort.prepare("a hole")
    assert torch.equal(bank.semantic_tokens[0], bank.semantic_tokens[1]) and bank.info["reference"] is None
    assert bank.text_embeds.shape[0] == 2 and not torch.equal(bank.text_embeds[0], bank.text_embeds[1])


def test_a_tampered_or_foreign_bank_is_refused(ort, tmp_path):
    dest = ort.prepare("a hole").save(tmp_path / "b")
    with pytest.raises(InputError) as err:
        Bank.load(dest, "f" * 64)
    assert err.value.argument == "bank" and "prepared for this engine dir" in str(err.value)
    with pytest.raises(InputError, match="exists"):
        ort.prepare("a hole").save(dest)
    data = bytearray((dest / TENSORS).read_bytes())
    data[-1] ^= 0xFF
    (dest / TENSORS).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=TENSORS):
        Bank.load(dest)
    info = json.loads((dest / INFO).read_text())
    (dest / INFO).write_text(json.dumps({**info, "schema": "acsdk.bank/9"}))
    with pytest.raises(InputError, match="schema"):
        Bank.load(dest)


def test_the_prepare_command(engine_dir, files, tmp_path, capsys):
    out = tmp_path / "bank" / "scratch"
    args = ["prepare", "--engines", str(engine_dir), "--backend", "onnxruntime", "--device", "cpu",
            "--prompt", "a scratch", "--asea-steps", "2", "--out", str(out)]  # fmt: skip
    assert main([*args, "--reference", str(files / "reference_image.png")]) == 2
    assert "reference_mask" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--reference", str(files / "reference_image.png"),
                 "--reference-mask", str(files / "reference_mask.png")]) == 0  # fmt: skip
    assert f"wrote {out}" in capsys.readouterr().out
    assert Bank.load(out).info["reference"]["asea_steps"] == 2
    assert main(args) == 2 and "exists" in capsys.readouterr().err
