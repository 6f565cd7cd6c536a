"""How an image is sampled, in one object: the paper's settings by default, written here and nowhere else.

The Synthesizer, `generate`, the CLI, the benchmarks and training take a `SamplingSettings` (as OpenVINO GenAI's
pipelines take one generation config) instead of repeating five keyword arguments and their defaults. Its values are
checked when it is made; what depends on the model's noise schedule too (how many UNet calls fit between DDIM-50's
start and the schedule's end) `check_schedule` checks against the schedule's config, which `generate` and `acsdk
synth` call before they load a model or write anything. So a bad value is refused before anything runs or is written.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral

from ..errors import InputError, check_int, check_real
from .schedules import SAMPLERS, stepper, visited_timesteps


@dataclass(frozen=True)
class SamplingSettings:
    num_inference_steps: int = 50  # DDIM steps before strength (paper: 50)
    strength: float = 0.7  # how far the input is noised, (0, 1]: steps x strength UNet calls (paper: 35)
    guidance_scale: float = 7.0  # classifier-free guidance; <= 1 runs without the unconditional row (paper: 7)
    semantic_scale: float = 1.0  # lambda, the SGA branch's weight (paper: 1)
    asea_steps: int = 5  # ASEA's gradient steps per reference (paper: 5)
    sampler: str = "ddim"  # "ddim" (paper) or "dpmpp-2m"; every sampler starts where DDIM-50 starts (schedules.py)
    cfg_cutoff: float | None = None  # fraction of the calls that run CFG; the rest run the conditional row alone

    def __post_init__(self) -> None:
        steps = check_int("num_inference_steps", self.num_inference_steps, 1)
        strength = check_real("strength", self.strength, 0.0, 1.0, lo_open=True)
        if int(steps * strength) < 1:  # the sampler runs int(steps * strength) of the steps
            need = math.ceil(1.0 / strength)
            raise InputError(
                "num_inference_steps", f"at least {need} at strength {strength:g} (steps x strength >= 1)", str(steps)
            )
        values = {
            "num_inference_steps": steps,
            "strength": strength,
            "guidance_scale": check_real("guidance_scale", self.guidance_scale, 0.0, 1e3),
            "semantic_scale": check_real("semantic_scale", self.semantic_scale, -1e3, 1e3),
            "asea_steps": check_int("asea_steps", self.asea_steps, 0),
            "cfg_cutoff": None if self.cfg_cutoff is None else check_real("cfg_cutoff", self.cfg_cutoff, 0.0, 1.0),
        }
        if self.sampler not in SAMPLERS:
            raise InputError("sampler", f"one of {', '.join(SAMPLERS)}", repr(self.sampler))
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, sampling: SamplingSettings | None = None, **overrides: object) -> SamplingSettings:
        """`sampling` (default: the paper's) with some fields replaced, e.g. `of(num_inference_steps=20)`."""
        if sampling is not None and not isinstance(sampling, cls):
            raise InputError("sampling", "a SamplingSettings", repr(sampling)[:80])
        unknown = sorted(set(overrides) - set(FIELDS))
        if unknown:
            raise InputError("settings", f"keywords among {', '.join(FIELDS)} (and the call's own)", str(unknown))
        return dataclasses.replace(sampling or cls(), **overrides)

    def check_schedule(self, scheduler_config: Mapping) -> None:
        """Refuse now what the sampler would refuse at the first image on a model with this scheduler config: the
        step count at this strength against the timesteps from DDIM-50's start to the schedule's end (an InputError
        naming `num_inference_steps`), and the sampler made over them (schedules.py)."""
        timesteps = visited_timesteps(scheduler_config, self.num_inference_steps, self.strength)
        stepper(self.sampler, scheduler_config, timesteps)

    @property
    def cfg(self) -> bool:
        """Whether classifier-free guidance runs (the UNet then sees 2 rows per image)."""
        return self.guidance_scale > 1.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(SamplingSettings))

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes -2**63 .. 2**64 - 1 and raises a bare ValueError past it


def check_seed(argument: str, value: object) -> int:
    """`value` as a seed torch's generator takes, 0 .. 2**64 - 1, else an InputError naming `argument`: checked where
    a seed comes in, before a model loads. (torch also takes negatives down to -2**63, as the positive seed 2**64
    above them: refused, so that one seed has one spelling.)"""
    if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= value <= SEED_MAX:
        raise InputError(argument, "an integer in [0, 2**64 - 1] (the range of torch's random generator)", repr(value))
    return int(value)
