"""The one map from the dtype and precision names used in manifests and configs to torch and numpy dtypes."""

from __future__ import annotations

import numpy as np
import torch

# Tensor dtypes as the manifest's IO specs name them (ONNX's names).
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64}

# Compute precisions as build settings and trainers name them.
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
