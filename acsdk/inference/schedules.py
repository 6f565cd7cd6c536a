"""Which timesteps a run visits and the samplers that step between them.

Every sampler and step count starts where the paper's setting starts (DDIM, 50 steps, at the run's strength: t = 681
at 0.7) and spreads `int(steps x strength)` UNet calls over [that start, the schedule's last timestep], so fewer
calls never also means less noise. At 50 steps the visited timesteps are exactly diffusers' DDIM ones, and DDIM's
output is unchanged byte for byte.

Samplers: "ddim" (eta 0, the paper's) stepping to the next listed timestep with diffusers' DDIM arithmetic;
"dpmpp-2m", diffusers' DPMSolverMultistepScheduler (DPM-Solver++, second order) on the same explicit timesteps.
Both end where DDIM ends, so that every sampler converges to one solution (what `acsdk tune` compares them with):
DDIM's last step goes to `final_alpha_cumprod`, alphas_cumprod[0] under SD's `set_alpha_to_one=False` (sigma 0.029),
1 under `True`; DPM-Solver++ gets `final_sigmas_type="sigma_min"` (diffusers: its last sigma is
sqrt((1 - alphas_cumprod[0]) / alphas_cumprod[0]), the same alpha) or "zero" to match, whatever the engine dir's
config says. Ending at sigma 0 instead (diffusers' default "zero"), DPM-Solver++ at 350 calls was 0.25 and 0.37 grey
levels inside the mask from DDIM on the demo and tiny models; with DDIM's end 0.04 and 0.26 (`python -m
benchmarks.samplers`).
UniPC is not offered: diffusers 0.42's UniPCMultistepScheduler takes explicit sigmas only for flow-matching models
and no explicit timesteps, so it cannot start at the paper's start point without reaching into its private state.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from ..errors import EngineDirError, InputError

SAMPLERS = ("ddim", "dpmpp-2m")
REFERENCE_STEPS = 50  # the paper's DDIM step count: its start timestep at a strength is every run's


def visited_timesteps(config: Mapping, steps: int, strength: float) -> list[int]:
    """The `int(steps x strength)` timesteps a run visits, from DDIM-50's start at `strength` to its last one."""
    ddim = DDIMScheduler.from_config(dict(config))
    ddim.set_timesteps(REFERENCE_STEPS)
    reference = [int(t) for t in ddim.timesteps]
    train = int(ddim.config.num_train_timesteps)
    outside = [t for t in reference if not 0 <= t < train]
    if outside:  # "trailing" spacing at some lengths (57, 69, 113, ...) rounds up to a 51st timestep, -1
        raise EngineDirError(
            f"scheduler: DDIM-{REFERENCE_STEPS} with timestep_spacing '{ddim.config.timestep_spacing}' and "
            f"num_train_timesteps {train} visits timestep {outside[0]}, outside [0, {train}): rebuild with another "
            "scheduler config"
        )
    start = min(REFERENCE_STEPS - min(int(REFERENCE_STEPS * strength), REFERENCE_STEPS), REFERENCE_STEPS - 1)
    paper = reference[start:]
    calls = min(int(steps * strength), steps)
    if calls == len(paper):
        return paper
    if calls > paper[0] - paper[-1] + 1:
        raise InputError(
            "num_inference_steps",
            f"at most {paper[0] - paper[-1] + 1} UNet calls at strength {strength:g} (one per timestep from "
            f"{paper[0]} to {paper[-1]})",
            f"{steps} steps x {strength:g} = {calls} calls",
        )
    return [int(t) for t in np.linspace(paper[0], paper[-1], calls).round().astype(np.int64)]


class DDIMStepper:
    """DDIM (eta 0) over an explicit timestep list: diffusers' DDIMScheduler arithmetic, each step to the next listed
    timestep (diffusers' own step always goes back by 1000 // steps, which only fits uniform lists)."""

    def __init__(self, config: Mapping, timesteps: list[int]):
        self.scheduler = DDIMScheduler.from_config(dict(config))
        if self.scheduler.config.thresholding:
            raise InputError("scheduler_config", "a DDIM config without dynamic thresholding", "thresholding=True")
        self.timesteps = timesteps
        self._previous = dict(zip(timesteps, [*timesteps[1:], -1], strict=True))
        self.init_noise_sigma = float(self.scheduler.init_noise_sigma)

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        return self.scheduler.add_noise(original, noise, torch.tensor([t]))

    def scale_model_input(self, sample: torch.Tensor, t: int) -> torch.Tensor:
        return sample

    def step(self, model_output: torch.Tensor, t: int, sample: torch.Tensor) -> torch.Tensor:
        s = self.scheduler
        prev = self._previous[t]
        alpha_prod_t = s.alphas_cumprod[t]
        alpha_prod_t_prev = s.alphas_cumprod[prev] if prev >= 0 else s.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        kind = s.config.prediction_type
        if kind == "epsilon":
            pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
            pred_epsilon = model_output
        elif kind == "sample":
            pred_original_sample = model_output
            pred_epsilon = (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
        elif kind == "v_prediction":
            pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
            pred_epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
        else:
            raise InputError("scheduler_config", "prediction_type epsilon, sample or v_prediction", repr(kind))
        if s.config.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-s.config.clip_sample_range, s.config.clip_sample_range)
        pred_sample_direction = (1 - alpha_prod_t_prev) ** (0.5) * pred_epsilon  # eta 0: no variance term
        return alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction


class DiffusersStepper:
    """A diffusers multistep scheduler set to the explicit timesteps (DPM-Solver++ 2M)."""

    def __init__(self, scheduler, timesteps: list[int]):
        self.scheduler = scheduler
        self.scheduler.set_timesteps(timesteps=timesteps)
        self.timesteps = timesteps
        self.init_noise_sigma = float(self.scheduler.init_noise_sigma)

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        return self.scheduler.add_noise(original, noise, torch.tensor([t]))

    def scale_model_input(self, sample: torch.Tensor, t: int) -> torch.Tensor:
        return self.scheduler.scale_model_input(sample, t)

    def step(self, model_output: torch.Tensor, t: int, sample: torch.Tensor) -> torch.Tensor:
        return self.scheduler.step(model_output, t, sample).prev_sample


def final_sigmas_type(config: Mapping) -> str:
    """DPM-Solver++'s end point at DDIM's: "zero" (alpha 1) where DDIM sets its final alpha to one (diffusers'
    default), else "sigma_min" (alphas_cumprod[0], SD's `set_alpha_to_one=False`)."""
    return "zero" if DDIMScheduler.from_config(dict(config)).config.set_alpha_to_one else "sigma_min"


def stepper(sampler: str, config: Mapping, timesteps: list[int]) -> DDIMStepper | DiffusersStepper:
    """A fresh sampler (they hold state) over `timesteps`."""
    if sampler == "ddim":
        return DDIMStepper(config, timesteps)
    if sampler == "dpmpp-2m":
        scheduler = DPMSolverMultistepScheduler.from_config(
            dict(config),
            algorithm_type="dpmsolver++",
            solver_order=2,
            use_karras_sigmas=False,
            final_sigmas_type=final_sigmas_type(config),
        )
        return DiffusersStepper(scheduler, timesteps)
    raise InputError("sampler", f"one of {', '.join(SAMPLERS)}", repr(sampler))
