"""The torch modules of AnomalyControl: CSM, ASEA, SGA, and the checkpoint that holds them."""

from .asea import ASEAResult, run_asea
from .checkpoint import AnomalyControlModel
from .config import ModelConfig
from .sga import SGAAttnProcessor, install_sga

__all__ = ["ASEAResult", "AnomalyControlModel", "ModelConfig", "SGAAttnProcessor", "install_sga", "run_asea"]
