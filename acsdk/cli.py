"""The `acsdk` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import ACSDKError


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    s = run_demo(args.out, count=args.count, seed=args.seed, steps=args.steps)
    print(f"acsdk demo: {len(s.images)} synthetic anomalies written to {s.out_dir}/image (masks in {s.out_dir}/mask)")
    print(f"contact sheet: {s.contact_sheet}")
    print(f"ASEA in-mask attention r: {s.asea['r_before']:.3f} -> {s.asea['r_after']:.3f}")
    t = s.timings
    print(
        f"mean per image: total {t['total']:.2f} s (denoise {t['denoise']:.2f} s over {int(t['denoise_steps'])} steps)"
    )
    print(f"note: {s.note}")
    return 0


def _import_ip_adapter(args: argparse.Namespace) -> int:
    from .models.checkpoint import AnomalyControlModel
    from .models.ip_adapter import import_ip_adapter

    model = AnomalyControlModel.from_pretrained(args.checkpoint)
    import_ip_adapter(model, args.ip_adapter)
    dest = model.save_pretrained(args.out, overwrite=args.force)
    print(f"wrote {dest} (ImageProj and to_k_ip/to_v_ip from {args.ip_adapter}; BlipProj kept)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acsdk", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="synthesize a few anomalies on the embedded default model, offline")
    demo.add_argument("--out", default="acsdk-demo", help="output directory (default: ./acsdk-demo)")
    demo.add_argument("--count", type=int, default=4, help="how many images to synthesize")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=50, help="DDIM steps before strength (paper: 50)")
    demo.set_defaults(func=_demo)

    imp = sub.add_parser("import-ip-adapter", help="start a checkpoint's adapter from IP-Adapter weights")
    imp.add_argument("--checkpoint", required=True, help="an acsdk checkpoint directory (the base)")
    imp.add_argument("--ip-adapter", required=True, help="ip-adapter .bin or .safetensors file")
    imp.add_argument("--out", required=True, help="where to write the new checkpoint")
    imp.add_argument("--force", action="store_true", help="replace --out if it exists")
    imp.set_defaults(func=_import_ip_adapter)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ACSDKError, FileExistsError) as exc:
        print(f"acsdk {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
