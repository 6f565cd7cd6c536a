"""Semantic features of a defect reference: computed once (CSM + ASEA), reused for many images."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from runtime.files import atomic_path

from ..errors import InputError

_KIND = "acsdk-semantic-features"


@dataclass
class SemanticFeatures:
    """F_c [1, T, D] for the SGA UNet, plus what ASEA reported while making it."""

    tokens: torch.Tensor
    asea: dict = field(default_factory=dict)
    prompt: str = ""

    def save(self, path: str | os.PathLike) -> Path:
        dest = Path(path)
        meta = {"kind": _KIND, "asea": json.dumps(self.asea), "prompt": self.prompt}
        with atomic_path(dest) as tmp:
            save_file({"tokens": self.tokens.detach().float().contiguous().cpu()}, str(tmp), metadata=meta)
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike) -> SemanticFeatures:
        src = Path(path)
        if not src.is_file():
            raise InputError("path", "a semantic-features .safetensors file", f"'{src}', which does not exist")
        try:
            from safetensors import safe_open

            with safe_open(str(src), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(src))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError("path", "a semantic-features .safetensors file", f"'{src}' ({exc})") from exc
        if meta.get("kind") != _KIND or "tokens" not in tensors:
            raise InputError("path", "a file written by SemanticFeatures.save", f"'{src}' of another kind")
        return cls(tokens=tensors["tokens"], asea=json.loads(meta.get("asea", "{}")), prompt=meta.get("prompt", ""))
