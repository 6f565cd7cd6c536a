import json

import numpy as np
from PIL import Image

from acsdk.apps.cli import main


def test_demo_writes_a_training_set_sheet_and_summary(tmp_path, monkeypatch, capsys, engine_dir):
    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--per-type", "1", "--steps", "6", "--engines", str(engine_dir)]) == 0
    synthetic = out / "synthetic" / "plate"
    images = sorted(synthetic.glob("*/image/*.png"))
    masks = sorted(synthetic.glob("*/mask/*.png"))
    assert len(images) == 4 and len(masks) == 4  # one per defect type
    assert Image.open(images[0]).mode == "RGB"
    assert set(np.unique(np.asarray(Image.open(masks[0])))) == {0, 255}
    assert (out / "data" / "plate" / "train" / "good").is_dir()
    sheet = Image.open(out / "contact_sheet.png")
    assert 4 * 128 < sheet.width < 5 * 128 and 4 * 128 < sheet.height < 5 * 128  # 4 rows x 4 columns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 4 and "trained from scratch" in summary["note"]
    large = summary["large_image"]
    assert (out / "large_image.png").is_file() and large["window"]["height"] < large["size"]
    extent = large["defect_extent_model_px"]
    assert extent["auto"] > 8 * extent["full"], "the window gives the defect model pixels to be painted with"
    printed = capsys.readouterr().out
    assert str(out) in printed and "contact sheet" in printed


def test_demo_never_deletes_what_it_did_not_write(tmp_path, capsys, engine_dir):
    """`acsdk demo --out X` on a directory of the user's is refused and nothing in it is touched; a directory an
    earlier demo wrote (it has the marker) is reused, and only the demo's own outputs are replaced."""
    out = tmp_path / "mine"
    (out / "data").mkdir(parents=True)
    (out / "data" / "precious.txt").write_text("user data")
    (out / "synthetic").mkdir()
    (out / "synthetic" / "labels.csv").write_text("user labels")
    args = ["demo", "--out", str(out), "--per-type", "1", "--steps", "2", "--engines", str(engine_dir)]
    assert main(args) == 2
    assert "out" in capsys.readouterr().err
    assert (out / "data" / "precious.txt").read_text() == "user data"
    assert (out / "synthetic" / "labels.csv").read_text() == "user labels"

    fresh = tmp_path / "fresh"
    args[2] = str(fresh)
    assert main(args) == 0
    (fresh / "notes.txt").write_text("the user's, beside the demo's outputs")
    assert main(args) == 0  # a second demo run into its own directory
    assert (fresh / "notes.txt").is_file()
    assert len(list((fresh / "synthetic" / "plate").glob("*/image/*.png"))) == 4


def test_import_ip_adapter_cli_errors_exit_2(tmp_path, tiny_ckpt, capsys):
    code = main(
        [
            "import-ip-adapter",
            "--checkpoint",
            str(tiny_ckpt),
            "--ip-adapter",
            str(tmp_path / "none.bin"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "ip_adapter" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_failures_exit_1_and_bad_arguments_exit_2(tmp_path, engine_dir, capsys):
    """2 says "fix the call", 1 says "the work failed on good arguments": a tampered engine file is not a bad
    argument (it used to exit 2 like every ACSDKError)."""
    import shutil

    from acsdk.errors import (
        ACSDKError,
        BackendUnavailableError,
        CheckpointError,
        EngineDirError,
        IncompatibleEngineError,
        InputError,
        IntegrityError,
        TrainingError,
        WriteError,
    )
    from export.errors import BuildArgumentError, BuildError

    for cls in (InputError, CheckpointError, EngineDirError, BuildArgumentError):
        assert cls.exit_code == 2, cls
    for cls in (ACSDKError, IntegrityError, TrainingError, BackendUnavailableError, IncompatibleEngineError,
                WriteError, BuildError):  # fmt: skip
        assert cls.exit_code == 1, cls
    tampered = tmp_path / "e"
    shutil.copytree(engine_dir, tampered, ignore=shutil.ignore_patterns("cache"))
    vae = tampered / "onnx" / "vae_decoder.onnx"
    vae.write_bytes(vae.read_bytes()[:-1] + b"\0")
    assert main(["info", str(tampered), "--backend", "onnxruntime"]) == 1
    assert "acsdk info: failed:" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "acsdk info: error:" in capsys.readouterr().err
