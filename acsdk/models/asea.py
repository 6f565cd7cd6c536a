"""ASEA: test-time optimisation of a per-reference offset e_g on the image tokens.

The energy E = alpha * (1 - r)^2 penalises Q-Former attention mass outside the defect, where
r = sum(A * M) / sum(A) over the attention grid. Only e_g gets gradients; every weight stays frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import InputError
from .csm import QFormer, query_to_image_attention


@dataclass
class ASEAResult:
    image_tokens: torch.Tensor  # e_v + e_g, detached
    r_before: float
    r_after: float
    energy_before: float
    energy_after: float
    steps: int
    r_history: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "r_before": self.r_before,
            "r_after": self.r_after,
            "energy_before": self.energy_before,
            "energy_after": self.energy_after,
            "steps": self.steps,
        }


def in_mask_ratio(attention: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """r = sum(A * M) / sum(A) per batch item; `region` is the mask's coverage of each grid cell."""
    return (attention * region).sum(dim=(-2, -1)) / attention.sum(dim=(-2, -1))


def run_asea(
    qformer: QFormer,
    image_tokens: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    region: torch.Tensor,
    steps: int = 5,
    lr: float = 0.1,
    alpha: float = 1.0,
) -> ASEAResult:
    """Optimise e_g for `steps` Adam steps and measure r with one more forward on the final e_g.

    The authors return the Q-Former output of the last optimisation step, i.e. before that step's
    update; we evaluate the final e_g instead, so r_after describes the tokens actually used.
    """
    grid = tuple(region.shape[-2:])
    history: list[float] = []
    if any(p.requires_grad for p in qformer.parameters()):
        # Toggling shared weights here would race with other threads; the loader freezes them once.
        raise InputError("qformer", "a frozen Q-Former (call requires_grad_(False) on it first)", "trainable weights")
    with torch.inference_mode(False), torch.enable_grad():
        # Clones: tensors made under inference_mode cannot take part in autograd.
        e_v = image_tokens.detach().clone()
        region = region.to(device=e_v.device, dtype=torch.float32).clone()
        e_g = torch.zeros_like(e_v, requires_grad=True)
        optim = torch.optim.Adam([e_g], lr=lr)
        for _ in range(steps):
            _, maps = qformer(e_v + e_g, input_ids, attention_mask, output_attentions=True)
            r = in_mask_ratio(query_to_image_attention(maps, grid), region).mean()
            energy = alpha * (1.0 - r) ** 2
            history.append(float(r.detach()))
            optim.zero_grad(set_to_none=True)
            energy.backward()
            optim.step()
    with torch.no_grad():
        tokens = (e_v + e_g).detach()
        _, maps = qformer(tokens, input_ids, attention_mask, output_attentions=True)
        r_final = float(in_mask_ratio(query_to_image_attention(maps, grid), region).mean())
    r_first = history[0] if history else r_final
    return ASEAResult(
        image_tokens=tokens,
        r_before=r_first,
        r_after=r_final,
        energy_before=alpha * (1.0 - r_first) ** 2,
        energy_after=alpha * (1.0 - r_final) ** 2,
        steps=steps,
        r_history=history + [r_final],
    )
