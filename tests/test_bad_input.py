"""Bad input, swept across the Python API and the commands: each case gets a typed `ACSDKError` naming the argument
(or exit code 2 with a one-line message) and leaves nothing behind in the working directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST

import acsdk
import acsdk.data.runs
from acsdk import ACSDKError, CheckpointError, EngineDirError, InputError
from acsdk.data import make_mvtec_like
from acsdk.errors import CorruptFileError
from acsdk.inference.bank import Bank
from runtime.state import read_state

PROMPT = "a photo of a plate with a hole"


@dataclass
class Ctx:
    tmp: Path
    ckpt: Path
    engines: Path
    scene: dict
    synth: acsdk.Synthesizer
    data: Path


@pytest.fixture(scope="module")
def ort(engine_dir):
    return acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_mvtec_like(tmp_path_factory.mktemp("bad-input-data"), "plate", n_good=2, n_per_defect=3)


def _run(c: Ctx, **kw) -> None:
    args = {**c.scene, "prompt": PROMPT, **FAST, **kw}
    c.synth.run(args.pop("image"), args.pop("mask"), args.pop("prompt"), **args)


def _cli(*argv: str) -> int:
    from acsdk.apps.cli import main

    return main(list(argv))


def _build(*argv: str) -> int:
    from export.build import main

    return main([*argv, "-q"])


def _train(c: Ctx, data: Path, *extra: str) -> int:
    from acsdk.training.adapter import main

    args = ["--checkpoint", str(c.ckpt), "--data", str(data), "--category", "plate", "--out", str(c.tmp / "t")]
    return main([*args, "--steps", "1", *extra])


def _generate(c: Ctx, **kw) -> None:
    from acsdk.data.generate import generate

    args = {"per_type": 1, "out": c.tmp / "gen", "category": "plate", "num_inference_steps": 2, "progress": False}
    args.update(kw)
    generate(None, c.data, args.pop("category"), args.pop("per_type"), args.pop("out"), synthesizer=c.synth, **args)


def _build_engines(c: Ctx, **kw) -> None:
    from export.build import build_engine_dir

    build_engine_dir(c.ckpt, kw.pop("out", c.tmp / "e"), backend="onnxruntime", progress=False, **kw)


def _train_py(c: Ctx, out: Path, **kw) -> None:
    from acsdk.training.adapter import TrainConfig, train

    train(c.ckpt, c.data, "plate", out, TrainConfig(steps=1, batch_size=1, grad_accum=1), progress=False, **kw)


def _synth_cli(c: Ctx, out: str = "out/y.png", rgba: bool = False, **flags: str) -> int:
    """`acsdk synth` on input files the case prepares (input*.png, kept by the sweep); `out` and flag values name
    them by file name. The inputs' bytes must be unchanged afterwards."""
    from PIL import Image

    image = c.scene["image"]
    if rgba:
        image = np.dstack([image, np.full(image.shape[:2], 200, np.uint8)])
    files = {"input.png": image, "input_mask.png": c.scene["mask"], "input_ref.png": c.scene["reference_image"],
             "input_ref_mask.png": c.scene["reference_mask"]}  # fmt: skip
    for name, arr in files.items():
        Image.fromarray(arr).save(c.tmp / name)
    before = {n: (c.tmp / n).read_bytes() for n in files}
    argv = ["synth", "--engines", str(c.engines), "--device", "cpu", "--prompt", PROMPT, "--steps", "4"]
    argv += ["--image", str(c.tmp / "input.png"), "--mask", str(c.tmp / "input_mask.png")]
    argv += ["--reference", str(c.tmp / "input_ref.png"), "--reference-mask", str(c.tmp / "input_ref_mask.png")]
    argv += ["--out", str(c.tmp / out)]
    for flag, value in flags.items():
        argv += [f"--{flag.replace('_', '-')}", str(c.tmp / value)]
    code = _cli(*argv)
    assert {n: (c.tmp / n).read_bytes() for n in files} == before, "an input was overwritten"
    return code


def _corrupt_manifest(c: Ctx) -> Path:
    (c.tmp / "engines_corrupt").mkdir()
    (c.tmp / "engines_corrupt" / "manifest.json").write_text('{"settings": {"max_batch": ')
    return c.tmp / "engines_corrupt"


def _foreign_record(c: Ctx) -> Path:
    ddir = c.tmp / "gen" / "plate" / "hole"
    (ddir / "records").mkdir(parents=True)
    (ddir / "records" / "000000.json").write_text('{"idx": 0}')  # hand-edited: no "index"
    return ddir


def _corrupt_state(c: Ctx) -> Path:
    path = c.tmp / "state.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    return path


def _corrupt_png(c: Ctx) -> Path:
    path = c.tmp / "corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return path


def _existing(c: Ctx, name: str) -> Path:
    path = c.tmp / name
    path.mkdir(parents=True)
    (path / "keep.txt").write_text("the user's")
    return path


def _bank_with_info(c: Ctx, info: str) -> Path:
    """A bank directory whose bank.json holds `info` (JSON, but maybe not what `prepare` writes)."""
    (c.tmp / "bank").mkdir()
    (c.tmp / "bank" / "bank.safetensors").write_bytes(b"")
    (c.tmp / "bank" / "bank.json").write_text(info)
    return c.tmp / "bank"


def _features_of_another_kind(c: Ctx) -> Path:
    from safetensors.torch import save_file

    path = c.tmp / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    return path


# (id, action, expected error type or exit code, argument the InputError must name)
CASES: list[tuple[str, Callable[[Ctx], object], type | int, str | None]] = [
    # -- Python API: the Synthesizer --------------------------------------------------------------------------
    ("engine-dir-missing", lambda c: acsdk.Synthesizer(c.tmp / "none", device="cpu"), EngineDirError, None),
    ("backend-unknown", lambda c: acsdk.Synthesizer(c.engines, backend="cuda", device="cpu"), InputError, "backend"),
    (
        "component-backend-unknown-name",
        lambda c: acsdk.Synthesizer(c.engines, device="cpu", component_backends={"unet2": "torch"}),
        InputError,
        "component_backends",
    ),
    ("image-not-an-image", lambda c: _run(c, image=42), InputError, "image"),
    ("mask-size-differs", lambda c: _run(c, mask=np.ones((10, 10), np.uint8) * 255), InputError, "mask"),
    ("mask-empty", lambda c: _run(c, mask=np.zeros((64, 64), np.uint8)), InputError, "mask"),
    ("image-float-out-of-range", lambda c: _run(c, image=np.full((64, 64, 3), 2.0)), InputError, "image"),
    ("image-path-missing", lambda c: _run(c, image=c.tmp / "nope.png"), InputError, "image"),
    ("image-file-corrupt", lambda c: _run(c, image=_corrupt_png(c)), InputError, "image"),
    ("seed-negative", lambda c: _run(c, seed=-1), InputError, "seed"),
    ("seed-above-torch-range", lambda c: _run(c, seed=2**64), InputError, "seed"),  # torch: a bare ValueError
    ("seed-not-an-integer", lambda c: _run(c, seed=1.5), InputError, "seed"),
    ("bank-json-not-an-object", lambda c: Bank.load(_bank_with_info(c, "[1, 2]")), InputError, "bank"),
    ("steps-zero", lambda c: _run(c, num_inference_steps=0), InputError, "num_inference_steps"),
    ("strength-zero", lambda c: _run(c, strength=0.0), InputError, "strength"),
    (
        "steps-times-strength-below-one",
        lambda c: _run(c, num_inference_steps=1, strength=0.7),
        InputError,
        "num_inference_steps",
    ),
    ("guidance-nan", lambda c: _run(c, guidance_scale=float("nan")), InputError, "guidance_scale"),
    ("prompt-not-a-string", lambda c: _run(c, prompt=None), InputError, "prompt"),
    ("reference-without-mask", lambda c: _run(c, reference_mask=None), InputError, "reference_mask"),
    (
        "reference-of-another-model",
        lambda c: _run(
            c, reference_image=None, reference_mask=None, reference=acsdk.SemanticFeatures(torch.zeros(1, 9, 5))
        ),
        InputError,
        "reference",
    ),
    (
        "features-file-of-another-kind",
        lambda c: acsdk.SemanticFeatures.load(_features_of_another_kind(c)),
        InputError,
        "path",
    ),
    # -- Python API: checkpoints, export, data, training -----------------------------------------------------
    (
        "checkpoint-empty-dir",
        lambda c: acsdk.models.AnomalyControlModel.from_pretrained(_existing(c, "ck")),
        CheckpointError,
        None,
    ),
    (
        "save-onto-existing-dir",
        lambda c: acsdk.models.AnomalyControlModel.from_pretrained(c.ckpt).save_pretrained(_existing(c, "ck")),
        InputError,
        "path",
    ),
    ("build-out-exists", lambda c: _build_engines(c, out=_existing(c, "e")), ACSDKError, None),
    ("build-max-batch-zero", lambda c: _build_engines(c, max_batch=0), ACSDKError, None),
    ("build-unknown-component", lambda c: _build_engines(c, components=["unet2"]), ACSDKError, None),
    ("build-height-not-a-multiple", lambda c: _build_engines(c, height=50), ACSDKError, None),
    ("generate-per-type-zero", lambda c: _generate(c, per_type=0), InputError, "per_type"),
    ("generate-out-holds-other-files", lambda c: _generate(c, out=_existing(c, "gen/plate").parent), InputError, "out"),
    ("generate-unknown-category", lambda c: _generate(c, category="bottle"), InputError, "category"),
    ("generate-seed-negative", lambda c: _generate(c, seed=-1), InputError, "seed"),
    ("generate-seed-above-torch-range", lambda c: _generate(c, seed=2**64), InputError, "seed"),
    ("generate-steps-times-strength", lambda c: _generate(c, num_inference_steps=1), InputError, "num_inference_steps"),
    ("generate-guidance-nan", lambda c: _generate(c, guidance_scale=float("nan")), InputError, "guidance_scale"),
    # more UNet calls than the schedule has timesteps after DDIM-50's start: refused before generate.json is written
    ("generate-steps-1000", lambda c: _generate(c, num_inference_steps=1000), InputError, "num_inference_steps"),
    (
        "generate-corrupt-manifest-batch",
        lambda c: acsdk.data.runs.engine_max_batch(_corrupt_manifest(c)),
        EngineDirError,
        None,
    ),
    ("generate-foreign-record", lambda c: acsdk.data.runs.read_records(_foreign_record(c)), InputError, "out"),
    ("training-state-corrupt", lambda c: read_state(_corrupt_state(c)), CorruptFileError, None),
    ("train-out-exists", lambda c: _train_py(c, _existing(c, "t")), InputError, "out"),
    ("train-resume-nothing", lambda c: _train_py(c, _existing(c, "t"), resume=True), InputError, "out"),
    ("procedural-category-exists", lambda c: make_mvtec_like(c.data, "plate"), InputError, "category"),
    # -- the commands ------------------------------------------------------------------------------------------
    (
        "cli-synth-image-missing",
        lambda c: _cli(
            "synth",
            "--engines",
            str(c.engines),
            "--device",
            "cpu",
            "--image",
            str(c.tmp / "x.png"),
            "--mask",
            str(c.tmp / "m.png"),
            "--prompt",
            PROMPT,
            "--out",
            str(c.tmp / "out" / "y.png"),
        ),
        2,
        None,
    ),
    ("cli-synth-out-is-the-image", lambda c: _synth_cli(c, out="input.png"), 2, None),
    ("cli-synth-out-is-the-reference", lambda c: _synth_cli(c, out="input_ref.png"), 2, None),
    ("cli-synth-mask-out-is-the-mask", lambda c: _synth_cli(c, mask_out="input_mask.png"), 2, None),
    ("cli-synth-mask-out-is-out", lambda c: _synth_cli(c, out="y.png", mask_out="y.png"), 2, None),
    ("cli-synth-rgba-into-jpeg", lambda c: _synth_cli(c, out="y.jpg", rgba=True), 2, None),
    ("cli-synth-unknown-format", lambda c: _synth_cli(c, out="y.xyz"), 2, None),
    ("cli-info-missing", lambda c: _cli("info", str(c.tmp / "none")), 2, None),
    (
        "cli-generate-unknown-category",
        lambda c: _cli(
            "generate",
            "--engines",
            str(c.engines),
            "--device",
            "cpu",
            "--data",
            str(c.data),
            "--category",
            "bottle",
            "--per-type",
            "1",
            "--out",
            str(c.tmp / "g"),
        ),
        2,
        None,
    ),
    (
        "cli-generate-steps-over-the-schedule",
        lambda c: _cli(
            *("generate", "--engines", str(c.engines), "--device", "cpu", "--data", str(c.data)),
            *("--category", "plate", "--per-type", "1", "--out", str(c.tmp / "g"), "--steps", "1000"),
        ),
        2,
        None,
    ),
    (
        "cli-generate-seed-above-torch-range",
        lambda c: _cli(
            *("generate", "--engines", str(c.engines), "--device", "cpu", "--data", str(c.data), "--steps", "2"),
            *("--category", "plate", "--per-type", "1", "--out", str(c.tmp / "g"), "--seed", str(2**64)),
        ),
        2,
        None,
    ),
    (
        "cli-demo-out-is-a-file",
        lambda c: _cli("demo", "--out", str(_corrupt_png(c)), "--engines", str(c.engines)),
        2,
        None,
    ),
    (
        "cli-import-ip-adapter-missing",
        lambda c: _cli(
            "import-ip-adapter",
            *("--checkpoint", str(c.ckpt)),
            *("--ip-adapter", str(c.tmp / "n.bin")),
            *("--out", str(c.tmp / "o")),
        ),
        2,
        None,
    ),
    (
        "build-checkpoint-missing",
        lambda c: _build("--checkpoint", str(c.tmp / "no"), "--out", str(c.tmp / "e")),
        2,
        None,
    ),
    (
        "build-max-batch-zero-cli",
        lambda c: _build("--checkpoint", str(c.ckpt), "--out", str(c.tmp / "e"), "--max-batch", "0"),
        2,
        None,
    ),
    ("train-data-missing", lambda c: _train(c, c.tmp / "d"), 2, None),
    ("train-fp16-on-cpu", lambda c: _train(c, c.data, "--precision", "fp16", "--device", "cpu"), 2, None),
]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_sweep_is_wide():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("action", "expected", "argument"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_typed_and_leaves_nothing(
    action, expected, argument, tmp_path, tiny_ckpt, engine_dir, scene, ort, data, capsys
):
    ctx = Ctx(tmp_path, tiny_ckpt, engine_dir, scene, ort, data)
    data_before = _tree(data)
    if isinstance(expected, int):
        code = action(ctx)
        err = capsys.readouterr().err
        assert code == expected, err
        assert "Traceback" not in err and ": error: " in err.strip().splitlines()[-1], err  # one line says what
    else:
        with pytest.raises(expected) as exc:
            action(ctx)
        assert isinstance(exc.value, ACSDKError)
        if argument is not None:
            assert exc.value.argument == argument, str(exc.value)
            assert argument in str(exc.value)
    # Nothing half-written: only what the case itself prepared (its inputs, the user's own dirs) is there.
    made = [p for p in _tree(tmp_path) if not p.endswith(PREPARED)]
    assert not made, f"left behind: {made}"
    assert not [p for p in tmp_path.rglob("*") if p.is_dir() and not any(p.iterdir())], "empty directories left"
    assert _tree(data) == data_before


PREPARED = (
    *("keep.txt", "corrupt.png", "other.safetensors", "input.png", "input_mask.png", "input_ref.png"),
    *("input_ref_mask.png", "engines_corrupt/manifest.json", "records/000000.json", "state.safetensors"),
    *("bank/bank.json", "bank/bank.safetensors"),
)


def _refused_before_a_model_opens(monkeypatch) -> None:
    """Make opening an engine dir fail loudly: a refusal that comes after it is not the typed one-line error."""

    def opened(*args, **kwargs):
        raise AssertionError("the Synthesizer was made before the arguments were checked")

    monkeypatch.setattr(acsdk.Synthesizer, "__init__", opened)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--steps", "1000"), "num_inference_steps"),  # 700 UNet calls; 681 timesteps from DDIM-50's start at 0.7
        (("--steps", "975", "--sampler", "dpmpp-2m"), "num_inference_steps"),  # the smallest refused, either sampler
        (("--seed", str(2**64)), "seed"),  # torch.Generator.manual_seed: a bare ValueError at the first image
        (("--bank", "bank"), "bank"),  # a bank.json that parses but is no object: a bare AttributeError
    ],
    ids=["steps-1000", "steps-975-dpmpp", "seed-2**64", "bank-json-a-list"],
)
def test_synth_refuses_before_a_model_opens(flags, named, tmp_path, engine_dir, scene, monkeypatch, capsys):
    from PIL import Image

    for name, arr in (("n.png", scene["image"]), ("m.png", scene["mask"])):
        Image.fromarray(arr).save(tmp_path / name)
    if "--bank" in flags:
        _bank_with_info(Ctx(tmp_path, *[None] * 5), "[1, 2]")
        flags = ("--bank", str(tmp_path / "bank"), "--steps", "4")
    else:
        flags = ("--prompt", PROMPT, *flags)
    _refused_before_a_model_opens(monkeypatch)
    code = _cli(
        *("synth", "--engines", str(engine_dir), "--device", "cpu"),
        *("--image", str(tmp_path / "n.png"), "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o.png")),
        *flags,
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("acsdk synth: error: ") and named in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank", "m.png", "n.png"][("--bank" not in flags) :]
    if "--bank" in flags:
        assert str(tmp_path / "bank" / "bank.json") in err, "the error names the file"


def test_every_seed_of_a_batch_is_checked_before_a_model_runs(ort, scene, monkeypatch):
    """run_batch's second job with a seed torch cannot take is refused before the first job's prompt is encoded."""

    def encoded(*args, **kwargs):
        raise AssertionError("a model ran before the seeds were checked")

    monkeypatch.setattr(ort, "_encode_text", encoded)
    prompt = "a photo of a plate with a seed test"  # not in the text cache: the first job would encode it
    jobs = [
        {"image": scene["image"], "mask": scene["mask"], "prompt": prompt, "seed": s} for s in (0, 2**64 - 1, 2**64)
    ]
    with pytest.raises(InputError) as err:
        ort.run_batch(jobs, **FAST)
    assert err.value.argument == "seed" and "2**64 - 1" in str(err.value) and str(2**64) in str(err.value)


def test_a_step_count_the_schedule_cannot_take_is_refused_before_a_model_runs(ort, scene, monkeypatch):
    """The Python API too: 1000 steps at strength 0.7 are more UNet calls than the schedule has timesteps after
    DDIM-50's start; refused before the prompt is encoded, not by the sampler after the reference side ran."""

    def encoded(*args, **kwargs):
        raise AssertionError("a model ran before the step count was checked")

    monkeypatch.setattr(ort, "_encode_text", encoded)
    with pytest.raises(InputError) as err:
        ort.run(scene["image"], scene["mask"], "a photo of a plate with a step test", num_inference_steps=1000)
    assert err.value.argument == "num_inference_steps"
