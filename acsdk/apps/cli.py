"""The `acsdk` command."""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import ACSDKError, InputError
from ..inference.schedules import SAMPLERS
from ..inference.settings import SamplingSettings
from .evaluate import add_evaluate_parser

RUNTIME_BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")
PAPER = SamplingSettings()  # the flags' defaults


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    s = run_demo(args.out, per_type=args.per_type, seed=args.seed, steps=args.steps, engines=args.engines)
    print(f"acsdk demo: {len(s.images)} synthetic anomalies (procedural MVTec-style data) on {s.backend}")
    print(f"engines: {s.engines} (backend auto: the fastest installed here)")
    print(f"training set: {s.out_dir / 'synthetic'} (<category>/<defect>/image, mask, metadata.jsonl)")
    print(f"contact sheet: {s.contact_sheet}")
    print(f"a small defect on a large image (window vs whole image): {s.out_dir / 'large_image.png'}")
    if s.asea:
        print(f"ASEA in-mask attention r: {s.asea['r_before']:.3f} -> {s.asea['r_after']:.3f}")
    t = s.timings
    print(
        f"mean per image: total {t['total']:.2f} s (denoise {t['denoise']:.2f} s over {int(t['denoise_steps'])} steps)"
    )
    print(f"note: {s.note}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from ..data.generate import generate

    defects = [d.strip() for d in args.defects.split(",") if d.strip()] if args.defects else None
    s = generate(
        args.engines,
        args.data,
        args.category,
        args.per_type,
        args.out,
        defects=defects,
        seed=args.seed,
        sampling=_sampling(args),
        max_mask_fraction=args.max_mask_fraction,
        foreground=not args.no_foreground,
        captions=args.captions,
        roi=args.roi,
        roi_padding=args.roi_padding,
        batch_size=args.batch_size,
        resume=args.resume,
        backend=args.backend,
        device=args.device,
        openvino_device=args.openvino_device,
        low_memory=args.low_memory,
        progress=not args.quiet,
        ray=args.ray,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        max_retries=args.max_retries,
    )
    for defect, n in s.total.items():
        print(f"{s.out_dir / defect}: {n} pairs ({s.written[defect]} new)")
    for w in s.workers:
        rate = "-" if w["images_per_hour"] is None else f"{w['images_per_hour']:.0f} images/h"
        print(f"worker {w['worker']} on {w['device']}: {w['items']} images in {w['seconds']:.1f} s ({rate})")
    if s.skipped:
        print(f"skipped {len(s.skipped)} unreadable inputs (listed in {s.out_dir / 'skipped.json'})")
    print(f"done in {s.seconds:.1f} s; contact sheets: {', '.join(str(p) for p in s.contact_sheets)}")
    return 0


def _import_ip_adapter(args: argparse.Namespace) -> int:
    from ..models.checkpoint import AnomalyControlModel
    from ..models.ip_adapter import import_ip_adapter

    model = AnomalyControlModel.from_pretrained(args.checkpoint)
    import_ip_adapter(model, args.ip_adapter)
    dest = model.save_pretrained(args.out, overwrite=args.force)
    print(f"wrote {dest} (ImageProj and to_k_ip/to_v_ip from {args.ip_adapter}; BlipProj kept)")
    return 0


def _init_checkpoint(args: argparse.Namespace) -> int:
    from ..models.importers import init_checkpoint

    path, how = init_checkpoint(
        args.sd,
        args.blip2,
        args.out,
        ip_adapter=args.ip_adapter,
        num_semantic_tokens=args.num_semantic_tokens,
        height=args.height,
        width=args.width,
        sd_config=args.sd_config,
        reference_window=args.reference_window,
        force=args.force,
        seed=args.seed,
    )
    print(f"wrote {path}")
    print(f"adapter: {how}")
    print(f"next: python -m acsdk.train --checkpoint {path} --data DATA --category C --out ckpt/")
    return 0


def _synth(args: argparse.Namespace) -> int:
    import json

    from PIL import Image

    from runtime.files import atomic_path

    from ..data.runs import engine_scheduler_config
    from ..inference.bank import Bank
    from ..inference.settings import check_seed

    # Everything the run would refuse once the models are open, refused first: outputs, settings against the engine
    # dir's schedule, the seed, the bank.
    out, mask_out = _synth_outputs(args)
    sampling = _sampling(args)
    seed = check_seed("--seed", args.seed)
    if args.bank and (args.reference or args.reference_mask or args.reference_prompt):
        raise InputError("--bank", "a bank instead of --reference/--reference-mask/--reference-prompt", "both")
    sampling.check_schedule(engine_scheduler_config(args.engines))
    bank = Bank.load(args.bank) if args.bank else None
    synth = _synthesizer(args)
    res = synth.run(
        args.image,
        args.mask,
        args.prompt,
        args.reference,
        args.reference_mask,
        reference_prompt=args.reference_prompt,
        bank=bank,
        seed=seed,
        sampling=sampling,
        roi=args.roi,
        roi_padding=args.roi_padding,
        bit_depth=args.bit_depth,
        progress=not args.quiet,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    for im, path in ((res.image, out), (res.mask, mask_out)):
        with atomic_path(path) as tmp:
            im.save(tmp, format=Image.registered_extensions()[path.suffix.lower()])
    print(f"wrote {out} and {mask_out}")
    timings = {k: round(v, 4) for k, v in res.timings.items()}
    print(json.dumps({"timings_s": timings, "windows": res.windows, "asea": res.asea, "notes": res.notes}, indent=2))
    return 0


def _synthesizer(args: argparse.Namespace, **kwargs: Any):
    """The Synthesizer the engine flags name."""
    from ..inference.synthesizer import Synthesizer

    return Synthesizer(
        args.engines,
        backend=args.backend,
        device=args.device,
        openvino_device=args.openvino_device,
        low_memory=getattr(args, "low_memory", None),
        **kwargs,
    )


def _sampling(args: argparse.Namespace) -> SamplingSettings:
    """The SamplingSettings the sampling flags name (checked: a bad value is an InputError naming it)."""
    return PAPER.of(
        num_inference_steps=args.steps,
        strength=args.strength,
        guidance_scale=args.guidance,
        semantic_scale=args.semantic_scale,
        asea_steps=args.asea_steps,
        sampler=args.sampler,
        cfg_cutoff=args.cfg_cutoff,
    )


def _synth_outputs(args: argparse.Namespace) -> tuple[Path, Path]:
    """--out and --mask-out, refused before any work when they would overwrite an input or each other, or name a
    format that cannot hold the result (the input's mode: RGBA or 16-bit in a .jpg, float in a .png)."""
    from PIL import Image

    from ..inference.imaging import load_picture

    out = Path(args.out)
    mask_out = Path(args.mask_out) if args.mask_out else out.with_name(out.stem + "_mask.png")
    inputs = {flag: getattr(args, dest) for flag, dest in _SYNTH_INPUTS if getattr(args, dest)}
    for flag, path in (("--out", out), ("--mask-out", mask_out)):
        for name, given in inputs.items():
            if _same_file(path, Path(given)):
                raise InputError(flag, f"a path other than the input {name}", f"'{path}' (it would overwrite it)")
    if _same_file(out, mask_out):
        raise InputError("--mask-out", "a path other than --out", f"'{mask_out}'")
    mode = load_picture(args.image, "--image", args.bit_depth).mode
    for flag, path, held in (("--out", out, mode), ("--mask-out", mask_out, "L")):
        fmt = Image.registered_extensions().get(path.suffix.lower())
        if fmt is None or fmt not in Image.SAVE:
            raise InputError(flag, "an image file name PIL can write (.png, .tif, .jpg, ...)", f"'{path}'")
        try:
            Image.new(held or "RGB", (1, 1)).save(io.BytesIO(), format=fmt)
            if held is None:
                raise OSError("no PIL mode holds this input's depth and channels")
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(flag, f"a format that holds a {held or 'non-PIL'} image like --image (try .png or .tif)",
                             f"'{path}' ({fmt}: {exc})") from exc  # fmt: skip
    return out, mask_out


_SYNTH_INPUTS = (("--image", "image"), ("--mask", "mask"), ("--reference", "reference"),
                 ("--reference-mask", "reference_mask"))  # fmt: skip


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links, `..` or case-folding filesystems, when both exist)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b) or a.resolve() == b.resolve()
    except OSError:
        return False


def _prepare(args: argparse.Namespace) -> int:
    if Path(args.out).exists() and not args.force:  # refused before the reference side runs, not after
        raise InputError("--out", "a new bank directory (or --force)", f"'{args.out}', which exists")
    synth = _synthesizer(args)
    bank = synth.prepare(
        args.prompt,
        args.reference,
        args.reference_mask,
        reference_prompt=args.reference_prompt,
        negative_prompt=args.negative_prompt,
        asea_steps=args.asea_steps,
    )
    dest = bank.save(args.out, overwrite=args.force)
    ref = "no reference (unconditional semantic tokens)" if args.reference is None else f"reference {args.reference}"
    print(f"wrote {dest}: prompt {args.prompt!r}, {ref}, for engines {args.engines}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    from runtime.manifest import Manifest

    from ..inference.parts import openvino_cache_dir

    synth = _synthesizer(args, verify=not args.no_verify).load()  # what runs: every component opened
    info = synth.info()
    info["openvino_cache"] = _cache_summary(openvino_cache_dir(Manifest.load(args.engines)))
    print(json.dumps(info, indent=2))
    return 0


def _gib(n: int) -> float:
    return round(n / (1 << 30), 3)


def _cache_summary(entry: Path) -> dict:
    """OpenVINO's compiled-model cache in numbers: its total, its cap, and this engine dir's entry."""
    from runtime import model_cache

    listed = model_cache.entries(entry.parent)
    mine = next((e for e in listed if e.path == entry), None)
    total, own = sum(e.bytes for e in listed), mine.bytes if mine else 0
    return {
        "root": str(entry.parent),
        "entries": len(listed),
        "bytes": total,
        "gib": _gib(total),
        "cap_gib": _gib(model_cache.max_bytes()),
        "this_engine_dir": {"entry": entry.name, "bytes": own, "gib": _gib(own)},
    }


def _cache(args: argparse.Namespace) -> int:
    """List OpenVINO's compiled-model cache, or prune it (least recently used entries first; entries in use stay)."""
    import time

    from runtime import model_cache
    from runtime.manifest import MANIFEST_NAME, manifest_sha256

    if not args.prune and (args.all or args.max_gb is not None):
        raise InputError("--all" if args.all else "--max-gb", "--prune beside it (without it, cache only lists)",
                         "no --prune")  # fmt: skip
    if args.all and args.max_gb is not None:
        raise InputError("--max-gb", "either --all or --max-gb", "both")
    root = model_cache.openvino_cache_root()
    if args.prune:
        if args.all:
            cap = 0
        elif args.max_gb is not None:
            try:
                cap = model_cache.gib_to_bytes(args.max_gb, "--max-gb")
            except model_cache.CacheSizeError as exc:
                raise InputError("--max-gb", exc.expected, exc.got) from exc
        else:
            cap = model_cache.max_bytes()
        removed = model_cache.prune(root, cap)
        for e in removed:
            print(f"removed {e.name} ({_gib(e.bytes)} GiB, engine dir {e.source or 'unknown'})")
    listed = model_cache.entries(root)
    print(f"OpenVINO model cache {root}: {len(listed)} entries, {_gib(sum(e.bytes for e in listed))} GiB "
          f"(cap {_gib(model_cache.max_bytes())} GiB, ${model_cache.MAX_GB_ENV})")  # fmt: skip
    for e in reversed(listed):  # the most recently used first
        note = ""
        if e.source is None:
            note = "engine dir unknown"
        elif not (Path(e.source) / MANIFEST_NAME).is_file():
            note = "engine dir gone"
        elif not e.name.startswith(manifest_sha256(e.source)[:16]):
            note = "engine dir rebuilt since"
        if model_cache.in_use(e.path):
            note = ", ".join(filter(None, ["in use", note]))
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        print(f"  {_gib(e.bytes):9.3f} GiB  {used}  {e.name}  {e.source or '-'}{f'  ({note})' if note else ''}")
    return 0


def _playground(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise ACSDKError("acsdk playground needs the app extra: pip install 'acsdk[app]'") from exc
    from .demo import demo_engines
    from .playground import Playground
    from .playground_ui import launch, page_url

    args.engines = args.engines or str(demo_engines())
    play = Playground(_synthesizer(args), args.engines, args.data, args.category, args.out)
    print(f"acsdk playground on {page_url(args.host, args.port)} (Ctrl+C stops it)")
    launch(play, args.host, args.port)
    return 0


TUNE_DESCRIPTION = """\
Measure on your own engines and data how few UNet calls keep the picture. A grid of (sampler: ddim, dpmpp-2m;
UNet calls per image: --calls; CFG cut-off: none or 0.5) runs on --defects defect types x --seeds good images
from --data; every image is compared with the default's (DDIM, 50 steps x 0.7 = 35 calls) and with a 350-call
DDIM solution by the INT8 gate's numbers (mean <= 2, p99 <= 8 grey levels inside the mask, PSNR >= 35 dB), and
timed on the engines' backend after an untimed warm-up. Every setting is checked against the engine dir's
scheduler before the first image. The recommendation is the setting with the fewest UNet rows per image
(calls x CFG batch: 2 per call with guidance, 1 after a cut-off; mean over all scenes) that passes the gate
against the default, ties broken by the time."""
TUNE_EPILOG = """\
writes --out/tune.md (the table, the recommendation and its `acsdk generate` line), tune.json and tune.png
(distance to the fine solution against the calls), and prints the table. Example:
  acsdk tune --engines engines/ --data mvtec/ --category bottle --calls 7,14,20,35"""


def _tune(args: argparse.Namespace) -> int:
    from .tune import table, tune

    try:
        calls = tuple(int(c) for c in args.calls.split(",") if c.strip())
    except ValueError as exc:
        raise InputError("--calls", "comma-separated integers, e.g. 7,14,35", repr(args.calls)) from exc
    synth = _synthesizer(args)
    try:
        report = tune(synth, args.data, args.category, args.out, defects=args.defects, seeds=args.seeds, calls=calls,
                      engines=args.engines)  # fmt: skip
    except InputError as exc:  # the library names its argument; here it is a flag
        if exc.argument not in ("calls", "defects", "seeds"):
            raise
        raise InputError(f"--{exc.argument}", exc.expected, exc.got) from exc
    print(table(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acsdk", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="synthesize a few anomalies on the embedded default model, offline")
    demo.add_argument("--out", default="acsdk-demo", help="output directory (default: ./acsdk-demo)")
    demo.add_argument("--per-type", type=int, default=2, help="synthetic images per defect type (3 types)")
    demo.add_argument("--engines", help="use this engine dir instead of compiling the demo model")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=PAPER.num_inference_steps, help="DDIM steps before strength")
    demo.set_defaults(func=_demo)

    def engine_args(p: argparse.ArgumentParser, engines_help: str | None = None) -> None:
        """The engine flags; with `engines_help`, --engines is optional (a default the help names)."""
        p.add_argument("--engines", required=engines_help is None,
                       help=engines_help or "engine dir built by `python -m export.build`")  # fmt: skip
        p.add_argument(
            "--backend",
            default="auto",
            choices=RUNTIME_BACKENDS,
            help="auto: on a CUDA GPU TensorRT plans when the dir has them, else ONNX Runtime; on a CPU OpenVINO "
            "when installed, else ONNX Runtime",
        )
        p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
        p.add_argument("--openvino-device", default="CPU", help="OpenVINO device: CPU, GPU, NPU (backend openvino)")
        p.add_argument(
            "--low-memory",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="hold one component in memory at a time: each is released when its stage ends and reopened (from "
            "OpenVINO's model cache) when next needed. Default: chosen when this host has too little memory free "
            "to hold every component (said in the log); --no-low-memory holds them anyway",
        )

    def reference_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reference", help="a reference image showing the defect")
        p.add_argument("--reference-mask", help="the reference's defect mask")
        p.add_argument("--reference-prompt", help="sentence for the reference (default: --prompt)")
        asea_arg(p)

    def asea_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--asea-steps", type=int, default=PAPER.asea_steps, help="ASEA optimisation steps (paper: 5)")

    def sampling_args(p: argparse.ArgumentParser) -> None:
        """The SamplingSettings flags, defaults from the object (written once, there)."""
        p.add_argument(
            "--steps", type=int, default=PAPER.num_inference_steps, help="DDIM steps before strength (paper: 50)"
        )
        p.add_argument(
            "--strength", type=float, default=PAPER.strength, help="how far to noise the input, (0, 1] (paper: 0.7)"
        )
        p.add_argument(
            "--guidance", type=float, default=PAPER.guidance_scale, help="classifier-free guidance scale (paper: 7)"
        )
        p.add_argument("--semantic-scale", type=float, default=PAPER.semantic_scale, help="SGA lambda (paper: 1.0)")
        p.add_argument(
            "--sampler",
            default=PAPER.sampler,
            help=f"one of {', '.join(SAMPLERS)} (paper: ddim); every sampler starts where DDIM-50 starts at --strength",
        )
        p.add_argument(
            "--cfg-cutoff",
            type=float,
            default=PAPER.cfg_cutoff,
            help="fraction of the UNet calls that run guidance (both rows); the rest run the conditional row alone "
            "(default: all)",
        )

    def roi_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--roi",
            choices=("auto", "full"),
            default="auto",
            help="auto: generate in a window around each mask (large images, small defects); full: the whole image "
            "squashed to the model's size",
        )
        p.add_argument("--roi-padding", type=int, default=32, help="image pixels of context around a mask (auto)")

    syn = sub.add_parser("synth", help="synthesize one defect on compiled engines")
    engine_args(syn)
    syn.add_argument("--image", required=True, help="the normal (defect-free) image")
    syn.add_argument("--mask", required=True, help="where to paint the defect (white = defect)")
    what = syn.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help='e.g. "a photo of a bottle with a crack"')
    what.add_argument("--bank", help="a bank from `acsdk prepare` instead of prompts and a reference")
    reference_args(syn)
    syn.add_argument("--out", required=True, help="output image path (.png)")
    syn.add_argument("--mask-out", help="label mask path (default: <out>_mask.png)")
    syn.add_argument("--seed", type=int, default=0)
    sampling_args(syn)
    roi_args(syn)
    syn.add_argument("--bit-depth", type=int, help="bit depth of integer images (e.g. 12 for 12-bit data in 16-bit)")
    syn.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    syn.set_defaults(func=_synth)

    play = sub.add_parser("playground", help="a browser page to try masks, references and settings (the app extra)")
    engine_args(play, "engine dir (default: the shipped demo model)")
    play.add_argument("--data", help="MVTec AD root to pick good images and references from (read only)")
    play.add_argument("--category", help="the category under --data, e.g. bottle")
    play.add_argument("--out", default="acsdk-playground", help="where Save writes pairs (the only place written)")
    play.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    play.add_argument("--port", type=int, default=7860)
    play.set_defaults(func=_playground)

    tun = sub.add_parser(
        "tune",
        help="measure which sampler, UNet call count and CFG cut-off keep the picture on your data",
        description=TUNE_DESCRIPTION,
        epilog=TUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    engine_args(tun)
    tun.add_argument("--data", required=True, help="MVTec AD root (<category>/train/good, test/<defect>, ...)")
    tun.add_argument("--category", required=True, help="e.g. bottle")
    tun.add_argument("--out", default="acsdk-tune", help="where tune.md, tune.json and tune.png go")
    tun.add_argument("--defects", type=int, default=2, help="defect types measured (default 2)")
    tun.add_argument("--seeds", type=int, default=2, help="targets per defect type (default 2)")
    tun.add_argument("--calls", default="7,10,14,20,35", help="UNet calls per image to try (default 7,10,14,20,35)")
    tun.set_defaults(func=_tune)

    gen = sub.add_parser("generate", help="synthesize a training set from MVTec-shaped data (resumable)")
    engine_args(gen)
    gen.add_argument("--data", required=True, help="MVTec AD root (<category>/train/good, test/<defect>, ...)")
    gen.add_argument("--category", required=True, help="e.g. bottle")
    gen.add_argument("--defects", help="comma-separated defect types (default: all with references)")
    gen.add_argument("--per-type", type=int, required=True, help="pairs to write per defect type")
    gen.add_argument("--out", required=True, help="output root; writes OUT/<category>/<defect>/{image,mask}/")
    gen.add_argument("--resume", action="store_true", help="continue an interrupted run with the same settings")
    gen.add_argument("--seed", type=int, default=0, help="index i of a defect depends only on (seed, defect, i)")
    sampling_args(gen)
    asea_arg(gen)
    gen.add_argument("--max-mask-fraction", type=float, default=0.25, help="largest target mask, as image fraction")
    gen.add_argument("--no-foreground", action="store_true", help="do not keep target masks on the object")
    gen.add_argument("--captions", help="JSON mapping image file -> sentence (overrides the prompt template)")
    roi_args(gen)
    gen.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="targets per UNet call (up to the engine dir's --max-batch); results equal batch 1 within 1 grey level",
    )
    ray = gen.add_argument_group('Ray (pip install "acsdk[ray]"): spread the work over processes, GPUs and nodes')
    ray.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="auto|HOST:PORT",
        help="auto: start Ray on this machine (or use RAY_ADDRESS); HOST:PORT: attach to `ray start --head`",
    )
    ray.add_argument(
        "--workers",
        type=int,
        help="Ray workers, each with its own Synthesizer (default: one per GPU with --gpus-per-worker, else 1)",
    )
    ray.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per worker (0: CPU workers)")
    ray.add_argument("--cpus-per-worker", type=int, help="CPU threads per worker (default: the CPUs split evenly)")
    ray.add_argument("--max-retries", type=int, default=3, help="restarts of a dead worker and retries of its chunk")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_generate)

    prep = sub.add_parser("prepare", help="the reference side of one defect type, once, for the native runtime")
    engine_args(prep)
    prep.add_argument("--prompt", required=True, help='e.g. "a photo of a bottle with a crack"')
    reference_args(prep)
    prep.add_argument("--negative-prompt", help="CFG's negative prompt (default: the checkpoint's)")
    prep.add_argument("--out", required=True, help="bank directory to write, e.g. bank/crack")
    prep.add_argument("--force", action="store_true", help="replace an existing bank directory")
    prep.set_defaults(func=_prepare)

    inf = sub.add_parser("info", help="show what an engine dir runs on here (backends, providers, precision)")
    inf.add_argument("engines", help="engine dir")
    inf.add_argument("--backend", default="auto", choices=RUNTIME_BACKENDS)
    inf.add_argument("--openvino-device", default="CPU")
    inf.add_argument("--device", default=None)
    inf.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the engine files")
    inf.set_defaults(func=_info)

    cac = sub.add_parser(
        "cache",
        help="list or prune OpenVINO's compiled-model cache (~/.cache/acsdk/openvino/)",
        description="OpenVINO's compiled models, one entry per engine dir and host: size, last use, engine dir. "
        "Opening an entry evicts the least recently used others over the cap ($ACSDK_OPENVINO_CACHE_MAX_GB, default "
        "20 GiB); entries in use by any process are never removed.",
    )
    cac.add_argument("--prune", action="store_true", help="remove least recently used entries down to the cap")
    cac.add_argument("--max-gb", help="with --prune: the size to prune down to, in GiB (instead of the cap)")
    cac.add_argument("--all", action="store_true", help="with --prune: remove every entry not in use")
    cac.set_defaults(func=_cache)

    ini = sub.add_parser(
        "init-checkpoint",
        help="build an acsdk checkpoint from public SD-1.5-inpainting and BLIP-2 weights",
        description="SD: a diffusers folder, a single-file .safetensors (LDM/A1111 keys) or a hub id; BLIP-2: a "
        "transformers Blip2ForImageTextRetrieval folder (Salesforce/blip2-itm-vit-g) or its hub id. Safetensors "
        "only: pickled .ckpt/.bin files are refused.",
    )
    ini.add_argument("--sd", required=True, help="Stable Diffusion inpainting: folder, .safetensors file or hub id")
    ini.add_argument("--blip2", required=True, help="BLIP-2 stage 1 (blip2-itm-vit-g): folder or hub id")
    ini.add_argument("--out", required=True, help="checkpoint directory to write")
    ini.add_argument("--ip-adapter", help="start the adapter from IP-Adapter weights (ip-adapter_sd15.safetensors)")
    ini.add_argument("--num-semantic-tokens", type=int, default=4, help="semantic tokens F_c (IP-Adapter: 4)")
    ini.add_argument("--height", type=int, help="model resolution (default: the UNet's, 512 for SD-1.5)")
    ini.add_argument("--width", type=int, help="model resolution (default: the UNet's, 512 for SD-1.5)")
    ini.add_argument("--sd-config", help="diffusers folder to read a single file against (default: shipped SD-1.5)")
    ini.add_argument("--seed", type=int, default=0, help="seed of the randomly initialised projections")
    ini.add_argument(
        "--reference-window",
        choices=("defect", "full"),
        default="defect",
        help="what CSM reads of a reference: a window around its defect (default; small defects on large images) "
        "or the whole image (the paper, on MVTec-sized images). Training and inference both follow it",
    )
    ini.add_argument("--force", action="store_true", help="replace --out if it exists")
    ini.set_defaults(func=_init_checkpoint)

    imp = sub.add_parser("import-ip-adapter", help="start a checkpoint's adapter from IP-Adapter weights")
    imp.add_argument("--checkpoint", required=True, help="an acsdk checkpoint directory (the base)")
    imp.add_argument("--ip-adapter", required=True, help="ip-adapter .bin or .safetensors file")
    imp.add_argument("--out", required=True, help="where to write the new checkpoint")
    imp.add_argument("--force", action="store_true", help="replace --out if it exists")
    imp.set_defaults(func=_import_ip_adapter)
    add_evaluate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except ACSDKError as exc:  # 2: fix the arguments; 1: the work failed on good ones (see ACSDKError.exit_code)
        kind = "error" if exc.exit_code == 2 else "failed"
        print(f"acsdk {args.command}: {kind}: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
