import json

import numpy as np
from PIL import Image

from acsdk.cli import main


def test_demo_writes_images_masks_sheet_and_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--count", "2", "--steps", "6"]) == 0
    images = sorted((out / "image").glob("*.png"))
    masks = sorted((out / "mask").glob("*.png"))
    assert len(images) == 2 and len(masks) == 2
    assert Image.open(images[0]).mode == "RGB"
    assert set(np.unique(np.asarray(Image.open(masks[0])))) == {0, 255}
    sheet = Image.open(out / "contact_sheet.png")
    assert 3 * 128 < sheet.width < 4 * 128 and 2 * 128 < sheet.height < 3 * 128  # 2 rows x 3 columns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 2 and "random" in summary["note"]
    printed = capsys.readouterr().out
    assert str(out) in printed and "contact sheet" in printed
    assert (tmp_path / "cache").is_dir()


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
