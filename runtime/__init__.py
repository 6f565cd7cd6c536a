"""Runtime: runs named compiled components on a backend and owns the engine-dir manifest; knows nothing of
AnomalyControl.

Layer contract: the bottom layer; imports no other part of this repository. Also home of the mechanisms every
layer shares: atomic files (`files`), the dtype map (`dtypes`), tool versions (`versions`), and the errors.
"""

from .engine import Engine, TorchEngine

__all__ = ["Engine", "TorchEngine"]
