"""`python -m export.build`: compile a checkpoint into a verified engine dir.

    python -m export.build --checkpoint ckpt/ --out engines/ --fp16

Every component is exported to ONNX from its spec, checked with onnx.checker, optionally converted to
fp16 and compiled to a TensorRT plan, verified against torch, and listed with sha256 in manifest.json.
The build happens in a temporary sibling of --out and is renamed into place only when everything
passed, so an interrupted or failed build leaves no engine dir behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import gc
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from acsdk.errors import ACSDKError, BackendUnavailableError, CheckpointError
from acsdk.models.checkpoint import Checkpoint, checkpoint_digest
from acsdk.models.config import CONFIG_NAME, Configs
from acsdk.version import __version__
from runtime.compat import parse_compute_capability
from runtime.cpu import isa_summary
from runtime.files import atomic_dir, sha256_file
from runtime.manifest import Manifest, list_files, manifest_sha256, write_manifest
from runtime.process import peak_rss_mb, reset_peak_rss, return_freed_memory
from runtime.tensorrt_engine import tensorrt_usable
from runtime.versions import tool_versions

from . import int8 as int8_mod
from . import tensorrt as trt_build
from . import verify as verification
from .errors import BuildArgumentError, BuildError
from .onnx_export import artifact_files, convert_fp16, export_onnx
from .specs import QUANTIZED, SPECS, Dims

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
# What the engine dir is built for: ONNX files (run by ONNX Runtime), or ONNX files plus TensorRT plans.
BACKENDS = ("auto", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class BuildSettings:
    height: int
    width: int
    fp16: bool
    backend: str  # resolved: "onnxruntime" or "tensorrt"
    max_batch: int
    opset: int
    verify: bool
    int8: bool = False
    fp8: bool = False


def resolve_backend(requested: str) -> str:
    if requested not in BACKENDS:
        raise BuildArgumentError(f"--backend: expected one of {', '.join(BACKENDS)}, got '{requested}'")
    if requested == "onnxruntime":
        return "onnxruntime"
    ok, reason = tensorrt_usable()
    if requested == "tensorrt" and not ok:
        raise BackendUnavailableError(
            f"--backend tensorrt: TensorRT cannot be used here ({reason}). "
            "`--backend onnxruntime` builds ONNX engines that run on this machine."
        )
    if not ok:
        log.info("backend auto: ONNX only (%s)", reason)
    return "tensorrt" if ok else "onnxruntime"


def build_plans(
    name: str,
    root: Path,
    graphs: dict[str, Path],
    profile: dict,
    io: dict,
    ref: verification.Reference | None,
    timing_cache: Path | None,
) -> list[dict]:
    """TensorRT plans for one component, one per precision, each parsed from that precision's ONNX into a strongly
    typed network (the fp16 plan runs the fp16 graph with its fp32 islands, as every other backend does), named
    for the TensorRT version and GPU, and verified on the GPU against the reference; a plan without that check is
    recorded as unverified, which the runtime refuses unless told."""
    from runtime.versions import module_version

    gpu = trt_build.gpu_info() or {}
    version = module_version("tensorrt") or "unknown"
    out = []
    for prec, graph in graphs.items():
        file = trt_build.plan_filename(
            name, prec, trt_version=version, compute_capability=gpu.get("compute_capability", "?")
        )
        plan = root / "plans" / file
        try:
            info = trt_build.build_plan(graph, plan, profile, prec, timing_cache=timing_cache)
        except trt_build.TensorRTBuildError as exc:
            raise trt_build.TensorRTBuildError(f"{name} ({prec}): {exc}") from exc
        art = {
            "format": "tensorrt",
            "precision": prec,
            "file": plan.relative_to(root).as_posix(),
            "onnx": graph.relative_to(root).as_posix(),
            **{k: v for k, v in info.items() if k != "profile"},
        }
        if ref is None:
            art["verification"] = {"passed": False, "reason": "built with --no-verify"}
        else:
            art["verification"] = verify_plan(SPECS[name], ref, plan, io, art, prec)
            log.info(
                "%s %s: max_abs %.3g %s", name, file, art["verification"]["max_abs"], art["verification"]["passed"]
            )
        out.append(art)
    return out


def verify_plan(spec, ref: verification.Reference, plan: Path, io: dict, recorded: dict, precision: str) -> dict:
    """Run a freshly built plan on the GPU on the verification cases against the reference outputs."""
    import torch

    from runtime.tensorrt_engine import TensorRTEngine

    engine = TensorRTEngine(
        spec.name, plan, io["inputs"], io["outputs"], recorded, torch.device("cuda"), cuda_graphs=False,
        allow_unverified=True,
    )  # fmt: skip

    def run(feeds):
        outs = engine.run(feeds)
        return [outs[t.name] for t in spec.outputs]

    return verification.verify_runner(spec, ref, run, precision, backend="tensorrt")


def _check_resolution(c: Configs, height: int, width: int) -> None:
    # The UNet halves the latent once per down block but the last.
    levels = len(c.unet["block_out_channels"]) - 1
    step = c.vae_scale_factor * 2**levels
    for name, value in (("--height", height), ("--width", width)):
        if value < step or value % 8 or value % step:
            raise BuildArgumentError(
                f"{name}: expected a positive multiple of 8 and of {step} (VAE factor {c.vae_scale_factor} "
                f"x 2^{levels} UNet levels), got {value}"
            )


def _write_runtime_files(ckpt: Checkpoint, root: Path, settings: BuildSettings) -> None:
    """What the runtime needs beside the engines: tokenizers, scheduler, config, ASEA's torch weights."""
    from diffusers import DDIMScheduler

    c = ckpt.configs
    config = dataclasses.replace(ckpt.config, height=settings.height, width=settings.width)
    (root / CONFIG_NAME).write_text(config.to_json())
    c.tokenizer.save_pretrained(root / "tokenizer")
    c.qformer_tokenizer.save_pretrained(root / "qformer_tokenizer")
    DDIMScheduler.from_config(c.scheduler).save_pretrained(root / "scheduler")
    torch_dir = root / "torch"
    torch_dir.mkdir(exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in ckpt.qformer().state_dict().items()}
    save_file(state, str(torch_dir / "qformer.safetensors"))
    (torch_dir / "blip2_config.json").write_text(json.dumps(c.blip2, indent=2))
    with torch.no_grad():
        uncond = ckpt.projection().unconditional().float().contiguous()
    save_file({"unconditional_semantic_tokens": uncond}, str(torch_dir / "constants.safetensors"))


def _model_entry(c: Configs, s: BuildSettings) -> dict:
    return {
        "height": s.height,
        "width": s.width,
        "vae_scale_factor": c.vae_scale_factor,
        "vae_scaling_factor": float(c.vae.get("scaling_factor", 0.18215)),
        "latent_channels": int(c.vae.get("latent_channels", 4)),
        "vision_image_size": c.vision_image_size,
        "attention_grid": list(c.attention_grid),
    }


def _build_component(
    name: str, ckpt: Checkpoint, dims: Dims, s: BuildSettings, root: Path, timing_cache: Path | None
) -> dict:
    """Export one component, verify it, convert it; only this component's weights are in memory meanwhile."""
    spec = SPECS[name]
    t0 = time.perf_counter()
    reset_peak_rss()
    module = spec.build_module(ckpt)
    onnx_dir = root / "onnx"
    fp32_path = export_onnx(spec, module, dims, s.max_batch, onnx_dir / f"{name}.onnx", s.opset)
    ref = verification.reference(spec, module, dims) if s.verify else None
    del module
    gc.collect()
    precision = spec.precision(s.fp16)
    variants = {"fp32": fp32_path}
    if precision == "fp16":
        variants["fp16"] = convert_fp16(fp32_path, onnx_dir / f"{name}.fp16.onnx", spec.fp32_scopes)
    export_s = time.perf_counter() - t0

    # The quantizers (--int8, --fp8) start from the fp32 UNet graph: kept beside the fp16 one.
    quantized = (s.int8 or s.fp8) and name == INT8_COMPONENT
    drop_fp32 = precision == "fp16" and not spec.keep_fp32_variant and not quantized
    plans = []
    if s.backend == "tensorrt":  # each shipped precision's plan from that precision's graph
        shipped = {p: path for p, path in variants.items() if not (p == "fp32" and drop_fp32)}
        profile = spec.profile(dims, s.max_batch)
        plans = build_plans(name, root, shipped, profile, spec.io_entry(dims), ref, timing_cache)
    if drop_fp32:
        for f in artifact_files(fp32_path):  # the fp16 graph was made from it; it does not ship
            f.unlink()
        del variants["fp32"]
    artifacts, checks = [], []
    for prec, path in variants.items():
        artifact = _onnx_artifact(root, path, prec, opset=s.opset)
        if ref is not None:
            result = verification.verify_onnx(spec, ref, path, prec)
            checks.append({"artifact": artifact["file"], **result})
            log.info(
                "%s %s: max_abs %.3g (rel %.3g) %s",
                name,
                artifact["file"],
                result["max_abs"],
                result["max_rel"],
                "ok" if result["passed"] else "FAILED",
            )
        artifacts.append(artifact)
    artifacts += plans
    checks += [{"artifact": p["file"], **p["verification"]} for p in plans if "max_abs" in p["verification"]]
    return {
        **spec.io_entry(dims),
        "precision": precision,
        "profile": spec.profile(dims, s.max_batch),
        "artifacts": artifacts,
        "verification": checks,
        "export_seconds": round(export_s, 3),
        "peak_rss_mb": round(peak_rss_mb()),  # this component's build, load to verification
        "note": spec.note,
    }


INT8_COMPONENT = "unet"  # ~all of the compute: 35 calls per image; the rest runs once or twice


def _gate_lines(tried: list[dict]) -> str:
    """A gate's tries, one clause each, for the error or warning that reports them."""
    clauses = (
        f"{t['scope']}: {t['error']}" if "error" in t else
        f"{t['scope']}: mean {t['mean']:.2f}, p99 {t['p99']:.2f}, PSNR {t['psnr_db']:.1f} dB"
        for t in tried
    )  # fmt: skip
    return "; ".join(clauses)


def _onnx_artifact(root: Path, path: Path, precision: str, **extra: object) -> dict:
    """The manifest entry of an ONNX file under `root`: the graph and its external-data files, if any."""
    rel = [f.relative_to(root).as_posix() for f in artifact_files(path)]
    return {"format": "onnx", "precision": precision, "file": rel[0], "data_files": rel[1:], **extra}


def _artifact_paths(root: Path, art: dict) -> list[Path]:
    return [root / rel for rel in (art["file"], *art.get("data_files", []))]


def _list_changed(root: Path, manifest: dict, changed: list[Path]) -> None:
    """manifest["files"] after the files in `changed` were (re)written or removed: only those are hashed again (at
    real size the rest of the dir is ~10 GB, hashed once when the build listed it)."""
    files = {rel: digest for rel, digest in manifest["files"].items() if (root / rel).is_file()}
    for path in changed:
        if path.is_file():
            files[path.relative_to(root).as_posix()] = sha256_file(path)
    manifest["files"] = dict(sorted(files.items()))


def _forget_compiled(root: Path) -> None:
    """Remove the OpenVINO model-cache entries the calibration and gate Synthesizers made for this build dir: each
    gate scope lists its artifact in a new manifest, hence a new entry (GBs at real size) that nothing reuses."""
    from runtime import model_cache

    gc.collect()  # (a Synthesizer kept alive by a reference cycle still holds its entry)
    removed = model_cache.remove_entries_for(root)
    if removed:
        log.debug("removed %d OpenVINO cache entries of the build's own runs", len(removed))


def _calibrate(root: Path, manifest: dict, plan: int8_mod.Int8Settings, progress: bool = False) -> tuple[list, list]:
    """The UNet inputs the pipeline with its fp32 UNet produces on the calibration scenes, and the held-out gate
    scenes."""
    size = manifest["model"]["height"]  # procedural scenes are square at the model's size
    gate_scenes = plan.gate_scenes(size)
    log.info(
        "quantization: calibrating on %d scenes x %d steps, gating on %d held-out scenes (x2: quantized and fp32) "
        "per scope, up to %d scopes; --calibration-scenes / --gate-scenes / --scene-steps bound it",
        plan.calibration.count, plan.calibration.steps, len(gate_scenes), len(int8_mod.SCOPES),
    )  # fmt: skip
    scenes = plan.calibration.make(size)
    t0 = time.perf_counter()
    calibration = int8_mod.calibration_inputs(root, scenes, plan.calibration.steps, progress)
    _forget_compiled(root)
    manifest["components"][INT8_COMPONENT]["quantization"] = {
        "calibration_scenes": len(scenes),
        "scene_steps": plan.calibration.steps,
        "calibration_samples": len(calibration),
        "calibration_seconds": round(time.perf_counter() - t0, 1),
        "gate_scenes": len(gate_scenes),
        "gate_steps": plan.gate.steps,
    }
    return calibration, gate_scenes


def _gate_scopes(root: Path, manifest: dict, what: str, make, metrics) -> tuple[dict | None, list[dict]]:
    """The quantization scope search every quantized UNet goes through: per scope (widest first), `make(scope)`
    writes the quantized artifact and returns its manifest entry, which is listed (the gate's Synthesizer reads the
    manifest) and gated by `metrics()`; the first that passes is kept. A scope whose quantization raises is
    recorded and the next tried. Returns (the passing artifact or None, every try); on None the UNet's artifacts
    are as they were."""
    entry = manifest["components"][INT8_COMPONENT]
    before = list(entry["artifacts"])
    gate, tried = int8_mod.Gate(), []
    for scope in int8_mod.SCOPES:
        t0 = time.perf_counter()
        gc.collect()  # the last gate's Synthesizers, before a quantizer that holds the model several times over
        return_freed_memory()
        try:
            art = make(scope)
        except (ACSDKError, MemoryError, TypeError, AttributeError, NameError):  # ours, or a bug: not a scope's fate
            raise
        except Exception as exc:  # a quantizer's own failure (NNCF, ONNX Runtime, onnx): recorded, typed, not raw
            tried.append({"scope": scope.name, "passed": False, "error": f"{type(exc).__name__}: {exc}"[:600]})
            log.warning("%s, %s: quantization failed: %s", what, scope.name, tried[-1]["error"], exc_info=True)
            continue
        entry["artifacts"] = [*before, art]
        _list_changed(root, manifest, _artifact_paths(root, art))
        write_manifest(root, manifest)
        record = int8_mod.gate_record(metrics(), gate)
        _forget_compiled(root)
        tried.append({"scope": scope.name, **record, "seconds": round(time.perf_counter() - t0, 1)})
        log.info("%s gate, %s: %s", what, scope.name, record)
        if record["passed"]:
            return art, tried
        for f in _artifact_paths(root, art):
            f.unlink(missing_ok=True)
        entry["artifacts"] = before
        _list_changed(root, manifest, _artifact_paths(root, art))
        write_manifest(root, manifest)
    return None, tried


def _add_int8(
    root: Path,
    manifest: dict,
    plan: int8_mod.Int8Settings,
    data: tuple[list, list] | None = None,
    progress: bool = False,
) -> None:
    """Quantize the UNet from its fp32 ONNX, calibrated on the UNet inputs of the pipeline with its fp32 UNet, and
    gate it on held-out scenes: the widest INT8 scope whose final images pass is kept, in the manifest with its
    numbers; none passing fails. Then the same for TensorRT's Q/DQ graph (which may miss its gate without failing
    the build)."""
    entry = manifest["components"][INT8_COMPONENT]
    fp32 = next(a for a in entry["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32")
    t0 = time.perf_counter()
    calibration, gate_scenes = data or _calibrate(root, manifest, plan, progress)
    xml = root / "openvino" / f"{INT8_COMPONENT}.int8.xml"

    def make(scope: int8_mod.Scope) -> dict:
        int8_mod.quantize_unet(root / fp32["file"], calibration, xml, scope, int8_mod.OVERFLOW_FIX)
        return {
            "format": "openvino",
            "precision": "int8",
            "file": xml.relative_to(root).as_posix(),
            "data_files": [xml.with_suffix(".bin").relative_to(root).as_posix()],
            "calibration_samples": len(calibration),
            "overflow_fix": int8_mod.OVERFLOW_FIX,
            "build_cpu": isa_summary(),
            "scope": scope.name,
        }

    def metrics() -> dict:
        return int8_mod.gate_metrics(root, gate_scenes, plan.gate.steps, progress=progress)

    art, tried = _gate_scopes(root, manifest, "INT8 (OpenVINO)", make, metrics)
    if art is None:
        gate = int8_mod.Gate()
        raise BuildError(
            f"INT8 {INT8_COMPONENT} misses the quality gate against fp32 (mean <= {gate.mean_max}, p99 <= "
            f"{gate.p99_max} grey levels inside the label, PSNR >= {gate.psnr_min} dB over the blend region, on "
            f"{len(gate_scenes)} held-out scenes) in every scope tried ({_gate_lines(tried)}): nothing was written; "
            "build without --int8"
        )
    entry["precision"] = "int8"
    entry["int8_gate"] = {
        **tried[-1],
        "calibration_seed": plan.calibration.seed,
        "gate_seed": plan.gate.seed,
        "tried": tried,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_manifest(root, manifest)
    _add_qdq(root, manifest, (calibration, gate_scenes), plan, "int8", progress)


def _add_qdq(
    root: Path,
    manifest: dict,
    data: tuple[list, list],
    plan: int8_mod.Int8Settings,
    kind: str,
    progress: bool = False,
) -> None:
    """The UNet as a Q/DQ ONNX of `kind` (int8, fp8) for TensorRT's quantized plans (`--from-onnx` builds them on
    the target), from the pipeline's calibration inputs, through the same scope search, gated like the OpenVINO
    INT8 on ONNX Runtime CPU (which runs the Q/DQ arithmetic). An INT8 graph missing the gate, or whose
    quantization fails, is no failure (the OpenVINO INT8 stands; nothing is written for it, the numbers or the
    error are recorded); an FP8 one, asked for with --fp8, fails the build."""
    calibration, gate_scenes = data
    entry = manifest["components"][INT8_COMPONENT]
    fp32 = next(a for a in entry["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32")
    path = root / "onnx" / f"{INT8_COMPONENT}.{kind}.qdq.onnx"
    t0 = time.perf_counter()

    def make(scope: int8_mod.Scope) -> dict:
        int8_mod.quantize_unet_qdq(root / fp32["file"], calibration, path, scope, kind, progress=progress)
        return _onnx_artifact(root, path, kind, quantization="qdq", symmetric=True, per_channel_weights=kind == "int8",
                              scope=scope.name, calibration_samples=len(calibration))  # fmt: skip

    def metrics() -> dict:
        return int8_mod.gate_metrics(root, gate_scenes, plan.gate.steps, "onnxruntime", kind, progress=progress)

    qdq, tried = _gate_scopes(root, manifest, f"Q/DQ {kind}", make, metrics)
    if qdq is not None:
        qdq["gate"] = {**tried[-1], "tried": tried, "seconds": round(time.perf_counter() - t0, 1)}
        write_manifest(root, manifest)
        return
    for f in (path, path.with_name(path.name + ".data")):  # what a quantization that raised may have left
        f.unlink(missing_ok=True)
    lines = _gate_lines(tried)
    if kind == "fp8":
        raise BuildError(
            f"FP8 {INT8_COMPONENT} misses the quality gate against fp32 on ONNX Runtime in every scope tried "
            f"({lines}): nothing was written; build without --fp8"
        )
    entry[f"{kind}_qdq_gate"] = {"passed": False, "tried": tried}
    log.warning("Q/DQ %s %s misses the gate in every scope (%s): none for TensorRT here", kind, INT8_COMPONENT, lines)
    write_manifest(root, manifest)


def build_engine_dir(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fp16: bool = False,
    backend: str = "auto",
    height: int | None = None,
    width: int | None = None,
    max_batch: int = 1,
    opset: int = DEFAULT_OPSET,
    components: list[str] | None = None,
    force: bool = False,
    verify: bool = True,
    timing_cache: str | os.PathLike | None = None,
    int8: bool = False,
    int8_settings: int8_mod.Int8Settings | None = None,
    fp8: bool = False,
    progress: bool = True,
) -> Path:
    """Build (or, with `components` on an existing dir, rebuild part of) an engine dir; return its path."""
    started = time.perf_counter()
    out = Path(out)
    names = list(SPECS) if not components else list(dict.fromkeys(components))
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise BuildArgumentError(f"--components: expected names from {', '.join(SPECS)}, got {', '.join(unknown)}")
    if max_batch < 1:
        raise BuildArgumentError(f"--max-batch: expected an integer >= 1, got {max_batch}")
    for flag, asked in (("--int8", int8), ("--fp8", fp8)):
        if asked and INT8_COMPONENT not in names:
            raise BuildArgumentError(f"{flag} quantizes the {INT8_COMPONENT}: include it in --components")
    if int8 or fp8:
        from runtime.openvino_engine import openvino_usable

        ok, why = openvino_usable()  # the calibration records the pipeline (with its fp32 UNet) on OpenVINO
        if not ok:
            raise BuildArgumentError(f"{'--int8' if int8 else '--fp8'}: {why}")
        if int8_settings is not None and int8_settings.gate_images is not None:
            int8_mod.gate_image_files(int8_settings.gate_images)
    elif int8_settings is not None and int8_settings.gate_images is not None:
        raise BuildArgumentError("--gate-images: expected only with --int8 or --fp8 (it adds images to their gate)")
    if not 18 <= opset <= 23:
        raise BuildArgumentError(f"--opset: expected 18..23 (ONNX Runtime's attention fusions need 18+), got {opset}")
    partial_update = bool(components) and out.exists()
    if out.exists() and not (force or partial_update):
        raise BuildArgumentError(f"--out: '{out}' exists; pass --force to replace it, or --components to update it")
    if not Path(checkpoint).is_dir():
        raise CheckpointError("checkpoint", checkpoint, "not a directory")
    resolved = resolve_backend(backend)
    cache = _timing_cache(timing_cache)

    ckpt = Checkpoint(checkpoint)
    configs = ckpt.configs
    h = ckpt.config.height if height is None else height
    w = ckpt.config.width if width is None else width
    _check_resolution(configs, h, w)
    settings = BuildSettings(h, w, fp16, resolved, max_batch, opset, verify, int8, fp8)
    digest = checkpoint_digest(checkpoint)

    previous: dict = {}
    if partial_update:
        old = Manifest.load(out)
        stored = {"fp8": False, **old.data["settings"]}  # (dirs from before --fp8 was a setting)
        if old.data["source_checkpoint"]["sha256"] != digest or stored != asdict(settings):
            raise BuildArgumentError(
                f"--components: '{out}' was built from another checkpoint or with other settings "
                f"({old.data['settings']}); rebuild it whole with --force"
            )
        previous = old.components

    try:
        with atomic_dir(out, replace=True) as tmp:
            if partial_update:
                shutil.copytree(out, tmp, dirs_exist_ok=True)
                for name in names:
                    for art in previous.get(name, {}).get("artifacts", []):
                        for rel in [art["file"], *art.get("data_files", [])]:
                            (tmp / rel).unlink(missing_ok=True)
            dims = Dims.from_configs(configs, h, w)
            entries = dict(previous)
            bar = tqdm(names, desc="export", unit="component", disable=not progress)
            for name in bar:
                bar.set_postfix_str(name)
                entries[name] = _build_component(name, ckpt, dims, settings, tmp, cache)
            _write_runtime_files(ckpt, tmp, settings)
            failed = [(n, v) for n, e in entries.items() if n in names for v in e["verification"] if not v["passed"]]
            if failed:
                lines = [
                    f"  {n} ({v['artifact']}): max_abs {v['max_abs']:.3g} > allowed "
                    f"{v['tolerance']['atol']} + {v['tolerance']['rtol']} * {v['reference_scale']:.3g}"
                    for n, v in failed
                ]
                raise BuildError("verification against torch failed:\n" + "\n".join(lines))
            manifest = {
                "acsdk_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.perf_counter() - started, 2),
                "source_checkpoint": {"path": str(Path(checkpoint).resolve()), "sha256": digest},
                "settings": asdict(settings),
                "tools": tool_versions(),
                "gpu": trt_build.gpu_info(),
                "model": _model_entry(configs, settings),
                "dims": asdict(dims),  # every size the specs name: what --from-onnx needs without a checkpoint
                "components": {n: entries[n] for n in SPECS if n in entries},
                "files": list_files(tmp),
            }
            if settings.backend == "tensorrt":
                manifest["tensorrt"] = _tensorrt_record()
            write_manifest(tmp, manifest)
            if int8 or fp8:
                plan = int8_settings or int8_mod.Int8Settings()
                data = _calibrate(tmp, manifest, plan, progress)  # once for both
                if int8:
                    _add_int8(tmp, manifest, plan, data, progress)
                if fp8:
                    _add_qdq(tmp, manifest, data, plan, "fp8", progress)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise BuildError(f"no space left on device while building into {out.parent}; nothing was written") from exc
        raise
    log.info("engine dir ready: %s", out)
    return out


def plans_from_onnx(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fp16: bool = False,
    fp8: bool = False,
    max_batch: int | None = None,
    timing_cache: str | os.PathLike | None = None,
    force: bool = False,
    verify: bool = True,
    progress: bool = True,
) -> Path:
    """TensorRT plans built on this machine from the ONNX files of an engine dir made elsewhere (a workstation's
    build shipped to a Jetson): no checkpoint, no torch model. Every source file's sha256 is checked before
    anything is built; the new dir is the source plus the plans, re-hashed, written atomically. Each plan is
    parsed from its own precision's ONNX, strongly typed: the dir's precisions, or with `fp16` an fp16 plan for
    every fp16-capable component (its fp16 ONNX made here with the build's converter when only fp32 shipped);
    verified on this GPU against the fp32 ONNX (else the fp16 one) on ONNX Runtime CPU."""
    started = time.perf_counter()
    out = Path(out)
    src = Manifest.load(source)
    if fp8:
        _check_fp8_here(src)
    for rel in src.data["files"]:
        src.path(rel, verify=True)  # IntegrityError names a changed file: refused before building
    if max_batch is not None and max_batch < 1:
        raise BuildArgumentError(f"--max-batch: expected an integer >= 1, got {max_batch}")
    if "dims" not in src.data:
        raise BuildArgumentError(f"--from-onnx: {source} records no sizes (built by an older acsdk); rebuild it")
    if out.exists() and not force:
        raise BuildArgumentError(f"--out: '{out}' exists; pass --force to replace it")
    cache = _timing_cache(timing_cache)
    ok, why = tensorrt_usable()
    if not ok:
        raise BackendUnavailableError(f"--from-onnx builds TensorRT plans: {why}")
    dims = Dims(**src.data["dims"])
    with atomic_dir(out, replace=force) as tmp:
        shutil.copytree(src.root, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("cache", "plans"))
        manifest = {k: v for k, v in src.data.items() if k != "schema_version"}
        batch = manifest["settings"]["max_batch"] if max_batch is None else max_batch
        for name in tqdm(list(manifest["components"]), desc="plans", unit="component", disable=not progress):
            entry, spec = manifest["components"][name], SPECS[name]
            onnx = {a["precision"]: a for a in entry["artifacts"] if a["format"] == "onnx"}
            reference_graph = tmp / (onnx.get("fp32") or onnx[entry["precision"]])["file"]
            precisions = sorted(p for p in onnx if p != "fp8")  # FP8 plans only when asked for
            if fp16 and spec.fp16:  # fp16 plans; fp32 ones only where fp32 is the NaN fallback
                precisions = ["fp16"] + (["fp32"] if spec.keep_fp32_variant and "fp32" in onnx else [])
                entry["precision"] = "int8" if entry["precision"] == "int8" else "fp16"
            if "int8" in onnx and "int8" not in precisions:  # an INT8 dir's INT8 plan (Q/DQ ONNX) beside fp16
                precisions.append("int8")
            if fp8 and "fp8" in onnx:
                precisions.append("fp8")
                entry["precision"] = "fp8"
            ref = verification.reference_from_onnx(spec, reference_graph, dims) if verify else None
            if "fp16" in precisions and "fp16" not in onnx:  # shipped fp32 only: the fp16 graph is made here
                onnx["fp16"] = _fp16_onnx_here(spec, tmp, reference_graph, ref, entry)
            graphs = {prec: tmp / onnx[prec]["file"] for prec in precisions}
            io = {"inputs": entry["inputs"], "outputs": entry["outputs"]}
            entry["profile"] = spec.profile(dims, batch)
            quantized = {p: graphs.pop(p) for p in list(graphs) if p in QUANTIZED}
            plans = build_plans(name, tmp, graphs, entry["profile"], io, ref, cache)
            for prec, graph in quantized.items():  # each checked against its own Q/DQ graph on ONNX Runtime CPU
                qdq_ref = verification.reference_from_onnx(spec, graph, dims) if verify else None
                plans += build_plans(name, tmp, {prec: graph}, entry["profile"], io, qdq_ref, cache)
            entry["artifacts"] = [a for a in entry["artifacts"] if a["format"] != "tensorrt"] + plans
        manifest.update(
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            build_seconds=round(time.perf_counter() - started, 2),
            settings={**manifest["settings"], "backend": "tensorrt", "max_batch": batch},
            tools=tool_versions(),
            gpu=trt_build.gpu_info(),
            tensorrt=_tensorrt_record(),
            derived_from={"path": str(src.root.resolve()), "manifest_sha256": manifest_sha256(src.root)},
            files=list_files(tmp),
        )
        write_manifest(tmp, manifest)
    log.info("engine dir with TensorRT plans ready: %s", out)
    return out


def _check_fp8_here(src: Manifest) -> None:
    """--fp8 before any work: the dir must hold the FP8 Q/DQ UNet, and this GPU must have FP8 tensor cores."""
    unet = src.components.get(INT8_COMPONENT, {})
    if not any(a["format"] == "onnx" and a["precision"] == "fp8" for a in unet.get("artifacts", [])):
        raise BuildArgumentError(
            f"--fp8: expected an engine dir with the FP8 Q/DQ {INT8_COMPONENT} (`export.build --fp8`), got "
            f"'{src.root}' without one"
        )
    gpu = trt_build.gpu_info()
    if gpu is None:
        return  # no CUDA GPU: tensorrt_usable() refuses the build with that reason
    cc = parse_compute_capability(gpu["compute_capability"])
    if cc is None or cc < int8_mod.FP8_MIN_COMPUTE_CAPABILITY:
        need = ".".join(map(str, int8_mod.FP8_MIN_COMPUTE_CAPABILITY))
        raise BuildArgumentError(
            f"--fp8: expected a GPU with FP8 tensor cores (compute capability >= {need}: Ada, Hopper or newer), got "
            f"{gpu['name']} (compute capability {gpu['compute_capability']}); build INT8 or fp16 plans instead"
        )


def _fp16_onnx_here(spec, root: Path, fp32_graph: Path, ref: verification.Reference | None, entry: dict) -> dict:
    """The fp16 ONNX of a component whose engine dir shipped fp32 only, made on the target with the converter
    and checks `export.build --fp16` uses, and added to the entry as that build would have listed it."""
    path = convert_fp16(fp32_graph, fp32_graph.with_name(f"{spec.name}.fp16.onnx"), spec.fp32_scopes)
    opset = next((a.get("opset") for a in entry["artifacts"] if a["format"] == "onnx"), None)
    artifact = _onnx_artifact(root, path, "fp16", opset=opset)
    if ref is not None:
        result = verification.verify_onnx(spec, ref, path, "fp16")
        entry.setdefault("verification", []).append({"artifact": artifact["file"], **result})
        if not result["passed"]:
            raise BuildError(
                f"{spec.name} ({artifact['file']}): the fp16 ONNX made here failed verification: max_abs "
                f"{result['max_abs']:.3g} (reference scale {result['reference_scale']:.3g})"
            )
    entry["artifacts"].append(artifact)
    return artifact


def _tensorrt_record() -> dict:
    """What the manifest says about the TensorRT that built its plans: version and typing mode."""
    from runtime.compat import TYPING
    from runtime.versions import module_version

    return {"version": module_version("tensorrt"), "typing": TYPING}


def _timing_cache(path: str | os.PathLike | None) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if not path.parent.is_dir():
        raise BuildArgumentError(f"--timing-cache: its folder '{path.parent}' does not exist (the file may not yet)")
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.build",
        description="Compile an acsdk checkpoint into a verified engine dir (ONNX, and TensorRT plans on GPUs).",
        epilog="Exit codes: 0 built, 2 bad arguments or input, 1 build or verification failure.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint directory (the training artifacts)")
    source.add_argument(
        "--from-onnx",
        metavar="ENGINE_DIR",
        help="build TensorRT plans on this machine from the ONNX files of an engine dir made elsewhere (no "
        "checkpoint or torch model needed); the new dir is that one plus verified plans",
    )
    p.add_argument("--out", required=True, help="engine dir to create; refused if it exists unless --force")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="fp16 weights and activations where safe (the Q-Former stays fp32; the VAE decoder also "
        "ships an fp32 variant for NaN fallback)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="onnxruntime: ONNX files only; tensorrt: also TensorRT plans (needs TensorRT 10.x or 11.x and a CUDA "
        "GPU); auto: tensorrt when usable, else onnxruntime (default)",
    )
    p.add_argument("--height", type=int, help="image height the engines run at (default: the checkpoint's)")
    p.add_argument("--width", type=int, help="image width the engines run at (default: the checkpoint's)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="most images per call; profiles cover 1..max (x2 for the CFG UNet and VAE encoder)",
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, 18..23 (default {DEFAULT_OPSET})")
    p.add_argument(
        "--components",
        help=f"comma-separated subset to (re)build, of: {', '.join(SPECS)}. "
        "On an existing --out, updates those components in place",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also an INT8 UNet for OpenVINO (NNCF, calibrated on the UNet inputs the pipeline makes with its fp32 "
        "UNet; with --fp16 the other components run fp16 meanwhile), built only "
        "if its final images pass the gate against fp32 (mean <= 2, p99 <= 8 grey levels in the mask, PSNR >= 35 "
        "dB over the blend region) on scenes held out from calibration; weights at 7 bits so the gate holds on x86 "
        "CPUs with and without VNNI; needs acsdk[openvino]. Changes results within that gate; opt-in",
    )
    p.add_argument(
        "--gate-images",
        type=Path,
        help="with --int8: a directory of your own good images the INT8 gate also generates defects into (a mask "
        "drawn on each, a procedural reference), so the gate covers your domain",
    )
    defaults = int8_mod.Int8Settings()
    p.add_argument(
        "--calibration-scenes",
        type=int,
        help=f"with --int8/--fp8: procedural scenes the pipeline runs to record the fp32 UNet's inputs (default "
        f"{defaults.calibration.count}); fewer is faster and calibrates worse (on the demo model 4 scenes missed the "
        "gate, 12 passed)",
    )
    p.add_argument(
        "--gate-scenes",
        type=int,
        help=f"with --int8/--fp8: held-out scenes each quantization scope is gated on (default {defaults.gate.count}, "
        "plus --gate-images); fewer is faster and weaker evidence",
    )
    p.add_argument(
        "--scene-steps",
        type=int,
        help=f"with --int8/--fp8: DDIM steps of every calibration and gate scene (default {defaults.calibration.steps};"
        " x0.7 UNet calls each). At real size on 2 CPU cores the defaults take hours (docs/real-size.md)",
    )
    p.add_argument(
        "--fp8",
        action="store_true",
        help="with --checkpoint: also an FP8 (E4M3) Q/DQ UNet for TensorRT, calibrated and gated like --int8 (on "
        "ONNX Runtime CPU); with --from-onnx: build its FP8 plan, on GPUs with FP8 tensor cores only (compute "
        "capability >= 8.9: Ada, Hopper; not Orin, A100 or other Ampere cards)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--no-verify", action="store_true", help="skip the ORT-vs-torch check (not recommended)")
    p.add_argument("--timing-cache", help="TensorRT timing cache file to reuse across builds")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    return p


def _check_from_onnx_flags(args: argparse.Namespace) -> None:
    """Flags that shape an export from a checkpoint mean nothing to --from-onnx: refused, not silently ignored."""
    shaping = (
        "height",
        "width",
        "components",
        "int8",
        "gate_images",
        "calibration_scenes",
        "gate_scenes",
        "scene_steps",
    )
    moot = [f"--{n.replace('_', '-')}" for n in shaping if getattr(args, n)]
    moot += ["--opset"] if args.opset != DEFAULT_OPSET else []
    moot += [f"--backend {args.backend}"] if args.backend not in ("auto", "tensorrt") else []
    if moot:
        raise BuildArgumentError(
            f"--from-onnx: expected only --fp16, --fp8, --max-batch, --timing-cache, --force, --no-verify beside it; "
            f"got {', '.join(moot)}, which apply to exports from a checkpoint (the ONNX files are already made)"
        )


def _int8_settings(args: argparse.Namespace) -> int8_mod.Int8Settings | None:
    """The quantization settings the flags ask for; None where they ask for none (the defaults)."""
    bounds = (args.calibration_scenes, args.gate_scenes, args.scene_steps, args.gate_images)
    if all(b is None for b in bounds):
        return None
    if not (args.int8 or args.fp8):
        flag = next(f for f, b in zip(("--calibration-scenes", "--gate-scenes", "--scene-steps", "--gate-images"),
                                      bounds, strict=True) if b is not None)  # fmt: skip
        raise BuildArgumentError(f"{flag}: expected only with --int8 or --fp8 (it shapes their calibration and gate)")
    return int8_mod.Int8Settings.of(*bounds)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    components = [c.strip() for c in args.components.split(",") if c.strip()] if args.components else None
    try:
        if args.from_onnx:
            _check_from_onnx_flags(args)
            out = plans_from_onnx(
                args.from_onnx,
                args.out,
                fp16=args.fp16,
                fp8=args.fp8,
                max_batch=args.max_batch,
                timing_cache=args.timing_cache,
                force=args.force,
                verify=not args.no_verify,
                progress=not args.quiet,
            )
        else:
            out = build_engine_dir(
                args.checkpoint,
                args.out,
                fp16=args.fp16,
                backend=args.backend,
                height=args.height,
                width=args.width,
                max_batch=1 if args.max_batch is None else args.max_batch,
                opset=args.opset,
                components=components,
                force=args.force,
                verify=not args.no_verify,
                timing_cache=args.timing_cache,
                int8=args.int8,
                int8_settings=_int8_settings(args),
                fp8=args.fp8,
                progress=not args.quiet,
            )
    except ACSDKError as exc:  # BuildError and other failures 1, bad arguments 2 (ACSDKError.exit_code)
        print(f"export.build: {'error' if exc.exit_code == 2 else 'build failed'}: {exc}", file=sys.stderr)
        return exc.exit_code
    except FileExistsError as exc:
        print(f"export.build: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"export.build: build failed: {exc}", file=sys.stderr)
        return 1
    manifest = Manifest.load(out)
    print(f"engine dir: {out}")
    for name, entry in manifest.components.items():
        checks = (
            ", ".join(f"{v['artifact']} max_abs {v['max_abs']:.2e}" for v in entry["verification"]) or "not verified"
        )
        print(f"  {name:13s} {entry['precision']}  {checks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
