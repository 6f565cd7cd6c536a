import pytest
import torch
from safetensors.torch import save_file

from acsdk import CheckpointError
from acsdk.models.ip_adapter import convert_ip_adapter, import_ip_adapter
from acsdk.models.presets import build_model


def _ip_adapter_groups(model, seed=0):
    """Weights laid out as ip-adapter_sd15 lays them out: processor index -> to_k_ip / to_v_ip."""
    g = torch.Generator().manual_seed(seed)
    image_proj = {k: torch.randn(v.shape, generator=g) for k, v in model.projection.image_proj.state_dict().items()}
    ip = {}
    for i, (name, proc) in enumerate(model.unet.attn_processors.items()):
        if name.endswith("attn2.processor"):
            for key, v in proc.state_dict().items():
                ip[f"{i}.{key}"] = torch.randn(v.shape, generator=g)
    return {"image_proj": image_proj, "ip_adapter": ip}


@pytest.fixture(scope="module")
def model():
    return build_model("tiny", seed=1)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_converter_maps_every_key(model, tmp_path, fmt):
    groups = _ip_adapter_groups(model)
    path = tmp_path / f"ip.{fmt}"
    if fmt == "bin":
        torch.save(groups, path)
    else:
        save_file({f"{g}.{k}": v for g, d in groups.items() for k, v in d.items()}, str(path))
    blip_before = model.projection.blip_proj.weight.clone()
    import_ip_adapter(model, path)
    names = list(model.unet.attn_processors)
    for key, value in groups["ip_adapter"].items():
        index, _, param = key.partition(".")
        proc = model.unet.attn_processors[names[int(index)]]
        assert torch.equal(proc.state_dict()[param], value)
    assert torch.equal(model.projection.image_proj.proj.weight, groups["image_proj"]["proj.weight"])
    assert torch.equal(model.projection.blip_proj.weight, blip_before)


def test_bin_with_code_is_refused(model, tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"image_proj": {"x": object()}, "ip_adapter": {}}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        convert_ip_adapter(model, path)


def test_wrong_index_and_missing_layers(model, tmp_path):
    groups = _ip_adapter_groups(model)
    first = next(iter(groups["ip_adapter"]))
    groups["ip_adapter"]["0.to_k_ip.weight"] = groups["ip_adapter"][first]  # 0 is a self-attention
    torch.save(groups, tmp_path / "a.bin")
    with pytest.raises(CheckpointError, match="no cross-attention"):
        convert_ip_adapter(model, tmp_path / "a.bin")
    groups = _ip_adapter_groups(model)
    groups["ip_adapter"] = {
        k: v for k, v in groups["ip_adapter"].items() if not k.startswith(first.split(".")[0] + ".")
    }
    torch.save(groups, tmp_path / "b.bin")
    with pytest.raises(CheckpointError, match="no weights for 1 attn2"):
        convert_ip_adapter(model, tmp_path / "b.bin")


def test_shape_mismatch_names_the_key(model, tmp_path):
    groups = _ip_adapter_groups(model)
    groups["image_proj"]["proj.weight"] = torch.zeros(2, 2)
    torch.save(groups, tmp_path / "c.bin")
    with pytest.raises(CheckpointError, match="image_proj.proj.weight"):
        import_ip_adapter(model, tmp_path / "c.bin")


# The published ip-adapter_sd15 layout: index -> (SD-1.5 cross-attention layer, to_k_ip / to_v_ip width).
PUBLISHED_SD15 = {
    1: ("down_blocks.0.attentions.0", 320),
    3: ("down_blocks.0.attentions.1", 320),
    5: ("down_blocks.1.attentions.0", 640),
    7: ("down_blocks.1.attentions.1", 640),
    9: ("down_blocks.2.attentions.0", 1280),
    11: ("down_blocks.2.attentions.1", 1280),
    13: ("up_blocks.1.attentions.0", 1280),
    15: ("up_blocks.1.attentions.1", 1280),
    17: ("up_blocks.1.attentions.2", 1280),
    19: ("up_blocks.2.attentions.0", 640),
    21: ("up_blocks.2.attentions.1", 640),
    23: ("up_blocks.2.attentions.2", 640),
    25: ("up_blocks.3.attentions.0", 320),
    27: ("up_blocks.3.attentions.1", 320),
    29: ("up_blocks.3.attentions.2", 320),
    31: ("mid_block.attentions.0", 1280),
}


def test_published_sd15_numbering_lands_on_the_named_layers():
    """Keys 1, 3, ..., 31 of ip-adapter_sd15 onto SD-1.5's named attn2 layers (an SD-1.5 UNet on the meta device:
    the real structure, no memory)."""
    from diffusers import UNet2DConditionModel

    from acsdk.models.ip_adapter import SGA_PREFIX, ip_adapter_to_sga
    from acsdk.models.presets import preset_configs
    from acsdk.models.sga import install_sga

    with torch.device("meta"):
        unet = UNet2DConditionModel(**preset_configs("sd15").unet)
    install_sga(unet, 4)
    published = {
        f"{i}.{p}.weight": torch.zeros(width, 768, device="meta")
        for i, (_, width) in PUBLISHED_SD15.items()
        for p in ("to_k_ip", "to_v_ip")
    }
    state = ip_adapter_to_sga(unet, published, "ip-adapter_sd15")
    procs = unet.attn_processors
    for i, (layer, width) in PUBLISHED_SD15.items():
        name = f"{layer}.transformer_blocks.0.attn2.processor"
        for p in ("to_k_ip", "to_v_ip"):
            assert state[f"{SGA_PREFIX}{name}.{p}.weight"] is published[f"{i}.{p}.weight"]
        assert tuple(procs[name].to_k_ip.weight.shape) == (width, 768), name
    assert len(state) == 32
