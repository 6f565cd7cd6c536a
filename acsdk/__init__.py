"""acsdk: AnomalyControl inference — realistic, controllable defects for industrial inspection datasets."""

from .errors import (
    ACSDKError,
    BackendUnavailableError,
    CheckpointError,
    EngineDirError,
    EngineRunError,
    IncompatibleEngineError,
    InputError,
    IntegrityError,
    TrainingError,
)
from .inference.features import SemanticFeatures
from .inference.synthesizer import SynthesisResult, Synthesizer
from .version import __version__

__all__ = [
    "ACSDKError",
    "BackendUnavailableError",
    "CheckpointError",
    "EngineDirError",
    "EngineRunError",
    "IncompatibleEngineError",
    "InputError",
    "IntegrityError",
    "SemanticFeatures",
    "SynthesisResult",
    "Synthesizer",
    "TrainingError",
    "__version__",
]
