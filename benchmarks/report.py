"""`python -m benchmarks.report --config {tiny,small,sd15} --out DIR`: side-by-side latency report.

Every backend runs in this one process (ratios are meaningful); memory and cold start run one fresh
process per backend. Writes results.json, report.md and PNG charts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from runtime.versions import tool_versions

from .compute import flops, matmul_peaks
from .configs import CONFIGS, PAPER, checkpoint, engines
from .measure import instrument, measure

log = logging.getLogger("benchmarks.report")
PROMPT = "a photo of a surface with a hole"


def environment() -> dict:
    versions = {k: v for k, v in tool_versions().items() if v is not None and k != "python"}
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "versions": versions,
        "matmul_peaks": matmul_peaks(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _scene(size: int):
    from acsdk.testing import make_box_mask, make_defect_pair, make_texture

    ref, ref_mask = make_defect_pair(size, seed=3)
    return make_texture(size, seed=1), make_box_mask(size, size // 3, size // 3, size // 4, size // 4), ref, ref_mask


def _openvino() -> bool:
    from runtime.openvino_engine import openvino_usable

    return openvino_usable()[0]


def component_engines(manifest, name: str) -> dict:
    """Every engine backend usable here for one component of an engine dir, by report label."""
    from acsdk.inference.parts import EngineOptions, load_engine, openvino_cache_dir

    cpu = torch.device("cpu")
    opts = EngineOptions(cache_dir=openvino_cache_dir(manifest))
    out = {"onnxruntime-cpu": load_engine(name, manifest, "onnxruntime", "fp32", cpu, True)}
    if _openvino():
        out["openvino-cpu"] = load_engine(name, manifest, "openvino", "fp32", cpu, True, opts)
        precisions = {a["precision"] for a in manifest.components[name]["artifacts"]}
        if "int8" in precisions:
            out["openvino-cpu-int8"] = load_engine(name, manifest, "openvino", "int8", cpu, True, opts)
    return out


def backends_for(ckpt: Path, engine_dir: Path) -> dict:
    """Synthesizers to compare: the torch reference and every engine backend usable here."""
    import acsdk

    out = {"torch": lambda: acsdk.Synthesizer.from_checkpoint(ckpt)}
    out["onnxruntime-cpu"] = lambda: acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
    if _openvino():
        out["openvino-cpu"] = lambda: acsdk.Synthesizer(
            engine_dir, backend="openvino", device="cpu", precision_overrides={"unet": "fp32"}
        )
    if torch.cuda.is_available():
        out["torch-cuda"] = lambda: acsdk.Synthesizer.from_checkpoint(ckpt, device="cuda")
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            out["onnxruntime-cuda"] = lambda: acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cuda")
    return out


def component_latency(ckpt: Path, engine_dir: Path, repeat: int) -> dict:
    """Each component alone, torch module vs every engine backend, on the spec's sample inputs; the UNet's rows
    also carry its FLOPs per call and each backend's achieved GFLOP/s."""
    from acsdk.models.checkpoint import Checkpoint
    from export.specs import SPECS, Dims
    from runtime.manifest import Manifest

    reader = Checkpoint(ckpt)
    manifest = Manifest.load(engine_dir)
    dims = Dims.from_configs(reader.configs, manifest.data["model"]["height"], manifest.data["model"]["width"])
    rows = {}
    for name, spec in SPECS.items():
        module = spec.build_module(reader)
        engines_ = component_engines(manifest, name)
        for batch in sorted({1, spec.batch_per_image}):
            inputs = spec.sample_inputs(dims, batch=batch)
            key = f"{name} (batch {batch})"
            with torch.no_grad():
                row = {"torch": measure(lambda m=module, i=inputs: m(**i), repeat=repeat).as_dict()}
                for label, e in engines_.items():
                    row[label] = measure(lambda e=e, i=inputs: e.run(i), repeat=repeat).as_dict()
            if name == "unet":
                row["gflop"] = flops(module, inputs) / 1e9
            rows[key] = row
            log.info("%s: %s", key, {k: round(v["median"], 4) for k, v in row.items() if isinstance(v, dict)})
    return rows


def throughput(config: str, steps: int, batches: tuple[int, ...] = (1, 2, 4)) -> dict:
    """`run_batch` images per second at batch 1, 2, 4 on the fastest CPU backend (an engine dir built with
    --max-batch 4), reference features cached: what `acsdk generate --batch-size N` gets."""
    import acsdk
    from acsdk.testing import make_box_mask, make_texture

    synth = acsdk.Synthesizer(engines(config, max_batch=max(batches)), device="cpu")
    size = synth.parts.config.height
    _, _, ref, ref_mask = _scene(size)
    features = synth.encode_reference(ref, ref_mask, PROMPT)
    jobs = [
        {"image": make_texture(size, seed=i), "mask": make_box_mask(size, size // 3, size // 4, size // 4, size // 5),
         "prompt": PROMPT, "reference": features, "seed": i}
        for i in range(max(batches))
    ]  # fmt: skip
    backend = synth.parts.engines["unet"].backend
    out = {"backend": backend}
    for b in batches:
        stats = measure(lambda b=b: synth.run_batch(jobs[:b], batch_size=b, num_inference_steps=steps), 1, 2)
        out[str(b)] = {"seconds_per_call": stats.as_dict(), "images_per_s": b / stats.median}
        log.info("batch %d on %s: %.3f images/s", b, backend, b / stats.median)
    return out


def end_to_end_one(synth, settings: dict, repeat: int) -> dict:
    size = synth.parts.config.height
    image, mask, ref, ref_mask = _scene(size)
    features = synth.encode_reference(ref, ref_mask, PROMPT, asea_steps=settings["asea_steps"])
    cached = {k: v for k, v in settings.items() if k != "asea_steps"}

    def fresh():
        synth.clear_caches()  # no reuse: CSM + ASEA for every image
        return synth.run(image, mask, PROMPT, ref, ref_mask, **settings)

    def encode():
        synth.clear_caches()
        return synth.encode_reference(ref, ref_mask, PROMPT, asea_steps=settings["asea_steps"])

    e2e = measure(fresh, warmup=1, repeat=repeat)
    cached_stats = measure(lambda: synth.run(image, mask, PROMPT, reference=features, **cached), 1, repeat)
    encoding = measure(encode, 1, repeat)
    ledger = instrument(synth.parts.engines)
    res = synth.run(image, mask, PROMPT, reference=features, **cached)
    in_engines = sum(sum(v) for v in ledger.values())
    total = res.timings["total"]
    return {
        "end_to_end": e2e.as_dict(),
        "cached_reference": cached_stats.as_dict(),
        "reference_encoding": encoding.as_dict(),
        "overhead": {
            "total_s": total,
            "component_calls_s": in_engines,
            "fraction": max(0.0, (total - in_engines) / total),
            "calls": {k: len(v) for k, v in ledger.items()},
        },
        "stages": dict(res.timings),
    }


def end_to_end(ckpt: Path, engine_dir: Path, repeat: int, steps: int) -> dict:
    """Per image at the paper's settings: fresh reference, cached reference, reference encoding, overhead."""
    settings = dict(PAPER, num_inference_steps=steps)
    out = {}
    for name, make in backends_for(ckpt, engine_dir).items():
        out[name] = r = end_to_end_one(make(), settings, repeat)
        log.info(
            "%s: e2e %.3f s, cached ref %.3f s, overhead %.1f %%",
            name,
            r["end_to_end"]["median"],
            r["cached_reference"]["median"],
            100 * r["overhead"]["fraction"],
        )
    return out


def diffusers_baseline(ckpt: Path, repeat: int, steps: int) -> dict:
    """diffusers' own inpainting pipeline driving the same SGA UNet, same settings, cached reference tokens."""
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline
    from PIL import Image

    import acsdk

    synth = acsdk.Synthesizer.from_checkpoint(ckpt)
    model_parts = synth.parts
    from acsdk.models import AnomalyControlModel

    model = AnomalyControlModel.from_pretrained(ckpt)
    pipe = StableDiffusionInpaintPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=DDIMScheduler.from_config(model.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    size = model.config.height
    image, mask, ref, ref_mask = _scene(size)
    features = synth.encode_reference(ref, ref_mask, PROMPT, asea_steps=PAPER["asea_steps"])
    text = synth._encode_text([model.config.negative_prompt, PROMPT])
    uncond_sem = model_parts.unconditional_tokens
    cond = torch.cat([text[1:], features.tokens], dim=1)
    neg = torch.cat([text[:1], uncond_sem], dim=1)
    scale = {"semantic_scale": torch.ones(1)}

    def run_diffusers():
        return pipe(
            prompt_embeds=cond,
            negative_prompt_embeds=neg,
            image=Image.fromarray(image),
            mask_image=Image.fromarray(mask),
            height=size,
            width=size,
            strength=PAPER["strength"],
            num_inference_steps=steps,
            guidance_scale=PAPER["guidance_scale"],
            generator=torch.Generator().manual_seed(0),
            cross_attention_kwargs=scale,
        )

    cached = {k: v for k, v in PAPER.items() if k != "asea_steps"}
    cached["num_inference_steps"] = steps
    return {
        "diffusers_inpaint_pipeline": measure(run_diffusers, 1, repeat).as_dict(),
        "acsdk_torch_reference": measure(
            lambda: synth.run(image, mask, PROMPT, reference=features, **cached), 1, repeat
        ).as_dict(),
    }


def cold_start(ckpt: Path, engine_dir: Path, steps: int) -> dict:
    out = {}
    runs = [("torch", ckpt), ("onnxruntime", engine_dir)] + ([("openvino", engine_dir)] if _openvino() else [])
    for backend, path in runs:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.coldstart",
                "--backend",
                backend,
                "--path",
                str(path),
                "--steps",
                str(steps),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        out[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
        log.info("cold start %s: %s", backend, out[backend])
    return out


def scaling(config: str, ckpt: Path, repeat: int) -> dict:
    """UNet (CFG batch) latency vs resolution, and vs batch at the preset's resolution, per backend."""
    from acsdk.models.checkpoint import Checkpoint
    from export.specs import SPECS, Dims
    from runtime.manifest import Manifest

    cfg = CONFIGS[config]
    reader = Checkpoint(ckpt)
    spec = SPECS["unet"]
    module = spec.build_module(reader)
    by_res, by_batch = {}, {}
    for res in cfg.resolutions:
        engines_ = component_engines(Manifest.load(engines(config, res, components=["unet"])), "unet")
        dims = Dims.from_configs(reader.configs, res, res)
        batches = cfg.batches if res == cfg.resolution else (2,)
        for batch in batches:
            inputs = spec.sample_inputs(dims, batch=batch)
            with torch.no_grad():
                row = {"torch": measure(lambda i=inputs: module(**i), 1, repeat).as_dict()}
                for label, e in engines_.items():
                    row[label] = measure(lambda i=inputs, e=e: e.run(i), 1, repeat).as_dict()
            if batch == 2:
                by_res[res] = row
            if res == cfg.resolution:
                by_batch[batch] = row
            log.info("unet %d px batch %d: %s", res, batch, {k: round(v["median"], 3) for k, v in row.items()})
    return {"resolution": by_res, "batch": by_batch}


def charts(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    e2e = results.get("end_to_end")
    if e2e:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = list(e2e)
        for i, key in enumerate(("end_to_end", "cached_reference")):
            vals = [e2e[n][key]["median"] for n in names]
            errs = [
                [e2e[n][key]["median"] - e2e[n][key]["p25"] for n in names],
                [e2e[n][key]["p75"] - e2e[n][key]["median"] for n in names],
            ]
            ax.bar([x + i * 0.4 for x in range(len(names))], vals, 0.4, yerr=errs, label=key.replace("_", " "))
        ax.set_xticks([x + 0.2 for x in range(len(names))], names)
        ax.set_ylabel("seconds per image")
        ax.set_title(f"End to end, paper settings ({results['config']})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "end_to_end.png", dpi=120)
        made.append("end_to_end.png")
    comp = results.get("components")
    if comp:
        fig, ax = plt.subplots(figsize=(8, 3.8))
        keys = list(comp)
        labels = _backends(comp)
        width = 0.8 / len(labels)
        for i, b in enumerate(labels):
            vals = [comp[k][b]["median"] * 1000 for k in keys]
            ax.bar([x + i * width for x in range(len(keys))], vals, width, label=b)
        ax.set_xticks([x + 0.4 for x in range(len(keys))], keys, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("ms per call")
        ax.set_yscale("log")
        ax.set_title("Component latency")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "components.png", dpi=120)
        made.append("components.png")
    sc = results.get("scaling")
    if sc:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
        for ax, (kind, label) in zip(axes, (("resolution", "image side (px)"), ("batch", "UNet batch")), strict=True):
            xs = sorted(sc[kind], key=int)
            for b in _backends(sc[kind]):
                ax.plot([int(x) for x in xs], [sc[kind][x][b]["median"] for x in xs], marker="o", label=b)
            ax.set_xlabel(label)
            ax.set_ylabel("s per UNet call")
            ax.legend()
        fig.suptitle("UNet scaling")
        fig.tight_layout()
        fig.savefig(out / "scaling.png", dpi=120)
        made.append("scaling.png")
    return made


def _backends(rows: dict) -> list[str]:
    """Backend labels present in a section's rows, torch first."""
    seen = {k for r in rows.values() for k, v in r.items() if isinstance(v, dict) and "median" in v}
    return ["torch", *sorted(seen - {"torch"})]


def markdown(results: dict, images: list[str]) -> str:
    env = results["environment"]
    lines = [
        f"# acsdk benchmark — config `{results['config']}`",
        "",
        f"{env['date']}, {env['cpu']}, {env['cores']} cores, torch threads {env['torch_threads']}, "
        f"GPU: {env['gpu'] or 'none'}. Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
        "",
        f"Medians of {results['repeat']} runs after warm-up (p25–p75 in results.json). Random weights.",
        "",
    ]
    e2e = results.get("end_to_end")
    if e2e:
        base = e2e["torch"]["end_to_end"]["median"]
        lines += [
            "## End to end per image (50 steps x strength 0.7 = 35 UNet calls, CFG 7, ASEA 5)",
            "",
            "| backend | fresh reference (s) | cached reference (s) | speed-up vs torch | reference encoding (s) "
            "| runtime overhead |",
            "|---|---|---|---|---|---|",
        ]
        for n, r in e2e.items():
            lines.append(
                f"| {n} | {r['end_to_end']['median']:.3f} | {r['cached_reference']['median']:.3f} | "
                f"{base / r['end_to_end']['median']:.2f}x | {r['reference_encoding']['median']:.3f} | "
                f"{100 * r['overhead']['fraction']:.1f} % |"
            )
        lines.append("")
    comp = results.get("components")
    if comp:
        peaks = env.get("matmul_peaks", {})
        labels = _backends(comp)
        lines += [
            "## Components",
            "",
            f"Machine peaks measured here (2048^3 matmuls, {env['torch_threads']} threads): "
            + ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" for k, v in peaks.items())
            + ". The UNet rows give ms per call, and GFLOP/s achieved for its FLOPs per call.",
            "",
            "| component | " + " | ".join(f"{b} (ms)" for b in labels) + " | best vs torch |",
            "|---|" + "---|" * (len(labels) + 1),
        ]
        for k, r in comp.items():
            cells = []
            for b in labels:
                ms = r[b]["median"] * 1000
                rate = f" ({r['gflop'] / r[b]['median']:.0f} GFLOP/s)" if "gflop" in r else ""
                cells.append(f"{ms:.2f}{rate}")
            best = min(r[b]["median"] for b in labels if b != "torch")
            lines.append(f"| {k} | " + " | ".join(cells) + f" | {r['torch']['median'] / best:.2f}x |")
        unet = next((r for k, r in comp.items() if "gflop" in r), None)
        if unet:
            lines.append(f"\nUNet: {unet['gflop']:.1f} GFLOP per call.")
        lines.append("")
    sc = results.get("scaling")
    if sc:
        labels = _backends(sc["batch"])
        lines += ["## UNet scaling", "", "| case | " + " | ".join(f"{b} (s)" for b in labels) + " |"]
        lines.append("|---|" + "---|" * len(labels))
        for kind in ("resolution", "batch"):
            for x, r in sorted(sc[kind].items(), key=lambda kv: int(kv[0])):
                label = f"{x} px, batch 2" if kind == "resolution" else f"batch {x}"
                lines.append(f"| {label} | " + " | ".join(f"{r[b]['median']:.3f}" for b in labels) + " |")
        lines.append("")
    tp = results.get("throughput")
    if tp:
        lines += [
            f"## Batched generation ({tp['backend']}, `run_batch`, reference cached)",
            "",
            "| batch | s per call | images / s |",
            "|---|---|---|",
        ]
        for b in (k for k in tp if k.isdigit()):
            lines.append(f"| {b} | {tp[b]['seconds_per_call']['median']:.3f} | {tp[b]['images_per_s']:.3f} |")
        lines.append("")
    cs = results.get("cold_start")
    if cs:
        lines += [
            "## Cold start and memory (fresh process each)",
            "",
            "| backend | process start to loaded (s) | to first image (s) | peak RSS (MB) |",
            "|---|---|---|---|",
        ]
        for n, r in cs.items():
            lines.append(f"| {n} | {r['load_s']:.2f} | {r['first_image_s']:.2f} | {r['peak_rss_mb']:.0f} |")
        lines.append("")
    db = results.get("diffusers")
    if db:
        lines += [
            "## Against diffusers",
            "",
            "diffusers' `StableDiffusionInpaintPipeline` driving the same SGA "
            "UNet and modules, same settings and cached semantic tokens:",
            "",
            f"- diffusers: {db['diffusers_inpaint_pipeline']['median']:.3f} s per image",
            f"- acsdk torch reference: {db['acsdk_torch_reference']['median']:.3f} s per image",
            "",
        ]
    lines += [f"![{i}]({i})" for i in images]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    p.add_argument("--config", default="small", choices=sorted(CONFIGS))
    p.add_argument("--out", required=True, help="directory for results.json, report.md and charts")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (after 1 warm-up)")
    p.add_argument("--steps", type=int, default=PAPER["num_inference_steps"], help="DDIM steps (paper: 50)")
    p.add_argument("--update", action="store_true", help="keep the sections already in --out/results.json")
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated sections to skip: components,end_to_end,scaling,throughput,cold_start,diffusers",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in ("benchmarks", "export.build", "acsdk"):
        logging.getLogger(name).setLevel(logging.INFO)
    skip = set(filter(None, args.skip.split(",")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = CONFIGS[args.config]
    results: dict = {"config": args.config, "repeat": args.repeat, "environment": environment()}
    if args.update and (out / "results.json").is_file():
        results = {**json.loads((out / "results.json").read_text()), "environment": environment()}
    if cfg.end_to_end:
        ckpt = checkpoint(args.config)
        edir = engines(args.config)
        sections = {
            "components": lambda: component_latency(ckpt, edir, args.repeat),
            "end_to_end": lambda: end_to_end(ckpt, edir, args.repeat, args.steps),
            "diffusers": lambda: diffusers_baseline(ckpt, args.repeat, args.steps),
            "scaling": lambda: scaling(args.config, ckpt, args.repeat),
            "throughput": lambda: throughput(args.config, args.steps),
            "cold_start": lambda: cold_start(ckpt, edir, args.steps),
        }
    else:
        sections = {"components": lambda: sd15_unet(args.repeat)}
    for name, fn in sections.items():
        if name not in skip:
            results[name] = fn()
            (out / "results.json").write_text(json.dumps(results, indent=2))
    images = charts(results, out)
    (out / "report.md").write_text(markdown(results, images))
    print(f"report: {out / 'report.md'} ({', '.join(images)})")
    return 0


def sd15_unet(repeat: int) -> dict:
    """Real-size UNet calls only (whole images on a CPU take minutes): torch, ONNX Runtime, OpenVINO fp32, bf16
    (where the CPU has it) and INT8 (NNCF on the same graph, 8 random calibration samples: latency only; a
    gated INT8 UNet comes from `export.build --int8`)."""
    from acsdk.models.components import SGAUNet
    from acsdk.models.presets import build_sd15_sga_unet, preset_configs
    from export.onnx_export import export_onnx
    from export.specs import SPECS, Dims
    from runtime.files import cache_dir
    from runtime.onnxruntime_engine import OrtEngine

    dims = Dims.from_configs(preset_configs("sd15"), 512, 512)
    spec = SPECS["unet"]
    module = SGAUNet(build_sd15_sga_unet())
    root = cache_dir() / "bench" / "sd15"
    path = root / "unet.onnx"
    if not path.is_file():
        export_onnx(spec, module, dims, 1, path, 18)
    io = spec.io_entry(dims)
    cpu = torch.device("cpu")
    engines_ = {"onnxruntime-cpu": OrtEngine("unet", path, io["inputs"], io["outputs"], cpu)}
    if _openvino():
        from runtime.openvino_engine import OpenVINOEngine

        cache = root / "cache"

        def ov(file: Path, precision: str) -> OpenVINOEngine:
            return OpenVINOEngine("unet", file, io["inputs"], io["outputs"], precision=precision, cache_dir=cache)

        engines_["openvino-cpu"] = ov(path, "fp32")
        engines_["openvino-cpu-bf16"] = ov(path, "fp16")  # fp16 engines run bf16 on CPUs that have it
        int8 = root / "unet.int8.xml"
        if not int8.is_file():
            from export.int8 import SCOPES, quantize_unet

            samples = [spec.sample_inputs(dims, batch=2, seed=s) for s in range(8)]
            quantize_unet(path, [{k: v.numpy() for k, v in x.items()} for x in samples], int8, SCOPES[0])
        engines_["openvino-cpu-int8"] = ov(int8, "int8")
    rows = {}
    for batch in (2,):
        inputs = spec.sample_inputs(dims, batch=batch)
        with torch.no_grad():
            row = {"torch": measure(lambda i=inputs: module(**i), 1, repeat).as_dict()}
            for label, e in engines_.items():
                row[label] = measure(lambda i=inputs, e=e: e.run(i), 1, repeat).as_dict()
                log.info("sd15 unet batch %d %s: %.2f s", batch, label, row[label]["median"])
            row["gflop"] = flops(module, inputs) / 1e9
        rows[f"unet (batch {batch})"] = row
    return rows


if __name__ == "__main__":
    sys.exit(main())
