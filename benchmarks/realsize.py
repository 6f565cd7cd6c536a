"""The real-size proof: public SD-1.5-inpainting + blip2-itm-vit-g layouts (random weights, exact public configs)
-> init-checkpoint -> export.build fp32 and fp16 (all six components, verified) -> one 512 x 512 image each.

    python -m benchmarks.realsize --work /tmp/realsize [--steps 4]

Each stage runs in its own process (so its peak resident memory is its own and freed after) and records seconds,
peak RSS and its results in WORK/stages/<stage>.json; a rerun skips finished stages. WORK/report.md and
report.json gather them. Needs ~45 GB of disk and ~14 GB of RAM; about 40 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("sources", "init_folder", "init_single_file", "export_fp32", "export_fp16", "synth_fp32", "synth_fp16")
log = logging.getLogger("benchmarks.realsize")


def _stage(name: str, work: Path, steps: int, preset: str) -> dict:
    from safetensors.torch import load_file

    from acsdk.models.importers import init_checkpoint
    from acsdk.testing import PublicSources, write_public_sources

    public = work / "public"
    src = PublicSources(
        public / "sd",
        public / "sd.safetensors",
        public / "sd-config",
        public / "blip2",
        public / "ip-adapter.safetensors",
    )
    if name == "sources":
        shutil.rmtree(public, ignore_errors=True)  # this script's own output, from an earlier run
        write_public_sources(preset, public)
        sizes = {p.name: round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**30, 2) for p in
                 (src.sd_folder, src.blip2_folder)}  # fmt: skip
        return {"gib": {**sizes, "sd.safetensors": round(src.sd_single_file.stat().st_size / 2**30, 2)}}
    if name == "init_folder":
        # With IP-Adapter weights in the published layout: the semantic branch is live, so every component's
        # verification (the Q-Former's included) compares non-trivial numbers.
        _, how = init_checkpoint(src.sd_folder, src.blip2_folder, work / "ckpt", ip_adapter=src.ip_adapter, force=True)
        return {"adapter": how}
    if name == "init_single_file":
        # At real size read against the SD-1.5 configs and CLIP tokenizer shipped in the package, as a user's is.
        config = None if preset == "sd15" else src.sd_config
        out, _ = init_checkpoint(
            src.sd_single_file, src.blip2_folder, work / "ckpt-single", sd_config=config, force=True
        )
        same = {}
        for part in ("unet", "vae", "text_encoder"):
            a = {
                k: v for f in sorted((work / "ckpt" / part).glob("*.safetensors")) for k, v in load_file(str(f)).items()
            }
            b = {k: v for f in sorted((out / part).glob("*.safetensors")) for k, v in load_file(str(f)).items()}
            same[part] = a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
        shutil.rmtree(out)
        return {"weights_equal_to_folder_import": same}
    if name.startswith("export_"):
        from export.build import build_engine_dir
        from runtime.manifest import Manifest

        fp16 = name.endswith("fp16")
        out = build_engine_dir(work / "ckpt", work / f"engines-{name[7:]}", fp16=fp16, force=True, progress=True)
        comps = Manifest.load(out).components
        return {
            "components": {
                n: {
                    "precision": e["precision"],
                    "export_seconds": e["export_seconds"],
                    "peak_rss_mb": e["peak_rss_mb"],
                    "verification": [
                        {k: v[k] for k in ("artifact", "max_abs", "max_rel", "reference_scale", "passed", "cases")}
                        for v in e["verification"]
                    ],
                }
                for n, e in comps.items()
            }
        }
    if name.startswith("synth_"):
        import acsdk
        from acsdk.testing import make_box_mask, make_defect_pair, make_texture

        t0 = time.perf_counter()
        synth = acsdk.Synthesizer(work / f"engines-{name[6:]}", backend="onnxruntime", device="cpu")
        load_s = time.perf_counter() - t0
        ref, ref_mask = make_defect_pair(512, seed=3)
        res = synth.run(
            make_texture(512, seed=1),
            make_box_mask(512, 200, 220, 90, 70),
            "a photo of a metal plate with a hole",
            ref,
            ref_mask,
            seed=7,
            num_inference_steps=steps,  # the paper's strength, CFG and ASEA (SamplingSettings' defaults)
        )
        res.image.save(work / f"{name}.png")
        t = res.timings
        return {
            "image_size": list(res.image.size),
            "load_seconds": round(load_s, 2),
            "timings": {k: round(v, 3) for k, v in t.items()},
            "seconds_per_unet_call": round(t["denoise"] / t["denoise_steps"], 3),
            "asea": res.asea,
            "notes": res.notes,
        }
    raise ValueError(name)


def run_stage(name: str, work: Path, steps: int, preset: str) -> None:
    """In this process: run one stage and write its record (the driver starts one process per stage)."""
    from runtime.files import atomic_write
    from runtime.process import peak_rss_mb

    t0 = time.perf_counter()
    record = _stage(name, work, steps, preset)
    record.update(seconds=round(time.perf_counter() - t0, 1), peak_rss_mb=round(peak_rss_mb()))
    atomic_write(work / "stages" / f"{name}.json", json.dumps(record, indent=2))


def report(work: Path) -> str:
    stages = {s: json.loads((work / "stages" / f"{s}.json").read_text()) for s in STAGES}
    lines = ["| stage | seconds | peak RSS (MiB) |", "|---|---:|---:|"]
    lines += [f"| {s} | {r['seconds']:.0f} | {r['peak_rss_mb']} |" for s, r in stages.items()]
    for prec in ("fp32", "fp16"):
        lines += ["", f"export {prec}: per component", "", "| component | precision | export s | peak RSS (MiB) | "
                  "max_abs vs torch fp32 (scale) | cases |", "|---|---|---:|---:|---|---|"]  # fmt: skip
        for n, c in stages[f"export_{prec}"]["components"].items():
            for v in c["verification"]:
                cases = ", ".join(f"{k}: {x['max_abs']:.2e}" for k, x in v["cases"].items())
                lines.append(
                    f"| {n} ({v['artifact'].split('/')[-1]}) | {c['precision']} | {c['export_seconds']:.0f} | "
                    f"{c['peak_rss_mb']} | {v['max_abs']:.2e} ({v['reference_scale']:.2g}) | {cases} |"
                )
    for prec in ("fp32", "fp16"):
        r = stages[f"synth_{prec}"]
        lines += ["", f"Synthesizer on the {prec} engines: {r['image_size'][0]}x{r['image_size'][1]}, "
                  f"{r['seconds_per_unet_call']:.2f} s per UNet call (CFG batch 2), load {r['load_seconds']:.0f} s, "
                  f"stages {r['timings']}, ASEA r {r['asea']['r_before']:.3f} -> {r['asea']['r_after']:.3f}, "
                  f"peak RSS {r['peak_rss_mb']} MiB"]  # fmt: skip
    text = "\n".join(lines) + "\n"
    (work / "report.md").write_text(text)
    (work / "report.json").write_text(json.dumps(stages, indent=2))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.realsize", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="working directory (resumable)")
    p.add_argument("--steps", type=int, default=4, help="DDIM steps before strength 0.7 (default 4: 2 UNet calls)")
    p.add_argument("--redo", choices=STAGES, help="run this stage and the later ones again")
    p.add_argument("--preset", default="sd15", help="model sizes (sd15; tiny for a dry run of the script)")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in this process
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    if args.stage:
        run_stage(args.stage, work, args.steps, args.preset)
        return 0
    redo = STAGES.index(args.redo) if args.redo else len(STAGES)
    for i, stage in enumerate(STAGES):
        record = work / "stages" / f"{stage}.json"
        if record.is_file() and i < redo:
            log.info("stage %s: done before", stage)
            continue
        log.info("stage %s", stage)
        cmd = [sys.executable, "-m", "benchmarks.realsize", "--work", str(work), "--steps", str(args.steps)]
        cmd += ["--preset", args.preset]
        if subprocess.run([*cmd, "--stage", stage]).returncode != 0:
            log.error("stage %s failed", stage)
            return 1
    print(report(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
