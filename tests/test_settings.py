"""SamplingSettings: the paper's settings written once, checked when made, taken by run, run_batch and generate."""

import dataclasses

import pytest
from conftest import FAST, pixels

from acsdk import InputError
from acsdk.inference.settings import SamplingSettings


def test_defaults_are_the_papers_and_bad_values_are_refused_by_name():
    s = SamplingSettings()
    assert (s.num_inference_steps, s.strength, s.guidance_scale, s.semantic_scale, s.asea_steps) == (50, 0.7, 7.0, 1, 5)
    assert int(s.num_inference_steps * s.strength) == 35 and s.cfg
    assert SamplingSettings.of(num_inference_steps=20) == dataclasses.replace(s, num_inference_steps=20)
    for kwargs, argument in [
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 1}, "num_inference_steps"),  # 1 x 0.7 < one step
        ({"strength": 0.0}, "strength"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"asea_steps": -1}, "asea_steps"),
        ({"asea_steps": True}, "asea_steps"),
    ]:
        with pytest.raises(InputError) as exc:
            SamplingSettings(**kwargs)
        assert exc.value.argument == argument
    with pytest.raises(InputError, match="num_steps"):
        SamplingSettings.of(num_steps=20)
    with pytest.raises(InputError, match="sampling"):
        SamplingSettings.of({"num_inference_steps": 20})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.strength = 0.5


def test_run_takes_the_object_or_its_fields_as_keywords_alike(synth, scene):
    args = (scene["image"], scene["mask"], "a photo of a hole", scene["reference_image"], scene["reference_mask"])
    by_object = synth.run(*args, sampling=SamplingSettings(**FAST), seed=3)
    by_keywords = synth.run(*args, seed=3, **FAST)
    assert (pixels(by_object.image) == pixels(by_keywords.image)).all()
    with pytest.raises(InputError, match="guidance"):
        synth.run(*args, guidance=3.0)  # a CLI flag's name is not a keyword of run: refused, not ignored
