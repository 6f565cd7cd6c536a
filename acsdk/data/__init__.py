"""Data: the MVTec reader, target masks, procedural data, prompts, and generation of synthetic training sets.

Layer contract: imports `acsdk.inference`, `acsdk.models`, `acsdk.errors` and `runtime`; never `acsdk.training`,
`acsdk.apps` or `export`. Only the generate modules (`generate`, `runs`, `generate_ray`) reach into inference; the
readers stand alone. Ray is imported only by `generate_ray`, and only when a run asks for it.
"""

from .masks import estimate_foreground, sample_target_mask
from .mvtec import MVTecCategory, load_category
from .procedural import make_mvtec_like
from .prompts import PromptSource

__all__ = [
    "MVTecCategory",
    "PromptSource",
    "estimate_foreground",
    "load_category",
    "make_mvtec_like",
    "sample_target_mask",
]
