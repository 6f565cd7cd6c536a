"""The downstream detector: DRAEM's discriminative U-Net (image in, 2-class map out) and its focal loss.

The protocol of AnomalyDiffusion, which AnomalyControl follows, trains this network on normal images plus
synthetic (image, mask) pairs and scores an image by the maximum of its average-pooled anomaly map. DRAEM's
version reads the image and its reconstruction (6 channels); with no reconstructive half, it reads the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Detector(nn.Module):
    """A U-Net of `levels` resolutions, widths base x (1, 2, 4, 8, 8, ...) as in DRAEM's discriminative net."""

    def __init__(self, base: int = 32, levels: int = 5):
        super().__init__()
        widths = [base * min(2**i, 8) for i in range(levels)]
        self.config = {"base": base, "levels": levels}
        self.down = nn.ModuleList(
            [_block(3, widths[0])] + [_block(a, b) for a, b in zip(widths, widths[1:], strict=False)]
        )
        self.up = nn.ModuleList([_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels - 1))])
        self.head = nn.Conv2d(widths[0], 2, 3, padding=1)

    @property
    def stride(self) -> int:
        """Image sides must be a multiple of this."""
        return 2 ** (len(self.down) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x 3 x H x W in [0, 1] -> N x 2 x H x W logits (channel 1: anomalous)."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def focal_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """DRAEM's focal loss over the 2-class map: mean of -(1 - p_t)^gamma log p_t, p_t the true class's prob."""
    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, mask.long().unsqueeze(1)).squeeze(1)
    return (-((1 - logp_t.exp()) ** gamma) * logp_t).mean()


def anomaly_maps(model: Detector, images: torch.Tensor) -> torch.Tensor:
    """N x H x W probabilities of "anomalous" per pixel."""
    return torch.softmax(model(images), dim=1)[:, 1]


def image_scores(maps: torch.Tensor, kernel: int) -> torch.Tensor:
    """Max of the average-pooled map (DRAEM: a 21-px box at 256 px; `kernel` scales with the image, odd).

    As DRAEM's `avg_pool2d(..., 21, stride=1, padding=10)`, the zero padding counts in the mean
    (`count_include_pad=True`, torch's default): a response at the border is averaged over the whole box."""
    pooled = F.avg_pool2d(maps.unsqueeze(1), kernel, stride=1, padding=kernel // 2, count_include_pad=True)
    return pooled.flatten(1).amax(1)


def pool_kernel(size: int) -> int:
    k = max(3, round(21 * size / 256))
    return k if k % 2 else k + 1
