"""Time per image against image size, one small defect: with windows the cost follows the number of windows.

    python -m benchmarks.roi [--config small] [--sizes 512 2048 4096] [--steps 50] [--out results.json]

Each size gets the same 30 x 30 px mask and reference features (encoded once, so CSM + ASEA stay out of the
comparison); prints seconds per image, the ratio to the smallest size and the stage split, for roi="auto" and,
as the comparison, roi="full".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from .configs import engines
from .measure import measure
from .report import PROMPT, environment


def run(config: str, sizes: list[int], steps: int, repeat: int) -> dict:
    import acsdk
    from acsdk.testing import make_defect_pair, make_texture

    synth = acsdk.Synthesizer(engines(config), backend="onnxruntime", device="cpu")
    ref, ref_mask = make_defect_pair(synth.parts.config.height, seed=3)
    features = synth.encode_reference(ref, ref_mask, PROMPT)
    tile = make_texture(256, seed=1)
    rows = {}
    for size in sizes:
        image = np.tile(tile, (size // 256 + 1, size // 256 + 1, 1))[:size, :size].copy()
        mask = np.zeros((size, size), np.uint8)
        mask[size // 2 : size // 2 + 30, size // 3 : size // 3 + 30] = 255
        for roi in ("auto", "full"):
            kwargs = {"reference": features, "num_inference_steps": steps, "roi": roi, "seed": 0}
            stats = measure(lambda i=image, m=mask, k=kwargs: synth.run(i, m, PROMPT, **k), warmup=1, repeat=repeat)
            res = synth.run(image, mask, PROMPT, **kwargs)
            rows[f"{size}/{roi}"] = {
                "size": size,
                "roi": roi,
                "windows": len(res.windows),
                "median_s": stats.median,
                "timings_s": {k: round(v, 4) for k, v in res.timings.items()},
            }
            logging.info("%d px, roi=%s: %.2f s (%d window)", size, roi, stats.median, len(res.windows))
    base = rows[f"{sizes[0]}/auto"]["median_s"]
    for row in rows.values():
        row["ratio_to_smallest_auto"] = round(row["median_s"] / base, 3)
    return {"config": config, "steps": steps, "environment": environment(), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.roi", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="small", help="benchmark model (benchmarks/configs.py)")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 4096])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(args.config, args.sizes, args.steps, args.repeat)
    print(f"| image | roi | windows | s per image | ratio to {args.sizes[0]} px auto | denoise s | pre+post s |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in result["rows"].values():
        t = r["timings_s"]
        cells = [r["size"], r["roi"], r["windows"], f"{r['median_s']:.2f}", f"{r['ratio_to_smallest_auto']:.2f}"]
        cells += [f"{t['denoise']:.2f}", f"{t['preprocess'] + t['postprocess']:.2f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
