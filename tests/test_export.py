import errno
import json
import shutil

import pytest
import torch

from export import build as build_mod
from export.build import build_engine_dir, main
from export.specs import SPECS, Dims
from runtime.errors import EngineDirError, IntegrityError
from runtime.manifest import MANIFEST_NAME, Manifest, list_files, sha256_file


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_fp32_engine_dir_matches_torch_within_1e4(engine_dir):
    m = Manifest.load(engine_dir)
    assert set(m.components) == set(SPECS)
    for name, entry in m.components.items():
        assert entry["precision"] == "fp32"
        (v,) = entry["verification"]
        assert v["passed"] and v["finite"], name
        assert v["max_abs"] <= 1e-4, (name, v["max_abs"])
        assert [a["format"] for a in entry["artifacts"]] == ["onnx"]
    assert m.data["settings"]["opset"] == 18
    assert m.data["tools"]["torch"] and m.data["tools"]["onnxruntime"]
    assert len(m.data["source_checkpoint"]["sha256"]) == 64


def test_manifest_lists_every_file_with_its_sha256(engine_dir):
    m = Manifest.load(engine_dir)
    assert m.data["files"] == list_files(engine_dir)
    for rel, digest in m.data["files"].items():
        assert sha256_file(engine_dir / rel) == digest
    for required in ("tokenizer", "qformer_tokenizer", "scheduler", "torch/qformer.safetensors", "acsdk.json"):
        assert any(rel.startswith(required) for rel in m.data["files"]), required
    for rel in m.data["files"]:
        assert m.path(rel, verify=True).is_file()


def test_io_in_manifest_is_the_specs(engine_dir, tiny_model):
    m = Manifest.load(engine_dir)
    dims = Dims.from_configs(tiny_model.configs, 64, 64)
    unet = m.components["unet"]
    assert [i["name"] for i in unet["inputs"]] == [t.name for t in SPECS["unet"].inputs]
    assert unet["inputs"][0]["shape"] == ["batch", 9, dims.latent_height, dims.latent_width]
    assert unet["profile"]["sample"] == {"min": [1, 9, 16, 16], "opt": [2, 9, 16, 16], "max": [2, 9, 16, 16]}


def test_onnx_inputs_have_dynamic_batch(engine_dir):
    import onnxruntime as ort

    s = ort.InferenceSession(str(engine_dir / "onnx" / "unet.onnx"), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in s.get_inputs()}
    assert shapes["sample"][0] == "batch" and shapes["semantic_scale"] == [1]


def test_fp16_engine_dir_records_precisions_and_keeps_fp32_vae_decoder(engine_dir_fp16):
    m = Manifest.load(engine_dir_fp16)
    precisions = {n: e["precision"] for n, e in m.components.items()}
    assert precisions == {
        "text_encoder": "fp16",
        "csm_vision": "fp16",
        "csm_qformer": "fp32",
        "unet": "fp16",
        "vae_encoder": "fp16",
        "vae_decoder": "fp16",
    }
    dec = m.components["vae_decoder"]
    assert sorted(a["precision"] for a in dec["artifacts"]) == ["fp16", "fp32"]
    assert not (engine_dir_fp16 / "onnx" / "unet.onnx").exists()
    for name, entry in m.components.items():
        for v in entry["verification"]:
            assert v["passed"], (name, v)
            if v["artifact"].endswith(".fp16.onnx"):
                assert v["tolerance"]["atol"] == 2e-2
                assert v["max_abs"] > 0  # really ran in half precision
    import onnx

    graph = onnx.load(str(engine_dir_fp16 / "onnx" / "unet.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)


def test_existing_out_is_refused(engine_dir, tiny_ckpt, capsys):
    code = main(["--checkpoint", str(tiny_ckpt), "--out", str(engine_dir), "--backend", "onnxruntime", "-q"])
    assert code == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--components", "unet,flux"], "flux"),
        (["--height", "60"], "--height"),
        (["--width", "68"], "--width"),
        (["--max-batch", "0"], "--max-batch"),
        (["--opset", "11"], "--opset"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tiny_ckpt, tmp_path, capsys, extra, fragment):
    code = main(["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "e"), "-q", *extra])
    assert code == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and _leftovers(tmp_path) == []


def test_a_backend_this_machine_lacks_exits_1_with_what_works(tiny_ckpt, tmp_path, capsys, monkeypatch):
    """A good argument the machine cannot serve is a failure (1), not a bad argument (2): ACSDKError.exit_code."""
    import export.build as build_mod

    monkeypatch.setattr(build_mod, "tensorrt_usable", lambda: (False, "simulated: no TensorRT"))
    code = main(["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "e"), "-q", "--backend", "tensorrt"])
    assert code == 1
    assert "--backend onnx" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and _leftovers(tmp_path) == []


def test_unknown_backend_is_an_argparse_error(tiny_ckpt, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "e"), "--backend", "coreml"])
    assert exc.value.code == 2


def test_missing_checkpoint_part_exit_2_names_it(tiny_ckpt, tmp_path, capsys):
    broken = shutil.copytree(tiny_ckpt, tmp_path / "ck")
    shutil.rmtree(broken / "vae")
    assert main(["--checkpoint", str(broken), "--out", str(tmp_path / "e"), "-q"]) == 2
    assert "'vae'" in capsys.readouterr().err


def test_failure_mid_build_leaves_nothing(tiny_ckpt, tmp_path, monkeypatch):
    real = build_mod._build_component
    calls = []

    def flaky(name, *args):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(name, *args)

    monkeypatch.setattr(build_mod, "_build_component", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        build_engine_dir(
            tiny_ckpt, tmp_path / "e", backend="onnxruntime", progress=False, components=["text_encoder", "csm_qformer"]
        )
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_exit_1_and_leaves_nothing(tiny_ckpt, tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(build_mod, "_write_runtime_files", full)
    code = main(["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "e"), "--components", "text_encoder", "-q"])
    assert code == 1
    assert "no space left" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_verification_failure_is_exit_1_and_leaves_nothing(tiny_ckpt, tmp_path, monkeypatch, capsys):
    from export import verify
    from export.specs import Tolerance

    monkeypatch.setattr(verify, "FP32_TOLERANCE", Tolerance(atol=0.0, rtol=0.0))
    code = main(["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "e"), "--components", "vae_encoder", "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "verification against torch failed" in err and "vae_encoder" in err
    assert list(tmp_path.iterdir()) == []


def test_components_update_an_existing_dir_in_place(engine_dir, tiny_ckpt, tmp_path):
    work = shutil.copytree(engine_dir, tmp_path / "e")
    before = Manifest.load(work).data
    build_engine_dir(tiny_ckpt, work, backend="onnxruntime", components=["csm_vision"], progress=False)
    after = Manifest.load(work).data
    assert after["components"]["unet"] == before["components"]["unet"]
    assert after["files"]["onnx/unet.onnx"] == before["files"]["onnx/unet.onnx"]
    assert after["components"]["csm_vision"]["verification"][0]["passed"]
    assert _leftovers(tmp_path) == []


def test_components_refuse_a_dir_of_other_settings(engine_dir, tiny_ckpt, tmp_path, capsys):
    work = shutil.copytree(engine_dir, tmp_path / "e")
    code = main(["--checkpoint", str(tiny_ckpt), "--out", str(work), "--components", "unet", "--fp16", "-q"])
    assert code == 2
    assert "other settings" in capsys.readouterr().err


def test_export_does_not_touch_the_model(tiny_ckpt, tmp_path):
    from acsdk.models import AnomalyControlModel
    from acsdk.models.components import TextEncoder
    from export.onnx_export import export_onnx

    model = AnomalyControlModel.from_pretrained(tiny_ckpt)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = json.dumps(dict(model.text_encoder.config.to_dict()), sort_keys=True, default=str)
    spec = SPECS["text_encoder"]
    export_onnx(
        spec, TextEncoder(model.text_encoder), Dims.from_configs(model.configs, 64, 64), 1, tmp_path / "t.onnx", 18
    )
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert json.dumps(dict(model.text_encoder.config.to_dict()), sort_keys=True, default=str) == config
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_tampered_file_is_named(engine_dir, tmp_path):
    work = shutil.copytree(engine_dir, tmp_path / "e")
    with open(work / "onnx" / "vae_decoder.onnx", "ab") as f:
        f.write(b"\0")
    m = Manifest.load(work)
    with pytest.raises(IntegrityError, match="onnx/vae_decoder.onnx"):
        m.path("onnx/vae_decoder.onnx")
    m.path("onnx/unet.onnx")  # untouched files still pass


def test_manifest_schema_errors(engine_dir, tmp_path):
    with pytest.raises(EngineDirError, match="does not exist"):
        Manifest.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineDirError, match="no manifest.json"):
        Manifest.load(tmp_path / "empty")
    work = shutil.copytree(engine_dir, tmp_path / "e")
    data = json.loads((work / MANIFEST_NAME).read_text())
    data["schema_version"] = 999
    (work / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(EngineDirError, match="schema_version 999"):
        Manifest.load(work)
