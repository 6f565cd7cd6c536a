"""The backend-agnostic inpainting sampler: latents, strength, CFG, DDIM, all over named engines.

The same loop drives the torch reference and the compiled runtime; only the engines differ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from runtime import Engine

from . import imaging
from .schedules import stepper, visited_timesteps
from .settings import SamplingSettings

log = logging.getLogger(__name__)

# Components whose NaN/Inf output is caught and recomputed by an fp32 variant when the engine dir has one.
GUARDED = ("vae_encoder", "vae_decoder")


@dataclass(frozen=True)
class LatentGeometry:
    scale_factor: int  # pixels per latent pixel
    scaling_factor: float  # VAE latent scaling (0.18215 for SD-1.5)
    channels: int


def sample_latent(moments: torch.Tensor, generator: torch.Generator, scaling_factor: float) -> torch.Tensor:
    """Draw from the VAE's diagonal Gaussian with the run's generator (on CPU, so seeds agree across devices)."""
    mean, logvar = moments.float().chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
    return (mean + std * eps) * scaling_factor


class InpaintSampler:
    def __init__(
        self,
        engines: Mapping[str, Engine],
        scheduler_config: Mapping,
        geometry: LatentGeometry,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        done: Callable[[str], object] | None = None,
    ):
        """`done(name)` is told when a call no longer needs a component (a low-memory Synthesizer releases it)."""
        self.engines = engines
        self.done = done or (lambda name: None)
        self.scheduler_config = dict(scheduler_config)
        self.geometry = geometry
        self.device = device
        self.dtype = dtype

    def _guarded(self, name: str, inputs: Mapping[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
        """Run `name`; when it returns NaN/Inf and an fp32 variant was built beside it, run that instead.

        fp16 SD VAEs overflow on some inputs (both directions); the fp32 variant is exact where they do. It is
        opened the first time it is needed (`in` does not open it).
        """
        out = self.engines[name].run(inputs)
        variant = f"{name}_fp32"
        if variant in self.engines and not all(bool(torch.isfinite(v).all()) for v in out.values()):
            log.warning("%s produced NaN/Inf in fp16; running it again with the fp32 variant", name)
            notes.append(f"{name}_fp32_fallback")
            out = self.engines[variant].run(inputs)
        return out

    def __call__(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        text_embeds: torch.Tensor,
        semantic_tokens: torch.Tensor,
        *,
        seeds: list[int],
        sampling: SamplingSettings,
        timings: dict[str, float],
        notes: list[str] | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """n images [n,3,H,W] in [0,1] and masks [n,1,H,W] at model size -> generated images [n,3,H,W] in [0,1].

        With CFG, `text_embeds` and `semantic_tokens` hold the n unconditional rows first, then the n conditional
        ones. Item i draws all its randomness (VAE samples, initial noise) from its own generator seeded by
        `seeds[i]`, in the order a batch of one draws it: an item's result does not depend on its batch-mates.
        """
        g = self.geometry
        n = image.shape[0]
        notes = [] if notes is None else notes
        dev, dt = self.device, self.dtype
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        cfg = text_embeds.shape[0] == 2 * n
        timesteps = visited_timesteps(self.scheduler_config, sampling.num_inference_steps, sampling.strength)
        scheduler = stepper(sampling.sampler, self.scheduler_config, timesteps)  # per call: samplers hold state
        # With a CFG cut-off, only the first steps run both rows; the rest the conditional row alone (batch n).
        cfg_steps = len(timesteps) if sampling.cfg_cutoff is None else round(sampling.cfg_cutoff * len(timesteps))

        t0 = time.perf_counter()
        x = (image * 2.0 - 1.0).to(dev, dt)
        masked = x * (mask.to(dev, dt) < 0.5)
        both = self._guarded("vae_encoder", {"image": torch.cat([x, masked])}, notes)["latent_moments"].to(dev)
        sf = g.scaling_factor
        draws = [(sample_latent(both[i : i + 1], gen, sf), sample_latent(both[n + i : n + i + 1], gen, sf))
                 for i, gen in enumerate(generators)]  # fmt: skip
        image_latents = torch.cat([d[0] for d in draws])
        masked_latents = torch.cat([d[1] for d in draws])
        lat_h, lat_w = image_latents.shape[-2:]
        mask_latent = imaging.latent_mask(mask, (lat_h, lat_w)).to(dev)
        timings["vae_encode"] = timings.get("vae_encode", 0.0) + time.perf_counter() - t0
        self.done("vae_encoder")

        t0 = time.perf_counter()
        noise = torch.cat(
            [torch.randn((1, *image_latents.shape[1:]), generator=gen, dtype=torch.float32) for gen in generators]
        ).to(dev)
        if sampling.strength >= 1.0:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(image_latents, noise, timesteps[0])

        rows = 2 if cfg else 1
        c = g.channels
        # Buffers made once per call: each step writes into them instead of allocating a new UNet input.
        sample = torch.empty((rows * n, c + 1 + c, lat_h, lat_w), device=dev, dtype=dt)
        sample[:, c : c + 1] = mask_latent.to(dt).repeat(rows, 1, 1, 1)
        sample[:, c + 1 :] = masked_latents.to(dt).repeat(rows, 1, 1, 1)
        tstep = torch.empty((rows * n,), device=dev, dtype=torch.float32)
        text = text_embeds.to(dev, dt)
        sem = semantic_tokens.to(dev, dt)
        lam = torch.full((1,), float(sampling.semantic_scale), device=dev, dtype=dt)
        unet = self.engines["unet"]
        calls = 0.0
        for i, t in enumerate(tqdm(timesteps, desc="denoise", disable=not progress, leave=False)):
            both = cfg and i < cfg_steps
            first = 0 if both or not cfg else n  # after the cut-off: the conditional rows (the second n) alone
            sample[first:, :c] = scheduler.scale_model_input(latents, t).repeat(rows if both else 1, 1, 1, 1)
            tstep.fill_(t)
            noise_pred = (
                unet.run(
                    {
                        "sample": sample[first:],
                        "timestep": tstep[first:],
                        "text_embeds": text[first:],
                        "semantic_tokens": sem[first:],
                        "semantic_scale": lam,
                    }
                )["noise_pred"]
                .to(dev)
                .float()
            )  # an engine may run elsewhere (backend auto fell back to the CPU)
            calls += (2 if both else 1) * n
            if both:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + sampling.guidance_scale * (cond - uncond)
            latents = scheduler.step(noise_pred, t, latents)
        timings["denoise"] = timings.get("denoise", 0.0) + time.perf_counter() - t0
        timings["denoise_steps"] = float(len(timesteps))
        timings["unet_rows"] = timings.get("unet_rows", 0.0) + calls
        del unet
        self.done("unet")

        t0 = time.perf_counter()
        scaled = (latents / g.scaling_factor).to(dt)
        decoded = self._guarded("vae_decoder", {"latents": scaled}, notes)["image"]
        timings["vae_decode"] = timings.get("vae_decode", 0.0) + time.perf_counter() - t0
        self.done("vae_decoder")
        return ((decoded.float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu()
