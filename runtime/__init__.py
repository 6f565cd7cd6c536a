"""Runs named compiled components on a backend; knows nothing of AnomalyControl."""

from .engine import Engine, TorchEngine

__all__ = ["Engine", "TorchEngine"]
