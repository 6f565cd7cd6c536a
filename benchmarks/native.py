"""Native runtime (acsdk-native) against the Python runtime, per image, on the same engines and bank.

    cmake -S . -B build && cmake --build build
    python -m benchmarks.native [--config small] [--steps 50] [--repeat 3] [--binary build/native/acsdk-native]

Both run OpenVINO on the CPU, paper settings (50 DDIM steps at strength 0.7: 35 UNet calls, CFG 7), one window at
the model's size, the reference prepared once (`Synthesizer.prepare`, the bank the native side reads). Warm: the
median per image after a warm-up in one process (`--repeat` in the CLI); cold: one `acsdk-native synth`
process from start to written PNG (OpenVINO's model cache warm, as on a line PC after its first image).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .configs import PAPER, engines
from .measure import measure
from .report import PROMPT, environment


def run(config: str, steps: int, repeat: int, binary: str) -> dict:
    import acsdk
    from acsdk.testing import make_defect_pair, make_texture

    engine_dir = engines(config)
    synth = acsdk.Synthesizer(engine_dir, backend="openvino", device="cpu")
    size = synth.parts.config.height
    ref, ref_mask = make_defect_pair(size, seed=3)
    image = make_texture(size, seed=1)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 3 : size // 3 + size // 5, size // 2 : size // 2 + size // 6] = 255
    settings = {**PAPER, "num_inference_steps": steps}
    settings.pop("asea_steps")
    tmp = Path(tempfile.mkdtemp(prefix="acsdk-native-bench-"))
    synth.prepare(PROMPT, ref, ref_mask).save(tmp / "bank")
    Image.fromarray(image).save(tmp / "image.png")
    Image.fromarray(mask).save(tmp / "mask.png")
    features = synth.encode_reference(ref, ref_mask, PROMPT)

    py = measure(lambda: synth.run(image, mask, PROMPT, reference=features, **settings), warmup=1, repeat=repeat)
    logging.info("python: %.3f s per image", py.median)

    files = {"engines": engine_dir, "bank": tmp / "bank", "image": tmp / "image.png", "mask": tmp / "mask.png",
             "out": tmp / "out.png"}  # fmt: skip
    cmd = [binary, "synth", *[x for k, v in files.items() for x in (f"--{k}", str(v))], "--steps", str(steps)]
    cmd += ["--strength", str(settings["strength"]), "--guidance", str(settings["guidance_scale"]), "--json"]
    warm = json.loads(subprocess.run([*cmd, "--repeat", str(repeat + 1)], check=True, capture_output=True).stdout)
    native = [r["total"] for r in warm["runs"][1:]]
    t0 = time.perf_counter()
    cold_run = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
    cold = time.perf_counter() - t0
    logging.info("native: %.3f s per image warm, %.3f s cold process", statistics.median(native), cold)
    Image.fromarray(ref).save(tmp / "ref.png")
    Image.fromarray(ref_mask).save(tmp / "ref_mask.png")
    py_cmd = ["acsdk", "synth", "--engines", str(engine_dir), "--backend", "openvino", "--device", "cpu", "--prompt",
              PROMPT, "--reference", str(tmp / "ref.png"), "--reference-mask", str(tmp / "ref_mask.png"), "-q",
              "--image", str(tmp / "image.png"), "--mask", str(tmp / "mask.png"), "--steps", str(steps),
              "--strength", str(settings["strength"]), "--guidance", str(settings["guidance_scale"]),
              "--out", str(tmp / "py_out.png")]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(py_cmd, check=True, capture_output=True)
    py_cold = time.perf_counter() - t0
    ours = np.asarray(Image.open(tmp / "out.png")).astype(int)
    theirs = synth.run(image, mask, PROMPT, reference=features, seed=0, **settings).pixels.astype(int)
    return {
        "config": config,
        "steps": steps,
        "unet_calls": int(cold_run["timings"]["denoise_steps"]),
        "python_s": py.median,
        "native_s": statistics.median(native),
        "native_cold_process_s": cold,
        "python_cold_process_s": py_cold,  # `acsdk synth`: also encodes the reference (CSM + ASEA)
        "native_timings_s": cold_run["timings"],
        "max_abs_diff_grey_levels": int(np.abs(ours - theirs).max()),
        "environment": environment(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.native", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="small", help="benchmark model (benchmarks/configs.py)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--binary", default="build/native/acsdk-native", help="the built acsdk-native")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    r = run(args.config, args.steps, args.repeat, args.binary)
    print("| per image (OpenVINO CPU, fp32) | Python runtime | native | native vs Python | cold process: `acsdk synth` "
          "| cold process: `acsdk-native synth` |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| {r['config']}, {r['unet_calls']} UNet calls, CFG | {r['python_s']:.3f} s | {r['native_s']:.3f} s | "
          f"{r['python_s'] / r['native_s']:.2f}x | {r['python_cold_process_s']:.2f} s | "
          f"{r['native_cold_process_s']:.2f} s |")  # fmt: skip
    print(f"outputs differ by at most {r['max_abs_diff_grey_levels']} grey level(s)")
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
