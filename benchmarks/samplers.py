"""How far each sampler is from DDIM's fine solution: the README's DDIM vs DPM-Solver++ numbers.

    python -m benchmarks.samplers [--models tiny demo] [--calls 7 35] [--fine-calls 350]

The scene, seed and settings of tests/test_samplers.py's convergence test: one target per model (the tiny random
model of the tests, exported to ONNX once and cached; the shipped demo model), every sampler from the same start and
noise. Prints, per model, the mean |difference| inside the mask (grey levels) of each sampler at each call count
from DDIM at `--fine-calls`, and of DPM-Solver++ at `--fine-calls` from DDIM there (the two fine solutions' gap).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import numpy as np

PROMPT = "a photo of a surface with a hole"  # tests/test_samplers.py's


def _engines(model: str):
    from acsdk.apps.demo import demo_engines

    if model == "demo":
        return demo_engines()
    from acsdk.testing import make_tiny_checkpoint
    from export.build import build_engine_dir
    from runtime.files import cache_dir

    root = cache_dir() / "bench" / "samplers-tiny"
    engines = root / "engines"
    if not (engines / "manifest.json").is_file():
        ckpt = make_tiny_checkpoint(root / "checkpoint", seed=0)  # the tests' tiny_ckpt
        build_engine_dir(ckpt, engines, backend="onnxruntime", progress=False)
    return engines


def _scene(size: int) -> dict:
    """tests/test_samplers.py's: the conftest scene at 64 px, a scaled one at the demo's size."""
    from acsdk.testing import make_box_mask, make_defect_pair, make_texture

    ref, ref_mask = make_defect_pair(size, seed=3)
    mask = make_box_mask(64, 20, 24, 14, 12) if size == 64 else make_box_mask(size, size // 3, size // 3, 24, 20)
    return {"image": make_texture(size, seed=1), "mask": mask, "reference_image": ref, "reference_mask": ref_mask}


def measure(model: str, calls: list[int], fine_calls: int) -> dict:
    import acsdk
    from acsdk.apps.tune import steps_for
    from acsdk.inference.schedules import SAMPLERS

    synth = acsdk.Synthesizer(_engines(model), backend="onnxruntime", device="cpu")
    scene = _scene(synth.parts.config.height)
    inside = np.asarray(scene["mask"]) > 127

    def run(sampler: str, n: int) -> np.ndarray:
        res = synth.run(scene["image"], scene["mask"], PROMPT, scene["reference_image"], scene["reference_mask"],
                        seed=4, asea_steps=2, sampler=sampler, num_inference_steps=steps_for(n, 0.7))  # fmt: skip
        return np.asarray(res.image, dtype=np.float64)

    def dist(a: np.ndarray, b: np.ndarray) -> float:
        return round(float(np.abs(a - b)[inside].mean()), 3)

    fine = {s: run(s, fine_calls) for s in SAMPLERS}
    out = {"model": model, "fine_calls": fine_calls, "fine_gap": dist(fine["dpmpp-2m"], fine["ddim"]), "vs_fine": {}}
    for s in SAMPLERS:
        out["vs_fine"][s] = {n: dist(run(s, n), fine["ddim"]) for n in calls}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.samplers", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["tiny", "demo"], choices=["tiny", "demo"])
    p.add_argument("--calls", type=int, nargs="+", default=[7, 35])
    p.add_argument("--fine-calls", type=int, default=350)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    for model in args.models:
        r = measure(model, args.calls, args.fine_calls)
        print(json.dumps(r))
        for s, row in r["vs_fine"].items():
            print(f"{model}: {s}: " + ", ".join(f"{n} calls {d:.2f}" for n, d in row.items())
                  + f" grey levels from DDIM at {r['fine_calls']} calls")  # fmt: skip
        print(f"{model}: DPM-Solver++ at {r['fine_calls']} calls from DDIM there: {r['fine_gap']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
