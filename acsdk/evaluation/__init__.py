"""Evaluation: does a synthetic set help? The downstream detector protocol with baselines, and generation metrics.

Layer contract: imports `acsdk.data`, `acsdk.errors` and `runtime`; never `acsdk.inference` directly, `acsdk.training`,
`acsdk.apps` or `export`. Entry points: `acsdk evaluate downstream` and `acsdk evaluate generation`.
"""

from .downstream import DownstreamSettings, evaluate_downstream
from .metrics import au_pro, binary_metrics, detection_metrics

__all__ = ["DownstreamSettings", "au_pro", "binary_metrics", "detection_metrics", "evaluate_downstream"]
