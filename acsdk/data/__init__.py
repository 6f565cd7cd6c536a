"""Datasets: MVTec-AD-shaped data in, synthetic (image, mask) training sets out."""

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
