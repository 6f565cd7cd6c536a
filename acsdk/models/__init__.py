"""The model: AnomalyControl's torch modules (CSM, ASEA, SGA), the checkpoint format and its importers, and the
architecture presets.

Layer contract: imports `acsdk.errors` and `runtime` only; every other layer builds on it.
"""

from .asea import ASEAResult, run_asea
from .checkpoint import AnomalyControlModel
from .config import ModelConfig
from .sga import SGAAttnProcessor, install_sga

__all__ = ["ASEAResult", "AnomalyControlModel", "ModelConfig", "SGAAttnProcessor", "install_sga", "run_asea"]
