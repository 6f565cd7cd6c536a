"""Import IP-Adapter-style weights (`image_proj` / `ip_adapter` groups) as the start of an SGA adapter.

ip-adapter_sd15 stores `ip_adapter` keys by processor index (`"1.to_k_ip.weight"`): the position of the
processor in the UNet's `attn_processors` order, where the cross-attention ones sit. The authors'
loader looked for `sg_adapter` and loaded nothing; here every attn2 must receive its weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import CheckpointError
from .checkpoint import SGA_PREFIX, AnomalyControlModel
from .sga import is_cross_attention


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


def convert_ip_adapter(model: AnomalyControlModel, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Return a full adapter state: ImageProj and to_k_ip/to_v_ip from the file, BlipProj kept from `model`."""
    groups = read_ip_adapter(path)
    names = list(model.unet.attn_processors)
    state = dict(model.adapter_state_dict())
    for key, value in groups["image_proj"].items():
        state[f"image_proj.{key}"] = value
    filled = set()
    for key, value in groups["ip_adapter"].items():
        index, _, param = key.partition(".")
        if not index.isdigit() or int(index) >= len(names) or not is_cross_attention(names[int(index)]):
            raise CheckpointError("ip_adapter", path, f"key '{key}' names no cross-attention processor of this UNet")
        name = names[int(index)]
        state[f"{SGA_PREFIX}{name}.{param}"] = value
        filled.add(name)
    missing = [n for n in names if is_cross_attention(n) and n not in filled]
    if missing:
        raise CheckpointError("ip_adapter", path, f"no weights for {len(missing)} attn2 layers, e.g. {missing[0]}")
    return state


def import_ip_adapter(model: AnomalyControlModel, path: str | os.PathLike) -> None:
    """Load IP-Adapter weights into `model` in place (shapes checked against the base model)."""
    model.load_adapter_state_dict(convert_ip_adapter(model, path), path)
