"""`acsdk evaluate downstream|generation`: the command-line side of acsdk.evaluation."""

from __future__ import annotations

import argparse
import json


def _downstream(args: argparse.Namespace) -> int:
    from ..evaluation import DownstreamSettings, evaluate_downstream

    baselines = () if args.baseline == ["none"] else tuple(args.baseline or ("perlin", "cutpaste", "real-train"))
    given = {field: getattr(args, flag) for flag, field in _SETTING_FLAGS.items() if getattr(args, flag) is not None}
    settings = DownstreamSettings.preset(args.protocol, **given)  # explicit flags override the protocol's values
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
    on_test = settings.selects_on_test
    for name, r in report["results"].items():
        m = r["test"]["all"]
        grid = f" | grid F1-max {m['pixel_f1_max_grid21']:.3f} AU-PRO {m['pixel_au_pro_100']:.3f}" if on_test else ""
        print(
            f"{name:>10}: image AUROC {m['image_auroc']:.3f} AP {m['image_ap']:.3f} | pixel AUROC "
            f"{m['pixel_auroc']:.3f} AP {m['pixel_ap']:.3f} AU-PRO {m['pixel_au_pro']:.3f}{grid} "
            f"(step {r['selected_step']}{', on test' if on_test else ''})"
        )
    if on_test:
        print(f"models {report['selection']}")
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


# flag (argparse dest) -> DownstreamSettings field; a flag not given takes the --protocol preset's value
_SETTING_FLAGS = {
    "size": "size",
    "steps": "steps",
    "batch_size": "batch_size",
    "width": "base_width",
    "levels": "levels",
    "lr": "lr",
    "eval_every": "eval_every",
    "seed": "seed",
}


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
    down.add_argument(
        "--protocol",
        choices=("acsdk", "anomalydiffusion"),
        default="acsdk",
        help="acsdk (default): selection on a validation split; anomalydiffusion: the settings of AnomalyDiffusion's "
        "evaluation code (U-Net 64 x 6, Adam 1e-4, batch 8, 12600 steps, no flips, grid F1-max/AU-PRO besides the "
        "exact ones, model selected on the test set: optimistic, labelled so); the flags below override its values",
    )
    down.add_argument("--size", type=int, help="detector resolution (both protocols: 256)")
    down.add_argument("--steps", type=int, help="training steps per set (3000; anomalydiffusion 12600)")
    down.add_argument("--batch-size", type=int, help="half normal, half anomalous (8)")
    down.add_argument("--width", type=int, help="detector base width (32; anomalydiffusion 64, DRAEM's)")
    down.add_argument("--levels", type=int, help="U-Net resolutions (5; anomalydiffusion 6, DRAEM's)")
    down.add_argument("--lr", type=float, help="Adam learning rate (1e-3; anomalydiffusion 1e-4)")
    down.add_argument("--eval-every", type=int, help="steps between model-selection points (200; anomalydiffusion 63)")
    down.add_argument("--seed", type=int, help="(0)")
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
