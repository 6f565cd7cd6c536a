"""acsdk: AnomalyControl inference — realistic, controllable defects for industrial inspection datasets."""

from .errors import ACSDKError, CheckpointError, InputError
from .features import SemanticFeatures
from .synthesizer import SynthesisResult, Synthesizer

__version__ = "0.1.0"

__all__ = [
    "ACSDKError",
    "CheckpointError",
    "InputError",
    "SemanticFeatures",
    "SynthesisResult",
    "Synthesizer",
    "__version__",
]
