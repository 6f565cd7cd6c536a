"""How an SGA adapter starts: from IP-Adapter weights (`image_proj` / `ip_adapter` groups), or as IP-Adapter
initialises one (`init_adapter`).

ip-adapter_sd15 stores `ip_adapter` keys by processor index (`"1.to_k_ip.weight"` ... `"31.to_v_ip.weight"`):
odd numbers, one per cross-attention layer in the UNet's `attn_processors` order. The authors' loader looked for
`sg_adapter` and loaded nothing; here every attn2 must receive its weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .checkpoint import SGA_PREFIX, AnomalyControlModel
from .sga import is_cross_attention, sga_processors


def read_ip_adapter(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """Read {"image_proj": {...}, "ip_adapter": {...}} from a .safetensors or a .bin (never unpickling code)."""
    src = Path(path)
    if not src.is_file():
        raise CheckpointError("ip_adapter", src, "missing file")
    try:
        if src.suffix == ".safetensors":
            from safetensors.torch import load_file

            flat = load_file(str(src))
            groups: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
            for key, value in flat.items():
                group, _, rest = key.partition(".")
                if group in groups:
                    groups[group][rest] = value
        else:
            groups = torch.load(str(src), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError("ip_adapter", src, f"cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(groups, dict) or not groups.get("image_proj") or not groups.get("ip_adapter"):
        raise CheckpointError("ip_adapter", src, "expected 'image_proj' and 'ip_adapter' weight groups")
    return groups


def ip_adapter_layers(unet: nn.Module) -> dict[int, str]:
    """The published numbering: the k-th cross-attention processor in the UNet's `attn_processors` order is
    ip-adapter index 2k+1 (1, 3, ..., 31 on SD-1.5), the rule IP-Adapter's training and diffusers' loader share."""
    cross = [name for name in unet.attn_processors if is_cross_attention(name)]
    return {2 * k + 1: name for k, name in enumerate(cross)}


def ip_adapter_to_sga(unet: nn.Module, ip_adapter: dict[str, torch.Tensor], source: object) -> dict[str, torch.Tensor]:
    """`ip_adapter` group keys (`"<index>.to_k_ip.weight"`) -> adapter-file keys of this UNet's SGA processors."""
    layers = ip_adapter_layers(unet)
    out = {}
    for key, value in ip_adapter.items():
        index, _, param = key.partition(".")
        name = layers.get(int(index)) if index.isdigit() else None
        if name is None:
            raise CheckpointError("ip_adapter", source, f"key '{key}' names no cross-attention processor of this UNet")
        out[f"{SGA_PREFIX}{name}.{param}"] = value
    filled = {k[len(SGA_PREFIX) :].rpartition(".to_")[0] for k in out}
    missing = [n for n in layers.values() if n not in filled]
    if missing:
        raise CheckpointError("ip_adapter", source, f"no weights for {len(missing)} attn2 layers, e.g. {missing[0]}")
    return out


def convert_ip_adapter(model: AnomalyControlModel, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Return a full adapter state: ImageProj and to_k_ip/to_v_ip from the file, BlipProj kept from `model`."""
    groups = read_ip_adapter(path)
    state = dict(model.adapter_state_dict())
    state.update({f"image_proj.{k}": v for k, v in groups["image_proj"].items()})
    state.update(ip_adapter_to_sga(model.unet, groups["ip_adapter"], path))
    return state


def import_ip_adapter(model: AnomalyControlModel, path: str | os.PathLike) -> None:
    """Load IP-Adapter weights into `model` in place (shapes checked against the base model)."""
    model.load_adapter_state_dict(convert_ip_adapter(model, path), path)


def init_adapter(model: AnomalyControlModel) -> None:
    """IP-Adapter's initialisation, made silent: each to_k_ip / to_v_ip copies its attention's to_k / to_v (as
    IP-Adapter's training starts), and ImageProj's LayerNorm gain and bias start at 0, so F_c = 0 and lambda = 1
    adds exactly nothing until training opens that gate (the gain gets gradients from the first step)."""
    copy_attention_to_adapter(model)
    with torch.no_grad():
        model.projection.image_proj.norm.weight.zero_()
        model.projection.image_proj.norm.bias.zero_()


def copy_attention_to_adapter(model: AnomalyControlModel) -> None:
    """to_k_ip / to_v_ip <- the same layer's to_k / to_v (IP-Adapter's start)."""
    with torch.no_grad():
        for name, proc in sga_processors(model.unet).items():
            layer = model.unet.get_submodule(name.rsplit(".processor", 1)[0])
            proc.to_k_ip.weight.copy_(layer.to_k.weight)
            proc.to_v_ip.weight.copy_(layer.to_v.weight)
