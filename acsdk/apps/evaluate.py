"""`acsdk evaluate downstream|generation`: the command-line side of acsdk.evaluation."""

from __future__ import annotations

import argparse
import json


def _downstream(args: argparse.Namespace) -> int:
    from ..evaluation import DownstreamSettings, evaluate_downstream

    baselines = () if args.baseline == ["none"] else tuple(args.baseline or ("perlin", "cutpaste", "real-train"))
    settings = DownstreamSettings(
        size=args.size,
        steps=args.steps,
        batch_size=args.batch_size,
        base_width=args.width,
        levels=args.levels,
        lr=args.lr,
        eval_every=args.eval_every,
        seed=args.seed,
    )
    report = evaluate_downstream(
        args.real,
        args.category,
        args.out,
        synthetic=args.synthetic,
        baselines=baselines,
        settings=settings,
        resume=args.resume,
        progress=not args.quiet,
    )
    for name, r in report["results"].items():
        m = r["test"]["all"]
        print(
            f"{name:>10}: image AUROC {m['image_auroc']:.3f} AP {m['image_ap']:.3f} | pixel AUROC "
            f"{m['pixel_auroc']:.3f} AP {m['pixel_ap']:.3f} AU-PRO {m['pixel_au_pro']:.3f} (step {r['selected_step']})"
        )
    for baseline, verdicts in report["synthetic_beats"].items():
        counts = {v: sum(x == v for x in verdicts.values()) for v in ("better", "tie", "worse")}
        print(f"synthetic vs {baseline}: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + " (of 7 metrics)")
    print(f"report: {args.out}/report.md")
    return 0


def _generation(args: argparse.Namespace) -> int:
    from ..evaluation.generation import evaluate_generation

    result = evaluate_generation(
        args.real,
        args.category,
        args.synthetic,
        lpips_weights=tuple(args.lpips_weights) if args.lpips_weights else None,
        inception_weights=args.inception_weights,
        seed=args.seed,
        max_per_type=args.max_per_type,
        progress=not args.quiet,
    )
    text = json.dumps(result, indent=1)
    if args.out:
        from runtime.files import atomic_write

        atomic_write(args.out, text)
    print(text)
    return 0


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="does a synthetic set help? downstream detector protocol, generation metrics")
    kinds = ev.add_subparsers(dest="evaluation", required=True)

    down = kinds.add_parser(
        "downstream",
        help="train a DRAEM-style detector per training set and test it on held-out real defects",
    )
    down.add_argument("--real", required=True, help="MVTec-style root (the held-out 2/3 of each type are the test)")
    down.add_argument("--category", required=True)
    down.add_argument("--synthetic", help="output of `acsdk generate` (SYNTH/<category>/<defect>/...)")
    down.add_argument(
        "--baseline",
        action="append",
        choices=("perlin", "cutpaste", "real-train", "none"),
        help="repeatable; default all three (perlin = DRAEM, cutpaste, real-train = the real references)",
    )
    down.add_argument("--out", required=True, help="a new directory (or one to --resume)")
    down.add_argument("--size", type=int, default=256, help="detector resolution (the protocol: 256)")
    down.add_argument("--steps", type=int, default=3000, help="training steps per set (the same budget for all)")
    down.add_argument("--batch-size", type=int, default=8, help="half normal, half anomalous")
    down.add_argument("--width", type=int, default=32, help="detector base width (DRAEM: 64)")
    down.add_argument("--levels", type=int, default=5, help="U-Net resolutions (DRAEM: 6)")
    down.add_argument("--lr", type=float, default=1e-3)
    down.add_argument("--eval-every", type=int, default=200, help="steps between validation (model selection)")
    down.add_argument("--seed", type=int, default=0)
    down.add_argument("--resume", action="store_true", help="continue the run in --out (settings must match)")
    down.add_argument("--quiet", action="store_true", help="no progress bars")
    down.set_defaults(func=_downstream)

    gen = kinds.add_parser("generation", help="IC-LPIPS and IS of a synthetic set against the real anomalies")
    gen.add_argument("--real", required=True, help="MVTec-style root")
    gen.add_argument("--category", required=True)
    gen.add_argument("--synthetic", required=True, help="output of `acsdk generate`")
    gen.add_argument(
        "--lpips-weights",
        nargs=2,
        metavar=("VGG16", "LIN"),
        help="torchvision's vgg16-397923af.pth and LPIPS v0.1 vgg.pth (.pth read weights-only, or .safetensors)",
    )
    gen.add_argument("--inception-weights", help="pt_inception-2015-12-05-6726825d.pth (or .safetensors)")
    gen.add_argument("--max-per-type", type=int, help="subsample generated images per type (IC-LPIPS is O(n^2))")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", help="write the result JSON here too")
    gen.add_argument("--quiet", action="store_true", help="no progress bars")
    gen.set_defaults(func=_generation)
