"""CSM: cross-modal semantic modeling with BLIP-2 stage-1 parts from transformers.

The vision tower with ln_vision is transformers' `Blip2VisionModel` (its `post_layernorm` is ln_vision);
the multimodal Q-Former is the `query_tokens` + `embeddings` + `qformer` of `Blip2ForImageTextRetrieval`
(queries and text share self-attention, only queries cross-attend to the image). The trained part is
`SemanticProjection`: BlipProj and IP-Adapter's ImageProj.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2QFormerModel
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from ..errors import InputError


class ImageProj(nn.Module):
    """IP-Adapter's image projection (`proj`, `norm` keys, so ip-adapter weights load unchanged)."""

    def __init__(self, in_dim: int, cross_attention_dim: int, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.cross_attention_dim = cross_attention_dim
        self.proj = nn.Linear(in_dim, num_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).reshape(-1, self.num_tokens, self.cross_attention_dim)
        return self.norm(x)


class SemanticProjection(nn.Module):
    """f (mean of the Q-Former's query outputs) -> BlipProj -> ImageProj -> F_c [B, T, D]."""

    def __init__(self, qformer_dim: int, blip_proj_dim: int, cross_attention_dim: int, num_tokens: int):
        super().__init__()
        self.blip_proj = nn.Linear(qformer_dim, blip_proj_dim)
        self.image_proj = ImageProj(blip_proj_dim, cross_attention_dim, num_tokens)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.image_proj(self.blip_proj(pooled))

    def unconditional(self) -> torch.Tensor:
        """F_c of the CFG branch: the projection of a zero feature, [1, T, D]."""
        zero = torch.zeros(
            1, self.blip_proj.in_features, dtype=self.blip_proj.weight.dtype, device=self.blip_proj.weight.device
        )
        return self(zero)


class QFormer(nn.Module):
    """Multimodal Q-Former over image tokens (e_v + e_g); returns query outputs and cross-attention maps."""

    def __init__(self, query_tokens: nn.Parameter, embeddings: nn.Module, qformer: nn.Module):
        super().__init__()
        self.query_tokens = query_tokens
        self.embeddings = embeddings
        self.qformer = qformer

    @classmethod
    def from_blip2(cls, blip2: Blip2ForImageTextRetrieval) -> QFormer:
        """Share the parts of a loaded BLIP-2 model."""
        return cls(blip2.query_tokens, blip2.embeddings, blip2.qformer)

    @classmethod
    def from_config(cls, config: Blip2Config) -> QFormer:
        """Uninitialised parts, without the vision tower, to load an engine dir's ASEA weights into."""
        qcfg = config.qformer_config
        return cls(
            nn.Parameter(torch.zeros(1, config.num_query_tokens, qcfg.hidden_size)),
            Blip2TextEmbeddings(qcfg),
            Blip2QFormerModel._from_config(qcfg, attn_implementation="eager"),
        )

    def forward(
        self,
        image_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        batch = image_tokens.shape[0]
        queries = self.query_tokens.expand(batch, -1, -1)
        embeds = self.embeddings(input_ids=input_ids, query_embeds=queries)
        query_mask = torch.ones(queries.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        out = self.qformer(
            query_embeds=embeds,
            query_length=queries.shape[1],
            attention_mask=torch.cat([query_mask, attention_mask], dim=1),
            encoder_hidden_states=image_tokens,
            output_attentions=output_attentions,
            return_dict=True,
        )
        query_out = out.last_hidden_state[:, : queries.shape[1]]
        return query_out, (out.cross_attentions or ()) if output_attentions else ()


def query_to_image_attention(cross_attentions: tuple[torch.Tensor, ...], grid: tuple[int, int]) -> torch.Tensor:
    """Mean over cross-attention layers, heads and queries of query->image probabilities, CLS dropped: [B, gh, gw]."""
    if not cross_attentions:
        raise InputError(
            "cross_attentions", "the Q-Former's attention maps (BLIP-2 loaded with eager attention)", "none"
        )
    stacked = torch.stack([a.float() for a in cross_attentions])  # [L, B, heads, Q, N]
    mean = stacked.mean(dim=(0, 2, 3))  # [B, N]
    patches = mean[:, 1:]
    return patches.reshape(patches.shape[0], *grid)
