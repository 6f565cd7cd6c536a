"""A prepared defect type: what the target side of AnomalyControl needs, computed once on the reference side.

The production pattern is fixed prompts and references per defect type and many targets. The reference side
(text encoder, CSM + ASEA, which needs autograd) runs once in Python; a bank holds its outputs for the denoising
loop, so a runtime without Python (the native runtime) runs only VAE encode -> DDIM with CFG -> VAE decode:

    BANK/bank.safetensors   text_embeds [2, L, D] (negative prompt, prompt), semantic_tokens [2, T, D]
                            (unconditional, the reference's or unconditional), float32
    BANK/bank.json          schema, the prompts and reference it was made from, ASEA's report, the engine dir's
                            manifest sha256 (a bank belongs to one engine dir) and the sha256 of bank.safetensors
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from runtime.errors import IntegrityError
from runtime.files import atomic_dir, sha256_file

from ..errors import InputError

SCHEMA = "acsdk.bank/1"
TENSORS = "bank.safetensors"
INFO = "bank.json"


@dataclass
class Bank:
    text_embeds: torch.Tensor  # [2, L, D]: negative prompt, prompt
    semantic_tokens: torch.Tensor  # [2, T, D]: unconditional, reference
    info: dict = field(default_factory=dict)  # prompts, reference, ASEA, engine manifest sha256

    def save(self, dest: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the bank directory atomically (a half-written bank never exists)."""
        dest = Path(dest)
        if dest.exists() and not overwrite:
            raise InputError("out", "a new bank directory (or overwrite=True)", f"'{dest}', which exists")
        with atomic_dir(dest, replace=overwrite) as tmp:
            tensors = {
                "text_embeds": self.text_embeds.detach().float().contiguous().cpu(),
                "semantic_tokens": self.semantic_tokens.detach().float().contiguous().cpu(),
            }
            save_file(tensors, str(tmp / TENSORS))
            body = {"schema": SCHEMA, **self.info, "tensors_sha256": sha256_file(tmp / TENSORS)}
            (tmp / INFO).write_text(json.dumps(body, indent=2))
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike, engine_manifest_sha256: str | None = None) -> Bank:
        """Read and check a bank: schema, the tensors' sha256, and (given one) the engine dir it belongs to."""
        root = Path(path)
        if not (root / INFO).is_file() or not (root / TENSORS).is_file():
            raise InputError("bank", f"a directory written by `acsdk prepare` ({INFO}, {TENSORS})", f"'{root}'")
        try:
            info = json.loads((root / INFO).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError("bank", f"a readable {INFO}", f"'{root / INFO}': {e}") from None
        if not isinstance(info, dict):  # JSON, but not what `prepare` writes
            raise InputError(
                "bank", f"a {INFO} holding a JSON object", f"'{root / INFO}': a JSON {type(info).__name__}"
            )
        if info.get("schema") != SCHEMA:
            raise InputError("bank", f"schema {SCHEMA}", repr(info.get("schema")))
        if sha256_file(root / TENSORS) != info.get("tensors_sha256"):
            raise IntegrityError(f"bank '{root}': {TENSORS} differs from the sha256 recorded in {INFO}")
        _check_engine(info, engine_manifest_sha256)
        try:
            tensors = load_file(str(root / TENSORS))
        except (SafetensorError, OSError) as e:
            raise InputError("bank", f"a readable {TENSORS}", f"'{root / TENSORS}': {e}") from None
        body = {k: v for k, v in info.items() if k not in ("schema", "tensors_sha256")}
        return cls(tensors["text_embeds"], tensors["semantic_tokens"], body)

    def check_engine(self, engine_manifest_sha256: str | None) -> None:
        """InputError naming `bank` unless it was prepared for the engine dir with that manifest digest."""
        _check_engine(self.info, engine_manifest_sha256)


def _check_engine(info: dict, engine_manifest_sha256: str | None) -> None:
    if engine_manifest_sha256 is not None and info.get("engine_manifest_sha256") != engine_manifest_sha256:
        raise InputError(
            "bank",
            f"a bank prepared for this engine dir (manifest sha256 {engine_manifest_sha256[:16]}...)",
            f"one prepared for {str(info.get('engine_manifest_sha256'))[:16]}...",
        )
