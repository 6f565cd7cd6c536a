"""Components load when first used and can be released (issue 25): what a Synthesizer reports as loaded, runs from
a bank that never open the reference side, low_memory holding one component at a time, and the same images
throughout."""

import numpy as np
import pytest
from conftest import pixels

import acsdk
from acsdk import InputError
from acsdk.apps.cli import main

PROMPT = "a photo of a surface with a hole"
REFERENCE_SIDE = {"text_encoder", "csm_vision", "csm_qformer", "asea_qformer"}
TARGET_SIDE = {"unet", "vae_encoder", "vae_decoder"}
RUN = {"seed": 4, "num_inference_steps": 6, "asea_steps": 2, "roi": "full"}


def loaded(s: acsdk.Synthesizer) -> set[str]:
    return {name for name, c in s.info()["components"].items() if c["loaded"]}


@pytest.fixture(scope="module")
def bank_and_image(engine_dir, scene):
    """A bank for the scene's reference, and the image a prompt + reference run makes (the reference for all)."""
    s = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
    assert loaded(s) == set(), "nothing opens before it is used"
    bank = s.prepare(PROMPT, scene["reference_image"], scene["reference_mask"], asea_steps=RUN["asea_steps"])
    assert loaded(s) == REFERENCE_SIDE
    res = s.run(scene["image"], scene["mask"], PROMPT, scene["reference_image"], scene["reference_mask"], **RUN)
    assert loaded(s) == REFERENCE_SIDE | TARGET_SIDE
    return bank, pixels(res.image)


def test_a_run_from_a_bank_never_loads_the_reference_side(engine_dir, scene, bank_and_image, tmp_path):
    bank, expected = bank_and_image
    s = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
    res = s.run(scene["image"], scene["mask"], bank=bank, **RUN)
    assert loaded(s) == TARGET_SIDE
    assert np.array_equal(pixels(res.image), expected)
    assert res.asea == bank.info["asea"] and res.asea["r_after"] > res.asea["r_before"]
    # A bank directory works the same, and run_batch takes banks per job.
    dest = bank.save(tmp_path / "hole")
    jobs = [{"image": scene["image"], "mask": scene["mask"], "bank": dest, "seed": RUN["seed"]}] * 2
    batch = s.run_batch(jobs, num_inference_steps=6, roi="full")
    assert all(np.array_equal(pixels(r.image), expected) for r in batch)
    assert loaded(s) == TARGET_SIDE


def test_release_then_reuse_reopens_and_gives_the_same_image(engine_dir, scene, bank_and_image):
    bank, expected = bank_and_image
    s = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
    first = pixels(s.run(scene["image"], scene["mask"], bank=bank, **RUN).image)
    assert sorted(s.release("target")) == sorted(TARGET_SIDE) and loaded(s) == set()
    assert s.release() == []  # nothing left to release
    again = pixels(s.run(scene["image"], scene["mask"], bank=bank, **RUN).image)
    assert np.array_equal(first, expected) and np.array_equal(again, expected)
    assert loaded(s.load("unet")) == {"unet", "vae_encoder", "vae_decoder"}
    assert s.release("unet") == ["unet"] and "unet" not in loaded(s)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_low_memory_holds_one_component_at_a_time(engine_dir, scene, bank_and_image, backend, monkeypatch):
    from runtime.onnxruntime_engine import OrtEngine
    from runtime.openvino_engine import OpenVINOEngine

    _, expected = bank_and_image
    s = acsdk.Synthesizer(engine_dir, backend=backend, device="cpu", low_memory=True)
    assert s.info()["low_memory"] is True
    held: list[tuple[str, set[str]]] = []  # at every engine call: what else is loaded
    cls = OrtEngine if backend == "onnxruntime" else OpenVINOEngine
    run = cls.run

    def spy(self, inputs):
        held.append((self.name, loaded(s)))
        return run(self, inputs)

    monkeypatch.setattr(cls, "run", spy)
    s.prepare(PROMPT, scene["reference_image"], scene["reference_mask"], asea_steps=RUN["asea_steps"])
    assert loaded(s) == set(), "each component is released when its stage ends"
    res = s.run(scene["image"], scene["mask"], PROMPT, scene["reference_image"], scene["reference_mask"], **RUN)
    assert loaded(s) == set()
    calls = [name for name, _ in held]
    assert {"text_encoder", "csm_vision", "csm_qformer", "vae_encoder", "unet", "vae_decoder"} <= set(calls)
    assert all(others == {name} for name, others in held), [h for h in held if h[1] != {h[0]}]
    if backend == "onnxruntime":
        assert np.array_equal(pixels(res.image), expected)
    else:  # the same images on every backend is not a promise; the same image with and without low_memory is
        default = acsdk.Synthesizer(engine_dir, backend=backend, device="cpu")
        again = default.run(scene["image"], scene["mask"], PROMPT, scene["reference_image"], scene["reference_mask"],
                            **RUN)  # fmt: skip
        assert np.array_equal(pixels(res.image), pixels(again.image))
    s.load("text_encoder")  # an explicit load holds until the stage that runs it ends
    assert loaded(s) == {"text_encoder"}
    s.prepare("a photo of a surface with a scratch")
    assert loaded(s) == set()


def test_low_memory_engines(engine_dir):
    """ONNX Runtime's CPU sessions without their allocation arena; one compiled input shape per OpenVINO engine
    (each holds its own copy of the weights), the same outputs as the default's four."""
    import torch

    from acsdk.inference.backend_choice import sample_feed
    from acsdk.inference.parts import EngineOptions, load_engine
    from runtime.manifest import Manifest

    low = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu", low_memory=True)
    default = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
    for s, arena in ((low, False), (default, True)):
        assert s.parts.engines["text_encoder"].session.get_session_options().enable_cpu_mem_arena is arena
    manifest = Manifest.load(engine_dir)
    feed = sample_feed(manifest.components["unet"])
    cpu = torch.device("cpu")
    engines = [load_engine("unet", manifest, "openvino", "fp32", cpu, True, EngineOptions(low_memory=lm))
               for lm in (True, False)]  # fmt: skip
    for batch in (2, 1, 2):
        one = {k: (v[:batch] if v.shape[0] == 2 and k != "semantic_scale" else v) for k, v in feed.items()}
        a, b = (e.run(one)["noise_pred"] for e in engines)
        assert a.shape[0] == batch and torch.equal(a, b)
    assert [e.describe()["compiled_shapes"] for e in engines] == [1, 2]


def test_a_checkpoint_synthesizer_keeps_its_modules(synth):
    assert synth.release() == [] and all(c["loaded"] for c in synth.info()["components"].values())


def test_bad_bank_arguments_are_named(engine_dir, demo_engine_dir, scene, bank_and_image, tmp_path):
    bank, _ = bank_and_image
    s = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
    with pytest.raises(InputError) as err:
        s.run(scene["image"], scene["mask"], PROMPT, bank=bank)
    assert err.value.argument == "bank" and "prompt" in str(err.value)
    with pytest.raises(InputError) as err:
        s.run(scene["image"], scene["mask"])
    assert err.value.argument == "prompt" and "bank" in str(err.value)
    with pytest.raises(InputError) as err:
        s.run(scene["image"], scene["mask"], bank=tmp_path / "absent")
    assert err.value.argument == "bank"
    with pytest.raises(InputError) as err:
        s.run(scene["image"], scene["mask"], bank="not a bank object or dir")
    assert err.value.argument == "bank"
    other = acsdk.Synthesizer(demo_engine_dir, device="cpu")
    with pytest.raises(InputError) as err:
        other.run(scene["image"], scene["mask"], bank=bank)
    assert err.value.argument == "bank" and "prepared for this engine dir" in str(err.value)
    with pytest.raises(InputError) as err:
        s.release("unett")
    assert err.value.argument == "release" and "unet" in str(err.value)
    assert loaded(s) == set() and loaded(other) == set(), "refused before anything was opened"


def test_synth_command_from_a_bank(engine_dir, scene, bank_and_image, tmp_path, capsys):
    from PIL import Image

    bank, expected = bank_and_image
    dest = bank.save(tmp_path / "bank")
    Image.fromarray(scene["image"]).save(tmp_path / "image.png")
    Image.fromarray(scene["mask"]).save(tmp_path / "mask.png")
    args = ["synth", "--engines", str(engine_dir), "--backend", "onnxruntime", "--device", "cpu", "--image",
            str(tmp_path / "image.png"), "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "out.png"),
            "--seed", "4", "--steps", "6", "--roi", "full", "-q", "--low-memory"]  # fmt: skip
    assert main([*args, "--bank", str(dest)]) == 0
    assert np.array_equal(pixels(Image.open(tmp_path / "out.png")), expected)
    assert main([*args, "--bank", str(dest), "--reference", str(tmp_path / "image.png")]) == 2
    assert "--bank" in capsys.readouterr().err


def _flip_one_byte(path) -> None:
    """Rewrite the file in place (same inode, same size), one byte different: what the size alone would miss."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("how", ["in_place", "renamed_over"])
def test_a_file_changed_after_the_check_is_refused_when_reopened(engine_dir, tmp_path, how):
    """Components reopen after a release (per image under low_memory): the file is checked again, not only once
    per Synthesizer."""
    import shutil

    from acsdk import IntegrityError

    copy = shutil.copytree(engine_dir, tmp_path / "engines", ignore=shutil.ignore_patterns("cache"))
    s = acsdk.Synthesizer(copy, backend="onnxruntime", device="cpu")
    assert loaded(s.load("vae_decoder")) == {"vae_decoder"}
    assert s.release("vae_decoder") == ["vae_decoder"]
    onnx = copy / "onnx" / "vae_decoder.onnx"
    if how == "in_place":
        _flip_one_byte(onnx)
    else:
        swapped = tmp_path / "swapped.onnx"
        shutil.copyfile(onnx, swapped)
        _flip_one_byte(swapped)
        swapped.replace(onnx)
    with pytest.raises(IntegrityError, match="vae_decoder.onnx"):
        s.load("vae_decoder")


def test_an_unchanged_file_is_hashed_once(tmp_path, monkeypatch):
    """Reopening an unchanged file costs a stat, not a hash of its GBs; a change (one byte, same size and inode)
    brings the hash back."""
    from runtime import manifest as manifest_mod
    from runtime.errors import IntegrityError
    from runtime.files import sha256_file

    file = tmp_path / "w.bin"
    file.write_bytes(bytes(range(256)) * 64)
    m = manifest_mod.Manifest(tmp_path, {"files": {"w.bin": sha256_file(file)}})
    hashed = []
    monkeypatch.setattr(manifest_mod, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    monkeypatch.setattr(manifest_mod, "RACY_NS", 0)  # the file was just written: its tick is not trusted otherwise
    for _ in range(3):
        assert m.path("w.bin") == file
    assert len(hashed) == 1
    _flip_one_byte(file)
    with pytest.raises(IntegrityError):
        m.path("w.bin")
    assert len(hashed) == 2
    monkeypatch.setattr(manifest_mod, "RACY_NS", 10**18)  # within the tick: hashed every time
    _flip_one_byte(file)
    m.path("w.bin"), m.path("w.bin")
    assert len(hashed) == 4
