"""The parts of TensorRT's Python API that differ between the majors acsdk supports, for the tests' fakes.

TensorRT 10 (JetPack 6, pip's 10.x): weak typing still exists (BuilderFlag.FP16/INT8/BF16/FP8 and the precision
constraints), strong typing is opt-in through NetworkDefinitionCreationFlag.STRONGLY_TYPED = 1 (bit 0 is the
deprecated EXPLICIT_BATCH). TensorRT 11 (pip's default today, JetPack 7.2.2+): every precision flag is gone and
the creation flag sits at another bit. A fake built from a generation here fails the way the real one would if
the builder reached for a removed name.
"""

from __future__ import annotations

import types

GENERATIONS = {
    "10.3.0": {
        "BuilderFlag": ("FP16", "BF16", "INT8", "FP8", "TF32", "OBEY_PRECISION_CONSTRAINTS",
                        "PREFER_PRECISION_CONSTRAINTS"),
        "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
    },
    "11.4.0": {
        "BuilderFlag": ("TF32",),
        "NetworkDefinitionCreationFlag": {"STRONGLY_TYPED": 0},
    },
}  # fmt: skip
PRECISION_FLAGS = {"FP16", "BF16", "INT8", "FP8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"}


def api(version: str) -> dict[str, types.SimpleNamespace]:
    """BuilderFlag and NetworkDefinitionCreationFlag as TensorRT `version`'s major has them (flags are their names)."""
    major = version.split(".")[0]
    generation = next(v for k, v in GENERATIONS.items() if k.split(".")[0] == major)
    return {
        "BuilderFlag": types.SimpleNamespace(**{f: f for f in generation["BuilderFlag"]}),
        "NetworkDefinitionCreationFlag": types.SimpleNamespace(**generation["NetworkDefinitionCreationFlag"]),
    }


def strongly_typed_bits(version: str) -> int:
    """The create_network() argument that asks `version` for a strongly typed network."""
    return 1 << api(version)["NetworkDefinitionCreationFlag"].STRONGLY_TYPED
