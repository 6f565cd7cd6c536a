"""One backend in a fresh process: engine dir (or checkpoint) to first image, and peak resident memory.

    python -m benchmarks.coldstart --backend onnxruntime --path ENGINE_DIR
Prints one JSON line. Run by benchmarks.report once per backend so memory is not shared between them.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser()
    p.add_argument("--backend", required=True, choices=("torch", "onnxruntime", "openvino", "tensorrt"))
    p.add_argument("--path", required=True, help="checkpoint dir for torch, engine dir otherwise")
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args(argv)

    import acsdk
    from acsdk.testing import make_box_mask, make_defect_pair, make_texture
    from runtime.process import peak_rss_mb

    synth = (
        acsdk.Synthesizer.from_checkpoint(args.path)
        if args.backend == "torch"
        else acsdk.Synthesizer(args.path, backend=args.backend).load()  # components open at first use otherwise
    )
    size = synth.parts.config.height
    t_loaded = time.perf_counter()
    ref, ref_mask = make_defect_pair(size, seed=3)
    synth.run(
        make_texture(size, seed=1),
        make_box_mask(size, size // 3, size // 3, size // 4, size // 4),
        "a hole",
        ref,
        ref_mask,
        num_inference_steps=args.steps,
    )
    t_first = time.perf_counter()
    peak_kb = int(peak_rss_mb() * 1024)
    print(
        json.dumps(
            {
                "backend": args.backend,
                "load_s": t_loaded - T0,
                "first_image_s": t_first - T0,
                "peak_rss_mb": peak_kb / 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
