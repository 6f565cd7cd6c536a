"""Fewer UNet calls (issue 27): every sampler and count starts where the paper's DDIM-50 starts, DDIM-50 is unchanged
byte for byte, each sampler converges to DDIM's fine solution, and the CFG cut-off runs the conditional row alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import pixels
from diffusers import DDIMScheduler

import acsdk
from acsdk.errors import InputError
from acsdk.inference.schedules import SAMPLERS, DDIMStepper, visited_timesteps
from acsdk.inference.settings import SamplingSettings

PROMPT = "a photo of a surface with a hole"
SD = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
      "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False, "prediction_type": "epsilon"}  # fmt: skip


def _reference(config: dict, strength: float) -> list[int]:
    ddim = DDIMScheduler.from_config(config)
    ddim.set_timesteps(50)
    init = min(int(50 * strength), 50)
    return [int(t) for t in ddim.timesteps[50 - init :]]


@pytest.mark.parametrize("strength", [1.0, 0.75, 0.7, 0.5, 0.3])
@pytest.mark.parametrize("steps", [4, 10, 20, 35, 50, 100, 500])
def test_every_count_starts_where_ddim_50_starts(steps, strength):
    paper = _reference(SD, strength)
    ts = visited_timesteps(SD, steps, strength)
    assert len(ts) == int(steps * strength), "steps x strength UNet calls"
    assert ts[0] == paper[0] and (ts[-1] == paper[-1] or len(ts) == 1), (ts[:2], paper[:2])
    assert all(a > b for a, b in zip(ts, ts[1:], strict=False)), "strictly descending"
    if steps == 50:
        assert ts == paper, "the paper's setting visits diffusers' own DDIM timesteps"
    assert visited_timesteps(SD, 20, 0.7)[0] == 681, "not 651, where diffusers' DDIM-20 starts"


@pytest.mark.parametrize(
    "config",
    [SD, {**SD, "prediction_type": "v_prediction"}, {**SD, "clip_sample": True, "prediction_type": "sample"}],
    ids=["epsilon", "v", "sample-clipped"],
)
def test_ddim_over_the_paper_timesteps_is_diffusers_ddim_byte_for_byte(config):
    ours = DDIMStepper(config, _reference(config, 0.7))
    theirs = DDIMScheduler.from_config(config)
    theirs.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    x = y = torch.randn(2, 4, 8, 8, generator=g)
    for t in ours.timesteps:
        eps = torch.randn(2, 4, 8, 8, generator=g)
        x = ours.step(eps, t, x)
        y = theirs.step(eps, torch.tensor(t), y, eta=0.0).prev_sample
        assert torch.equal(x, y), t


@pytest.mark.parametrize(
    "config",
    [SD, {**SD, "set_alpha_to_one": True}, {**SD, "final_sigmas_type": "zero"},
     {**SD, "prediction_type": "v_prediction", "final_sigmas_type": "sigma_min", "set_alpha_to_one": True}],
    ids=["sd", "alpha-to-one", "config-says-zero", "v-alpha-to-one"],
)  # fmt: skip
def test_dpm_solver_ends_where_ddim_ends(config):
    """One end point for every sampler (issue 38): DPM-Solver++'s last sigma is DDIM's final alpha (alphas_cumprod[0]
    under SD's set_alpha_to_one=False, 1 under True), whatever final_sigmas_type the config carries. On a model whose
    data prediction never changes both samplers are exact, so both land on the same latents."""
    from acsdk.inference.schedules import stepper

    timesteps = visited_timesteps(config, 50, 0.7)
    ddim, dpm = stepper("ddim", config, timesteps), stepper("dpmpp-2m", config, timesteps)
    final_alpha = float(ddim.scheduler.final_alpha_cumprod)
    sigma = float(dpm.scheduler.sigmas[-1])
    assert 1.0 / (sigma**2 + 1.0) == pytest.approx(final_alpha, rel=1e-6), (sigma, final_alpha)

    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    abar = ddim.scheduler.alphas_cumprod
    ends = []
    for s in (ddim, dpm):
        x = s.add_noise(x0, noise, timesteps[0])
        for t in timesteps:  # the model output that predicts x0 exactly, in the config's parameterisation
            a = abar[t]
            eps = (x - a**0.5 * x0) / (1 - a) ** 0.5
            out = {"epsilon": eps, "v_prediction": a**0.5 * eps - (1 - a) ** 0.5 * x0}[config["prediction_type"]]
            x = s.step(out, t, s.scale_model_input(x, t))
        ends.append(x)
    want = final_alpha**0.5 * x0 + (1 - final_alpha) ** 0.5 * noise
    assert torch.allclose(ends[0], want, atol=1e-4) and torch.allclose(ends[1], want, atol=1e-4), [
        float((e - want).abs().max()) for e in ends
    ]


def test_bad_sampling_values_are_typed_errors_naming_the_argument():
    with pytest.raises(InputError, match="^sampler: expected one of ddim, dpmpp-2m, got 'unipc'"):
        SamplingSettings(sampler="unipc")
    for cutoff in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="^cfg_cutoff: expected"):
            SamplingSettings(cfg_cutoff=cutoff)
    for sampler in SAMPLERS:
        with pytest.raises(InputError, match="^num_inference_steps: expected at least 2"):
            SamplingSettings(sampler=sampler, num_inference_steps=1, strength=0.5)
    with pytest.raises(InputError, match="^num_inference_steps: expected at most 681 UNet calls"):
        visited_timesteps(SD, 1000, 0.7)


def _run(synth, scene, **settings):
    return synth.run(
        scene["image"], scene["mask"], PROMPT, scene["reference_image"], scene["reference_mask"], seed=4,
        asea_steps=2, **settings,
    )  # fmt: skip


def _inside(a, b, mask) -> float:
    """Mean |difference| inside the mask, grey levels."""
    diff = np.abs(pixels(a.image).astype(np.float64) - pixels(b.image).astype(np.float64))
    return float(diff[np.asarray(mask) > 127].mean())


@pytest.fixture(scope="module")
def engines(engine_dir, demo_engine_dir):
    return {"tiny": engine_dir, "demo": demo_engine_dir}


@pytest.mark.parametrize("model", ["tiny", "demo"])
def test_each_sampler_converges_to_ddims_fine_solution_and_its_error_shrinks(engines, scene, model):
    """350 calls from the same start and noise: DPM-Solver++ and DDIM land on one solution, both ending at DDIM's
    alpha (`python -m benchmarks.samplers`: tiny 0.26, demo 0.04 grey levels inside the mask; 0.37 and 0.25 when
    DPM-Solver++ ended at sigma 0, before issue 38; what is left is 8-bit rounding of two float paths through a
    random model's UNet); with 7 and then 35 calls each sampler's distance to that solution shrinks."""
    s = acsdk.Synthesizer(engines[model], backend="onnxruntime", device="cpu")
    size = s.parts.config.height
    if size != 64:
        from acsdk.testing import make_box_mask, make_defect_pair, make_texture

        ref, ref_mask = make_defect_pair(size, seed=3)
        scene = {"image": make_texture(size, seed=1), "mask": make_box_mask(size, size // 3, size // 3, 24, 20),
                 "reference_image": ref, "reference_mask": ref_mask}  # fmt: skip
    fine = {name: _run(s, scene, sampler=name, num_inference_steps=500) for name in SAMPLERS}
    gap = _inside(fine["ddim"], fine["dpmpp-2m"], scene["mask"])
    assert gap <= {"tiny": 0.3, "demo": 0.1}[model], gap
    for name in SAMPLERS:
        errors = [_inside(_run(s, scene, sampler=name, num_inference_steps=n), fine["ddim"], scene["mask"])
                  for n in (10, 50)]  # fmt: skip
        assert errors[1] < errors[0], (name, errors)


def test_the_cfg_cutoff_runs_the_conditional_row_alone(synth, scene):
    full = _run(synth, scene, num_inference_steps=20)
    assert _run(synth, scene, num_inference_steps=20, cfg_cutoff=1.0).pixels.tobytes() == full.pixels.tobytes()
    half = _run(synth, scene, num_inference_steps=20, cfg_cutoff=0.5)
    assert half.timings["unet_rows"] == 14 + 7 and full.timings["unet_rows"] == 28, "2 rows for 7 calls, then 1"
    assert half.pixels.tobytes() != full.pixels.tobytes()
    none = _run(synth, scene, num_inference_steps=20, cfg_cutoff=0.0)
    unguided = _run(synth, scene, num_inference_steps=20, guidance_scale=1.0)
    assert none.pixels.tobytes() == unguided.pixels.tobytes(), "cut-off 0 is the conditional row throughout"


def test_acsdk_tune_writes_its_table_chart_and_a_recommendation(engine_dir, tmp_path, capsys):
    from acsdk.apps.cli import main
    from acsdk.data.procedural import make_mvtec_like

    data = make_mvtec_like(tmp_path / "data", size=64, defects=("hole",), n_good=2, n_per_defect=3)
    out = tmp_path / "tune"
    argv = ["tune", "--engines", str(engine_dir), "--backend", "onnxruntime", "--device", "cpu", "--data", str(data),
            "--category", "plate", "--defects", "1", "--seeds", "1", "--calls", "7,35", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "tune.json").read_text())
    assert len(report["rows"]) == len(SAMPLERS) * 2 * 2 and len(report["scenes"]) == 1
    rows = {(r["sampler"], r["calls"], r["cfg_cutoff"]): r for r in report["rows"]}
    default = rows[("ddim", 35, None)]
    assert default["vs_default"]["mean"] == 0.0 and default["passes"], "the default's own setting is the default"
    assert rows[("ddim", 35, 0.5)]["unet_rows"] < default["unet_rows"], "the cut-off runs fewer UNet rows"
    assert rows[("ddim", 7, None)]["vs_fine"]["mean"] > default["vs_fine"]["mean"], "fewer calls, farther off"
    rec = report["recommendation"]
    assert rec["passes"] and rec["unet_rows"] <= default["unet_rows"]
    assert rec["command"].startswith("acsdk generate") and f"--sampler {rec['sampler']}" in rec["command"]
    assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "tune.md").read_text()
    assert "Recommendation:" in table and table in capsys.readouterr().out
    assert main([*argv[:-2], "--out", str(tmp_path / "bad"), "--calls", "7,x"]) == 2


@pytest.mark.parametrize("train", [57, 69, 113])
def test_a_schedule_whose_ddim50_visits_a_negative_timestep_is_refused_typed(train):
    # "trailing" spacing at these lengths rounds up to a 51st timestep, -1: diffusers would read alphas_cumprod[-1]
    # (the noisiest one) at the last step. The native runtime refuses the same configs (ddim.cpp, found fuzzing).
    config = {**SD, "num_train_timesteps": train, "timestep_spacing": "trailing"}
    with pytest.raises(acsdk.ACSDKError, match=r"timestep -1, outside \[0, " + str(train)):
        visited_timesteps(config, 50, 0.7)
    assert visited_timesteps({**config, "num_train_timesteps": 1000}, 50, 0.7)[0] == 699
