"""The six components of an engine dir as torch modules with engine-shaped IO.

Each wrapper's `forward` arguments are the component's input names and `output_names` its outputs:
the reference pipeline calls them through `runtime.TorchEngine`, and export traces exactly these
modules, so the torch reference and the compiled engines share one definition of every interface.
"""

from __future__ import annotations

import torch
from torch import nn

from .csm import QFormer, SemanticProjection


class TextEncoder(nn.Module):
    output_names = ("text_embeds",)

    def __init__(self, text_encoder: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids=input_ids, return_dict=True).last_hidden_state


class CSMVision(nn.Module):
    """ViT + ln_vision: e_v for a reference image."""

    output_names = ("image_tokens",)

    def __init__(self, vision_model: nn.Module):
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values=pixel_values, return_dict=True).last_hidden_state


class CSMQFormer(nn.Module):
    """Q-Former on e_v + e_g, mean over queries, BlipProj, ImageProj: the semantic tokens F_c."""

    output_names = ("semantic_tokens",)

    def __init__(self, qformer: QFormer, projection: SemanticProjection):
        super().__init__()
        self.qformer = qformer
        self.projection = projection

    def forward(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        query_out, _ = self.qformer(image_tokens, input_ids, attention_mask)
        return self.projection(query_out.mean(dim=1))


class SGAUNet(nn.Module):
    """The SGA-patched 9-channel UNet; context is [text ; semantic], lambda a tensor input."""

    output_names = ("noise_pred",)

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        text_embeds: torch.Tensor,
        semantic_tokens: torch.Tensor,
        semantic_scale: torch.Tensor,
    ) -> torch.Tensor:
        context = torch.cat([text_embeds, semantic_tokens.to(text_embeds.dtype)], dim=1)
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states=context,
            cross_attention_kwargs={"semantic_scale": semantic_scale},
            return_dict=False,
        )[0]


class VAEEncoder(nn.Module):
    """Image in [-1, 1] -> the latent distribution's moments (mean, logvar); sampling happens outside."""

    output_names = ("latent_moments",)

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        moments = self.encoder(image)
        return self.quant_conv(moments) if self.quant_conv is not None else moments


class VAEDecoder(nn.Module):
    """Unscaled latents -> image in [-1, 1]."""

    output_names = ("image",)

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.decoder = vae.decoder
        self.post_quant_conv = vae.post_quant_conv

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)


COMPONENT_NAMES = ("text_encoder", "csm_vision", "csm_qformer", "unet", "vae_encoder", "vae_decoder")
