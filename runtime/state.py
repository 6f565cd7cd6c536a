"""Resumable training state in ONE safetensors file: tensors (weights, optimizer moments, RNG) plus a JSON record,
written atomically, so a crash never pairs one step's record with another step's tensors. Shared by every trainer
(the adapter trainer, the evaluation detector); nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CorruptFileError
from .files import atomic_path


def optimizer_tensors(optim: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as `optim.<param index>.<name>` tensors (hyper-parameters stay in code)."""
    out = {}
    for i, s in optim.state_dict()["state"].items():
        for k, v in s.items():
            out[f"optim.{i}.{k}"] = (v.detach().clone() if torch.is_tensor(v) else torch.tensor(v)).cpu()
    return out


def load_optimizer_tensors(optim: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Put back what `optimizer_tensors` took (other keys in `tensors` are ignored)."""
    sd = optim.state_dict()
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, k = key.split(".", 2)
            sd["state"].setdefault(int(i), {})[k] = value
    optim.load_state_dict(sd)


def save_state(path: Path, tensors: dict[str, torch.Tensor], kind: str, meta: dict) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"kind": kind, "meta": json.dumps(meta)})


def read_state(path: Path) -> tuple[str | None, dict, dict[str, torch.Tensor]]:
    """(kind, meta, tensors) of a state `save_state` wrote; the caller refuses a kind it did not write. A file that
    cannot be read as one (cut short, edited) is a CorruptFileError naming it, before any training step."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if "kind" not in header:
                return None, {}, {}
            meta = json.loads(header.get("meta", "{}"))
            return header["kind"], meta, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError, ValueError...)
        raise CorruptFileError(
            f"training state '{path}' cannot be read ({type(exc).__name__}: {exc}); remove it to start over"
        ) from exc
