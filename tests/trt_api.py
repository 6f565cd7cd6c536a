"""The parts of TensorRT's Python API that differ between the majors acsdk supports, for the tests' fakes.

TensorRT 10 (JetPack 6, pip's 10.x): weak typing still exists (BuilderFlag.FP16/INT8/BF16/FP8 and the precision
constraints), strong typing is opt-in through NetworkDefinitionCreationFlag.STRONGLY_TYPED = 1 (bit 0 is the
deprecated EXPLICIT_BATCH). TensorRT 11 (pip's default today, JetPack 7.2.2+): every precision flag is gone and
the creation flag sits at another bit. A fake built from a generation here fails the way the real one would if
the builder reached for a removed name.
"""

from __future__ import annotations

import types

import onnx

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


def fake_builder(log: dict, build_fails: bool = False, version: str = "10.3.0") -> types.ModuleType:
    """A `tensorrt` module of `version`'s API generation up to the builder: it parses the real ONNX file's inputs,
    records the profiles, flags and network creation flags it is given in `log` (see `builder_calls`), and returns
    plan bytes that no GPU could run. Used by the tests and by `benchmarks.realsize`'s real-size `--from-onnx` row."""

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        inputs: list = []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class Parser:
        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            log["parsed"].append(path)
            graph = onnx.load(path, load_external_data=False).graph
            dims = lambda t: tuple(d.dim_value if d.dim_value else -1 for d in t.type.tensor_type.shape.dim)  # noqa: E731
            self.network.inputs = [Tensor(i.name, dims(i)) for i in graph.input]
            return True

        num_errors = 0

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            log["shapes"].setdefault(log["parsed"][-1], {})[name] = (list(lo), list(opt), list(hi))

    class Config:
        def set_flag(self, flag):
            log["flags"].setdefault(log["parsed"][-1], set()).add(flag)

        def clear_flag(self, flag):
            pass

        def add_optimization_profile(self, profile):
            return 0

        def create_timing_cache(self, data):
            return types.SimpleNamespace(serialize=lambda: b"cache")

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"cache")

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log["network_flags"].append(flags)
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return None if build_fails else b"plan bytes"

    return types.SimpleNamespace(
        __version__=version,  # JetPack's TensorRT says 10.3.0 of itself and has no pip metadata
        Logger=type("Logger", (), {"WARNING": 1, "__init__": lambda self, level: None}),
        Builder=Builder,
        OnnxParser=Parser,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        **api(version),
    )


def builder_calls() -> dict:
    return {"parsed": [], "shapes": {}, "flags": {}, "verified": [], "network_flags": []}
