"""The OpenVINO backend: the same pixels as the torch reference, static shapes compiled once, clear refusals."""

import sys

import numpy as np
import pytest
from conftest import FAST, pixels

import acsdk
from acsdk import BackendUnavailableError

pytest.importorskip("openvino", reason="OpenVINO is an extra: pip install 'acsdk[openvino]'")

PROMPT = "a photo of a surface with a hole"


def _run(s, scene, **kw):
    args = dict(FAST, seed=5)
    args.update(kw)
    return s.run(scene["image"], scene["mask"], PROMPT, scene["reference_image"], scene["reference_mask"], **args)


@pytest.fixture(scope="module")
def ov_synth(engine_dir):
    return acsdk.Synthesizer(engine_dir, backend="openvino", device="cpu")


def test_openvino_matches_torch_within_one_level(ov_synth, synth, scene):
    ours, ref = _run(ov_synth, scene), _run(synth, scene)
    diff = np.abs(pixels(ours.image).astype(int) - pixels(ref.image).astype(int))
    assert diff.max() <= 1, diff.max()
    assert ours.asea["r_after"] > ours.asea["r_before"]


def test_info_reports_device_and_precision_openvino_used(ov_synth, scene):
    _run(ov_synth, scene)
    info = ov_synth.info()["components"]
    for name in ("unet", "vae_encoder", "vae_decoder", "text_encoder", "csm_vision", "csm_qformer"):
        assert info[name]["backend"] == "openvino"
        actual = info[name]["actual"]
        assert actual["execution_devices"] == ["CPU"] and actual["inference_precision"] == "f32", actual
    assert info["unet"]["actual"]["compiled_shapes"] == 1, "one static shape, compiled once and reused"


def test_model_cache_is_per_host_in_the_user_cache_and_never_in_the_engine_dir(
    engine_dir, scene, tmp_path, monkeypatch
):
    import socket

    from runtime.manifest import manifest_sha256

    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "cache"))
    before = sorted(p.relative_to(engine_dir) for p in engine_dir.rglob("*"))
    _run(acsdk.Synthesizer(engine_dir, backend="openvino", device="cpu"), scene)
    host = tmp_path / "cache" / "openvino" / f"{manifest_sha256(engine_dir)[:16]}-{socket.gethostname()}"
    assert any(host.glob("*.blob")), "compiled blobs cached for this host"
    assert sorted(p.relative_to(engine_dir) for p in engine_dir.rglob("*")) == before, "the engine dir is not written"


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory):
    """A two-output ONNX model whose outputs differ (sum, difference), for binding by name."""
    import torch

    class Pair(torch.nn.Module):
        def forward(self, x):
            return x + 1.0, x - 1.0

    path = tmp_path_factory.mktemp("pair") / "pair.onnx"
    torch.onnx.export(Pair(), (torch.zeros(1, 3),), str(path), input_names=["x"], output_names=["plus", "minus"],
                      dynamic_axes={"x": {0: "b", 1: "n"}}, dynamo=False)  # fmt: skip
    return path


def test_outputs_are_bound_by_name_and_compiled_shapes_are_bounded(two_outputs):
    import torch

    from runtime.openvino_engine import MAX_COMPILED_SHAPES, OpenVINOEngine

    io = (
        [{"name": "x", "dtype": "float32"}],
        [{"name": "minus", "dtype": "float32"}, {"name": "plus", "dtype": "float32"}],
    )
    engine = OpenVINOEngine("pair", two_outputs, *io)  # outputs listed in another order than the model's
    x = torch.arange(6.0).reshape(2, 3)
    out = engine.run({"x": x})
    assert torch.equal(out["plus"], x + 1) and torch.equal(out["minus"], x - 1)
    for n in range(1, MAX_COMPILED_SHAPES + 3):
        assert torch.equal(engine.run({"x": torch.ones(1, n)})["plus"], torch.full((1, n), 2.0))
    assert engine.describe()["compiled_shapes"] == MAX_COMPILED_SHAPES, "the least recently used shapes go"
    with pytest.raises(BackendUnavailableError, match="no outputs named"):
        OpenVINOEngine("pair", two_outputs, io[0], [{"name": "noise_pred", "dtype": "float32"}])


def test_openvino_read_errors_are_typed_so_auto_can_fall_back(tmp_path):
    from runtime.openvino_engine import OpenVINOEngine

    junk = tmp_path / "unet.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(BackendUnavailableError, match="unet: OpenVINO cannot read"):
        OpenVINOEngine("unet", junk, [{"name": "x", "dtype": "float32"}], [{"name": "y", "dtype": "float32"}])


def test_missing_openvino_and_unknown_device_are_refused_with_what_to_do(engine_dir, monkeypatch):
    with pytest.raises(BackendUnavailableError, match="NPU"):
        acsdk.Synthesizer(engine_dir, backend="openvino", device="cpu", openvino_device="NPU")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailableError, match=r"acsdk\[openvino\]"):
        acsdk.Synthesizer(engine_dir, backend="openvino", device="cpu")
    auto = acsdk.Synthesizer(engine_dir, device="cpu").load()  # auto skips what is not installed
    assert auto.info()["components"]["unet"]["backend"] == "onnxruntime"


def test_fp16_dir_runs_on_openvino_with_its_fallbacks(engine_dir_fp16, synth, scene):
    s = acsdk.Synthesizer(engine_dir_fp16, backend="openvino", device="cpu").load()
    info = s.info()["components"]
    assert info["unet"]["precision"] == "fp16" and info["vae_decoder_fp32"]["backend"] == "openvino"
    ours, ref = _run(s, scene), _run(synth, scene)
    a, b = pixels(ours.image).astype(float), pixels(ref.image).astype(float)
    psnr = 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12))
    assert psnr > 30, psnr


def test_openvino_matches_torch_on_the_demo_model(demo_engine_dir):
    from acsdk.apps.demo import demo_checkpoint
    from acsdk.testing import make_box_mask, make_defect_pair, make_texture

    ref, ref_mask = make_defect_pair(64, seed=8)
    args = (
        make_texture(64, seed=2),
        make_box_mask(64, 18, 20, 16, 14),
        "a photo of a plate with a hole",
        ref,
        ref_mask,
    )
    ours = acsdk.Synthesizer(demo_engine_dir, backend="openvino", device="cpu").run(*args, seed=3)
    base = acsdk.Synthesizer.from_checkpoint(demo_checkpoint()).run(*args, seed=3)
    diff = np.abs(pixels(ours.image).astype(int) - pixels(base.image).astype(int))
    assert diff.max() <= 1, diff.max()


def test_auto_on_a_cpu_picks_the_faster_backend_per_component_measured_once(engine_dir, tmp_path, monkeypatch):
    """Not a fixed order: each component runs on whichever CPU backend measured faster on this host (an AVX2 EPYC
    runs the UNet faster on OpenVINO but the VAE on ONNX Runtime); the measurement is cached per host."""
    from acsdk.inference import backend_choice

    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "cache"))
    real = acsdk.Synthesizer(engine_dir, device="cpu").load().info()  # a real measurement on this machine
    for name, record in real["backend_choice"].items():
        assert set(record["ms"]) == {"openvino", "onnxruntime"} and min(record["ms"].values()) > 0, name
        ov, ort = record["ms"]["openvino"], record["ms"]["onnxruntime"]
        assert record["order"][0] == ("onnxruntime" if ort * backend_choice.MARGIN < ov else "openvino"), record
        assert real["components"][name.split("@")[0]]["backend"] == record["order"][0]
    assert len(real["backend_choice"]) == 6

    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "other"))
    slow_vae = {"vae_encoder": 3.0, "vae_decoder": 2.0}  # OpenVINO's seconds per call here; ORT always 1.5

    def fake(engine, feed):
        return slow_vae.get(engine.name, 1.0) if engine.backend == "openvino" else 1.5

    monkeypatch.setattr(backend_choice, "time_engine", fake)
    info = acsdk.Synthesizer(engine_dir, device="cpu").load().info()
    chosen = {n: c["backend"] for n, c in info["components"].items()}
    assert chosen["vae_encoder"] == chosen["vae_decoder"] == "onnxruntime"
    assert chosen["unet"] == chosen["text_encoder"] == "openvino"
    assert info["backend_choice"]["vae_decoder@fp32"]["ms"] == {"openvino": 2000.0, "onnxruntime": 1500.0}

    def never(engine, feed):
        raise AssertionError("measured again although the choice is cached")

    monkeypatch.setattr(backend_choice, "time_engine", never)
    again = acsdk.Synthesizer(engine_dir, device="cpu").load().info()
    assert {n: c["backend"] for n, c in again["components"].items()} == chosen
    assert all(r["cached"] for r in again["backend_choice"].values())
    explicit = acsdk.Synthesizer(engine_dir, backend="openvino", device="cpu").load().info()
    assert explicit["components"]["vae_decoder"]["backend"] == "openvino", "an explicit backend is never reordered"
    # low_memory neither measures (that opens both backends) nor follows a speed record: OpenVINO peaks lower.
    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "third"))
    low = acsdk.Synthesizer(engine_dir, device="cpu", low_memory=True).load("vae_decoder", "unet").info()
    assert low["components"]["vae_decoder"]["backend"] == low["components"]["unet"]["backend"] == "openvino"
    assert low["backend_choice"] == {}


def test_the_cache_entry_is_held_while_engines_use_it_and_acsdk_info_shows_its_size(
    engine_dir, tmp_path, monkeypatch, capsys
):
    import json

    from acsdk.apps.cli import main
    from acsdk.inference.backend_choice import sample_feed
    from acsdk.inference.parts import openvino_cache_dir
    from runtime import model_cache
    from runtime.manifest import Manifest

    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "cache"))
    entry = openvino_cache_dir(Manifest.load(engine_dir))
    s = acsdk.Synthesizer(engine_dir, backend="openvino", device="cpu").load("vae_decoder")
    s.parts.engines["vae_decoder"].run(sample_feed(Manifest.load(engine_dir).components["vae_decoder"]))  # compiles
    assert any(entry.glob("*.blob"))
    assert model_cache.in_use(entry) and model_cache.prune(cap=0) == [], "no process evicts an entry in use"
    assert json.loads((entry / model_cache.ENTRY_FILE).read_text())["engine_dir"] == str(engine_dir.resolve())
    s.release()
    assert not model_cache.in_use(entry), "released with its engines"
    assert main(["info", str(engine_dir), "--backend", "openvino", "--device", "cpu"]) == 0
    cache = json.loads(capsys.readouterr().out)["openvino_cache"]
    assert cache["root"] == str(entry.parent) and cache["entries"] == 1 and cache["cap_gib"] == 20.0
    own = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
    assert cache["this_engine_dir"] == {"entry": entry.name, "bytes": own, "gib": round(own / (1 << 30), 3)}
    assert cache["bytes"] == own > 10_000, "the compiled blob counted"


def test_pruning_from_another_process_never_breaks_a_compile_in_progress(two_outputs, tmp_path):
    """OpenVINO fails a compile whose cache folder vanishes while it writes the blob; an engine holds its entry, so
    a process pruning everything the whole time removes nothing of it, and every compiled shape is cached."""
    import subprocess
    import textwrap

    import torch

    from runtime import model_cache
    from runtime.openvino_engine import OpenVINOEngine

    root = tmp_path / "openvino"
    stop = tmp_path / "stop"
    code = textwrap.dedent(f"""
        import pathlib
        from runtime import model_cache
        n = 0
        while not pathlib.Path({str(stop)!r}).exists():
            model_cache.prune({str(root)!r}, 0)
            n += 1
            if n == 1:
                print("pruning", flush=True)
        print(n)
    """)
    lease = model_cache.use(root / "entry", cap=1 << 60)
    pruner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert pruner.stdout.readline().strip() == "pruning"
        io = ([{"name": "x", "dtype": "float32"}], [{"name": "plus", "dtype": "float32"}])
        engine = OpenVINOEngine("pair", two_outputs, *io, cache_dir=lease.path, cache_lease=lease, max_shapes=1)
        for n in range(1, 25):
            assert torch.equal(engine.run({"x": torch.ones(1, n)})["plus"], torch.full((1, n), 2.0))
    finally:
        stop.touch()
        prunes = int(pruner.communicate(timeout=60)[0])
    assert prunes > 1 and len(list((root / "entry").glob("*.blob"))) == 24
    del engine, lease
    assert model_cache.prune(root, 0)[0].name == "entry", "once let go, it can go"
