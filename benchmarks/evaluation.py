"""The downstream evidence of docs/evaluation.md, reproducible by one command (about 30 minutes on 2 CPU cores):

    python -m benchmarks.evaluation --out runs/evaluation

Procedural MVTec-style data (4 defect types; a third of each type are references, two thirds the held-out test)
-> a synthetic set from the shipped demo model (`acsdk generate` on the demo engines) -> `acsdk evaluate
downstream` with acsdk vs Perlin (DRAEM) vs CutPaste vs real-train. Every stage resumes: rerun the command after
an interruption and it continues. The report lands in OUT/evaluation/report.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFECTS = ("hole", "scratch", "stain", "crack")


def run(out: Path, per_type: int, steps: int, seed: int) -> dict:
    from acsdk.apps.demo import demo_engines
    from acsdk.data import make_mvtec_like
    from acsdk.data.generate import generate
    from acsdk.evaluation import DownstreamSettings, evaluate_downstream

    data = out / "data"
    if not (data / "plate").is_dir():
        make_mvtec_like(data, "plate", size=64, n_good=60, n_per_defect=15, defects=DEFECTS, seed=seed, n_test_good=20)
    generate(demo_engines(), data, "plate", per_type, out / "synthetic", seed=seed, resume=True)
    settings = DownstreamSettings(
        size=64, steps=steps, batch_size=16, base_width=16, levels=4, eval_every=100, seed=seed
    )
    resume = (out / "evaluation" / "evaluate.json").is_file()
    return evaluate_downstream(
        data, "plate", out / "evaluation", synthetic=out / "synthetic", settings=settings, resume=resume
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-type", type=int, default=100, help="synthetic pairs per defect type")
    parser.add_argument("--steps", type=int, default=1000, help="detector training steps per training set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    report = run(args.out, args.per_type, args.steps, args.seed)
    sys.stdout.write((args.out / "evaluation" / "report.md").read_text())
    return 0 if report["results"] else 1


if __name__ == "__main__":
    sys.exit(main())
