"""Real-size export: SD-1.5's UNet with SGA, random weights. ~3 min and ~14 GB RAM: `pytest -m slow`."""

import pytest
import torch

from acsdk.models.components import SGAUNet
from acsdk.models.presets import build_sd15_sga_unet
from export.onnx_export import artifact_files, export_onnx
from export.specs import SPECS, Dims
from export.verify import verify_onnx

pytestmark = pytest.mark.slow


def test_sd15_unet_exports_with_external_data_and_matches_torch(tmp_path):
    unet = build_sd15_sga_unet()
    dims = Dims.from_preset("sd15")
    spec = SPECS["unet"]
    module = SGAUNet(unet)
    path = export_onnx(spec, module, dims, 1, tmp_path / "unet.onnx", 18)
    files = artifact_files(path)
    assert len(files) == 2 and files[1].stat().st_size > 3 * 2**30  # weights in external data
    with torch.no_grad():
        result = verify_onnx(spec, module, path, dims, "fp32")
    print(f"SD-1.5 UNet fp32: max_abs {result['max_abs']:.3g}, scale {result['reference_scale']:.3g}")
    assert result["finite"] and result["passed"], result
