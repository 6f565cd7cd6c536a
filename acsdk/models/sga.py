"""SGA: the Semantic Guided Adapter, a decoupled cross-attention processor for every attn2 of a UNet.

    Z' = softmax(Q K_t^T / sqrt(d)) V_t + lambda * softmax(Q K_c^T / sqrt(d)) V_c

The context handed to attn2 is [text tokens ; semantic tokens]; the last `num_tokens` rows are the
semantic ones. lambda (`semantic_scale`) is a tensor so an exported graph takes it as an input.
Like diffusers' attention processors, a processor owns only its new weights (to_k_ip, to_v_ip).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from ..errors import InputError


class SGAAttnProcessor(nn.Module):
    def __init__(self, hidden_size: int, cross_attention_dim: int, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        semantic_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise InputError("encoder_hidden_states", "the [text ; semantic] context of a cross-attention", "None")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        text = encoder_hidden_states[:, : -self.num_tokens]
        semantic = encoder_hidden_states[:, -self.num_tokens :]
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)

        heads = attn.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        query = split(attn.to_q(hidden_states))
        out_text = F.scaled_dot_product_attention(query, split(attn.to_k(text)), split(attn.to_v(text)))
        out_sem = F.scaled_dot_product_attention(query, split(self.to_k_ip(semantic)), split(self.to_v_ip(semantic)))
        if semantic_scale is None:
            semantic_scale = torch.ones((), dtype=out_sem.dtype, device=out_sem.device)
        scale = semantic_scale.to(out_sem.dtype).reshape(-1, 1, 1, 1)
        hidden_states = out_text + scale * out_sem
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, heads * query.shape[-1])

        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class SelfAttnProcessor(AttnProcessor2_0):
    """diffusers' self-attention, declaring `semantic_scale` so the shared kwargs pass it silently.

    Why it exists: lambda must be a per-call tensor (a graph input of the exported UNet, different per thread), and
    `cross_attention_kwargs` is diffusers' only per-call route into processors. Every transformer block hands the
    same kwargs to attn1 and attn2, and `Attention.forward` logs a warning on every call for a keyword its processor
    does not declare (16 layers x 35 steps per image). The alternatives are worse: lambda as a processor attribute
    is shared state (not thread-safe, not a graph input), and smuggling it through `encoder_hidden_states` hides
    the method's one scalar in a tensor layout.
    """

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, semantic_scale=None
    ):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def is_cross_attention(name: str) -> bool:
    return name.endswith("attn2.processor")


def install_sga(unet: nn.Module, num_tokens: int) -> nn.ModuleDict:
    """Give every attn2 of `unet` an SGA processor (in place, on a model acsdk owns); return them by name.

    Sizes come from each layer: hidden size from its to_k, context width from the UNet config.
    """
    cross_dim = unet.config.cross_attention_dim
    procs: dict[str, nn.Module] = {}
    sga: dict[str, SGAAttnProcessor] = {}
    for name, _ in unet.attn_processors.items():
        module = unet.get_submodule(name.rsplit(".processor", 1)[0])
        if is_cross_attention(name):
            hidden = module.to_k.out_features
            proc = SGAAttnProcessor(hidden, cross_dim, num_tokens)
            proc.to(device=module.to_k.weight.device, dtype=module.to_k.weight.dtype)
            procs[name] = proc
            sga[name] = proc
        else:
            procs[name] = SelfAttnProcessor()
    unet.set_attn_processor(procs)
    return nn.ModuleDict({_key(n): p for n, p in sga.items()})


def _key(processor_name: str) -> str:
    # ModuleDict keys may not contain dots.
    return processor_name.removesuffix(".processor").replace(".", "_")


def sga_processors(unet: nn.Module) -> dict[str, SGAAttnProcessor]:
    return {n: p for n, p in unet.attn_processors.items() if isinstance(p, SGAAttnProcessor)}
