"""One small engine interface: named tensors in, named tensors out."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .errors import EngineIOError


class Engine(ABC):
    """A compiled (or eager) component. Implementations must be safe to call from several threads."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    backend: str
    precision: str = "fp32"  # what it actually runs at (set by whoever opens it)

    @abstractmethod
    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


class TorchEngine(Engine):
    """Eager torch: the reference, and the fallback for a component without a compiled engine."""

    backend = "torch"

    def __init__(self, name: str, module: nn.Module, output_names: Sequence[str] | None = None):
        self.name = name
        self.module = module.eval()
        params = inspect.signature(module.forward).parameters
        self.input_names = tuple(params)
        self.output_names = tuple(output_names or module.output_names)

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EngineIOError(f"engine '{self.name}' needs inputs {missing}, got {sorted(inputs)}")
        with torch.no_grad():
            out = self.module(**{n: inputs[n] for n in self.input_names})
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(self.output_names, outs, strict=True))
