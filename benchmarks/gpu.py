"""`python -m benchmarks.gpu --config sd15 --out DIR`: plain PyTorch on a CUDA GPU, the baseline engines must beat.

Each component alone at fp32 and fp16 (the module cast with `.half()`, as a user would), with the UNet's FLOPs
per call and the rate achieved; then whole images with `Synthesizer.from_checkpoint(device="cuda")` at the paper's
settings (fresh reference, cached reference). Writes results.json and report.md. Runs where no engine backend for
CUDA is installed (no TensorRT, no onnxruntime-gpu): it measures torch only.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from .compute import flops
from .configs import PAPER, checkpoint
from .measure import measure
from .report import end_to_end_one, environment

log = logging.getLogger("benchmarks.gpu")


def _cast(inputs: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(device, dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


def components(ckpt: Path, device: torch.device, repeat: int) -> dict:
    """Milliseconds per call of each spec's module at fp32 and fp16, batch 1 and the spec's batch per image."""
    from acsdk.models.checkpoint import Checkpoint
    from export.specs import SPECS, Dims

    reader = Checkpoint(ckpt)
    dims = Dims.from_configs(reader.configs, reader.config.height, reader.config.width)
    rows = {}
    for name, spec in SPECS.items():
        module = spec.build_module(reader).to(device).eval()
        for batch in sorted({1, spec.batch_per_image}):
            row = {}
            for label, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
                module.to(dtype)
                inputs = _cast(spec.sample_inputs(dims, batch=batch), device, dtype)
                with torch.no_grad():
                    stats = measure(lambda m=module, i=inputs: m(**i), warmup=2, repeat=repeat)
                    outs = module(**inputs)
                finite = all(torch.isfinite(o).all().item() for o in (outs if isinstance(outs, tuple) else [outs]))
                row[label] = {"ms": round(1000 * stats.median, 3), "finite": finite}
                if name == "unet":
                    with torch.no_grad():
                        gflop = flops(module, inputs) / 1e9
                    row["gflop"] = round(gflop, 1)
                    row[label]["tflops"] = round(gflop / stats.median / 1000, 1)
            rows[f"{name} (batch {batch})"] = row
            log.info("%s batch %d: %s", name, batch, row)
        del module
        torch.cuda.empty_cache()
    return rows


def report_md(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"# Plain PyTorch on {env['gpu']} ({results['config']}, {env['date']})",
        "",
        f"torch {env['versions'].get('torch')}, CUDA {torch.version.cuda}; `python -m benchmarks.gpu --config "
        f"{results['config']}`. Medians.",
        "",
        "| component | fp32 ms | fp16 ms | fp16 finite |",
        "|---|---:|---:|---|",
    ]
    for key, row in results["components"].items():
        extra = ""
        if "gflop" in row:
            extra = f" ({row['gflop']} GFLOP: {row['fp32']['tflops']} / {row['fp16']['tflops']} TFLOP/s)"
        lines.append(f"| {key}{extra} | {row['fp32']['ms']} | {row['fp16']['ms']} | {row['fp16']['finite']} |")
    e2e = results["end_to_end"]
    lines += [
        "",
        f"Whole image, torch fp32 on the GPU, paper settings ({PAPER['num_inference_steps']} steps x strength "
        f"{PAPER['strength']}): fresh reference {e2e['end_to_end']['median']:.3f} s, cached reference "
        f"{e2e['cached_reference']['median']:.3f} s, reference encoding {e2e['reference_encoding']['median']:.3f} s.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="sd15", help="model sizes: tiny, small, sd15 (default)")
    p.add_argument("--out", required=True, help="where results.json and report.md go")
    p.add_argument("--device", default="cuda", help="torch device (default cuda; cpu for a dry run)")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--work", help="where the random checkpoint is built (default: the acsdk cache)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = torch.device(args.device)
    t0 = time.perf_counter()
    ckpt = checkpoint(args.config, Path(args.work) if args.work else None)
    log.info("checkpoint ready in %.1f s", time.perf_counter() - t0)
    results = {"config": args.config, "device": str(device), "environment": environment()}
    results["components"] = components(ckpt, device, args.repeat)
    import acsdk

    synth = acsdk.Synthesizer.from_checkpoint(ckpt, device=device)
    results["end_to_end"] = end_to_end_one(synth, dict(PAPER), repeat=3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(report_md(results))
    log.info("wrote %s", out / "report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
