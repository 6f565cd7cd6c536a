"""Inception-v3 as ported from TensorFlow's 2015-12-05 graph, for the Inception Score, in plain torch.

This is the network pytorch-fid and torch-fidelity use (weights `pt_inception-2015-12-05-6726825d.pth`, the same
tensors torch-fidelity ships as `weights-inception-2015-12-05-6726825d.pth`): 1008-way logits, and the TF-port
blocks -- the 3x3 average pools of the A, C and first E blocks leave the zero padding out of the mean
(`count_include_pad=False`), and the last E block max-pools there. torchvision is not used (it does not import here).
Input path as torch-fidelity's (and the original TF graph's): 8-bit pixel values 0..255, resized to 299x299 with
TensorFlow 1.x's bilinear rule (`resize_like_tf1`: source coordinate = output index x in/out, no half-pixel offset,
which torch's `interpolate` does not reproduce), then mapped by (x - 128) / 128. Checked against a vector
torch-fidelity 0.4.0 computed (tests/data).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import rel_entr
from torch import nn

from ..errors import InputError
from .lpips import check_state_dict, read_state_dict

log = logging.getLogger(__name__)

INPUT_SIZE = 299
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
NEEDS = (
    f"the TF-ported Inception-v3 weights '{WEIGHTS_FILE}' (pytorch-fid's release 'fid_weights' on GitHub, "
    "mseitzer/pytorch-fid; torch-fidelity's 'weights-inception-2015-12-05-6726825d.pth' holds the same keys), "
    "or a .safetensors conversion with the same keys"
)


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, TF's) -> ReLU; keys `<name>.conv.*`, `<name>.bn.*`."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf1_axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower and upper source index and the upper one's weight for each output index, in float32 as TF computes."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = torch.arange(n_out, dtype=torch.float32) * scale
    lo = torch.floor(src).long().clamp(max=n_in - 1)
    return lo, (lo + 1).clamp(max=n_in - 1), src - lo.float()


def resize_like_tf1(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """N x C x H x W float -> N x C x height x width by TensorFlow 1.x's `resize_bilinear(align_corners=False)`:
    interpolate along the width (top and bottom rows), then between them along the height."""
    y0, y1, wy = _tf1_axis(x.shape[-2], height)
    x0, x1, wx = _tf1_axis(x.shape[-1], width)
    top, bottom = x[..., y0, :], x[..., y1, :]
    top = top[..., x0] + (top[..., x1] - top[..., x0]) * wx
    bottom = bottom[..., x0] + (bottom[..., x1] - bottom[..., x0]) * wx
    return top + (bottom - top) * wy[:, None]


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """`max_pool=False`: Mixed_7b (TF average pool); `max_pool=True`: Mixed_7c, which max-pools in the TF graph."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class InceptionV3(nn.Module):
    """The 2015-12-05 TF Inception-v3; module names follow the weight file's keys. Random-initialised as built."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)
        self.eval().requires_grad_(False)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """The 2048-d pooled features of images `x` (N x 3 x H x W, 8-bit values 0..255, any size)."""
        x = resize_like_tf1(x.float(), INPUT_SIZE, INPUT_SIZE)
        x = (x - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor, with_bias: bool = False) -> torch.Tensor:
        """N x 1008 logits. Without the fc bias by default: the IS convention of the original TF code (it multiplies
        pool3 by the softmax's weight matrix only) and torch-fidelity's `logits_unbiased`."""
        logits = self.pool3(x) @ self.fc.weight.T
        return logits + self.fc.bias if with_bias else logits


def state_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes the weight file must hold (BatchNorm's `num_batches_tracked` is optional: old files lack it)."""
    return {k: tuple(v.shape) for k, v in InceptionV3().state_dict().items() if not k.endswith("num_batches_tracked")}


def load_inception(path: str | os.PathLike, device: str | torch.device = "cpu") -> InceptionV3:
    """The network from the standard weight file, checked key by key (first missing or mis-shaped key named)."""
    if path is None or not Path(path).is_file():
        raise InputError("inception_weights", NEEDS, f"'{path}', which is not a file")
    what = f"the TF-ported Inception-v3 ({WEIGHTS_FILE})"
    state = read_state_dict(path, "inception_weights", what)
    shapes = state_shapes()
    check_state_dict(state, shapes, "inception_weights", path, what)
    extra = [k for k in state if k not in shapes and not k.endswith("num_batches_tracked")]
    if extra:
        log.info("ignoring %d keys of %s not in the network (e.g. %s)", len(extra), path, extra[0])
    net = InceptionV3()
    net.load_state_dict({k: state[k].float() for k in shapes}, strict=False)
    return net.to(device)


def inception_score(probs: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `splits` contiguous chunks of exp(mean_x KL(p(y|x) || p(y))), p(y) the chunk's mean.

    `probs`: N x C class probabilities, here the softmax over all 1008 logits (nothing dropped, as torch-fidelity;
    the 1008 include TF's background and unused classes). Chunk i is rows [i*N//splits, (i+1)*N//splits), as in the
    original code and torch-fidelity; shuffle before calling if the row order is not random. float64 throughout;
    0 * log 0 counts as 0. `splits` is lowered to N when N is smaller.
    """
    p = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise InputError("probs", "an N x C array of class probabilities, N >= 1", f"shape {p.shape}")
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise InputError("probs", "rows of non-negative probabilities summing to 1", "other values")
    if splits < 1:
        raise InputError("splits", "a positive number of splits", str(splits))
    n = len(p)
    splits = min(splits, n)
    scores = []
    for i in range(splits):
        chunk = p[i * n // splits : (i + 1) * n // splits]
        marginal = chunk.mean(axis=0, keepdims=True)
        scores.append(float(np.exp(rel_entr(chunk, marginal).sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))
