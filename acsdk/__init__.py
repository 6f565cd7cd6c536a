"""acsdk: AnomalyControl inference — realistic, controllable defects for industrial inspection datasets."""

from .errors import (
    ACSDKError,
    BackendUnavailableError,
    CheckpointError,
    EngineDirError,
    IncompatibleEngineError,
    InputError,
    IntegrityError,
)
from .features import SemanticFeatures
from .synthesizer import SynthesisResult, Synthesizer

__version__ = "0.1.0"

__all__ = [
    "ACSDKError",
    "BackendUnavailableError",
    "CheckpointError",
    "EngineDirError",
    "IncompatibleEngineError",
    "InputError",
    "IntegrityError",
    "SemanticFeatures",
    "SynthesisResult",
    "Synthesizer",
    "__version__",
]
