"""The real-size proof: public SD-1.5-inpainting + blip2-itm-vit-g layouts (random weights, exact public configs)
-> init-checkpoint -> export.build fp32 and fp16 (all six components, verified) -> one 512 x 512 image each.

    python -m benchmarks.realsize --work /tmp/realsize [--steps 4]

Each stage runs in its own process (so its peak resident memory is its own and freed after) and records seconds,
peak RSS and its results in WORK/stages/<stage>.json; a rerun skips finished stages. WORK/report.md and
report.json gather them. Needs ~45 GB of disk and ~14 GB of RAM; about 40 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Peak memory per stage of one image (issue 25), each scenario in its own process: engine dir precision, where the
# UNet's conditioning comes from (a fresh reference, the same with low_memory, or a bank that `prepare` wrote),
# the runtime, the backend and its memory options (ONNX Runtime's arena and pre-packing, OpenVINO's mmap). The
# `_one` scenarios came after low_memory began to hold one component at a time (before: one side at a time) and
# record the peak of the process's own memory beside its RSS; `cap_mib` runs one inside that memory limit
# (benchmarks.memcap): whether it fits, not what its RSS counts.
# fmt: off
MEMORY = {
    "memory_py_fp32_reference": ("fp32", "reference", "python", "openvino", {}),
    "memory_py_fp32_reference_low": ("fp32", "reference_low", "python", "openvino", {}),
    "memory_py_fp32_bank": ("fp32", "bank", "python", "openvino", {}),
    "memory_py_fp32_bank_nommap": ("fp32", "bank", "python", "openvino", {"mmap": False}),
    "memory_py_fp32_bank_ort": ("fp32", "bank", "python", "onnxruntime", {}),
    "memory_py_fp32_bank_ort_noprepack": ("fp32", "bank", "python", "onnxruntime", {"prepacking": False}),
    "memory_py_fp32_bank_ort_noarena": ("fp32", "bank", "python", "onnxruntime", {"arena": False}),
    "memory_py_fp16_reference_low": ("fp16", "reference_low", "python", "openvino", {}),
    "memory_py_fp16_bank": ("fp16", "bank", "python", "openvino", {}),
    "memory_native_fp32_bank": ("fp32", "bank", "native", "openvino", {}),
    "memory_native_fp16_bank": ("fp16", "bank", "native", "openvino", {}),
    "memory_py_fp32_reference_low_ort": ("fp32", "reference_low", "python", "onnxruntime", {}),
    "memory_py_fp32_bank_one": ("fp32", "bank", "python", "openvino", {"low_memory": True}),
    "memory_py_fp32_reference_one": ("fp32", "reference_low", "python", "openvino", {"low_memory": True}),
    "memory_py_fp16_bank_one": ("fp16", "bank", "python", "openvino", {"low_memory": True}),
    "memory_native_fp32_bank_one": ("fp32", "bank", "native", "openvino", {"low_memory": True}),
    "memory_native_fp16_bank_one": ("fp16", "bank", "native", "openvino", {"low_memory": True}),
    "memory_py_fp32_bank_one_cap6g": ("fp32", "bank", "python", "openvino", {"low_memory": True, "cap_mib": 6144}),
    "memory_native_fp32_bank_one_cap5g": ("fp32", "bank", "native", "openvino", {"low_memory": True, "cap_mib": 5120}),
    "memory_py_fp32_reference_one_cap10g": ("fp32", "reference_low", "python", "openvino",
                                            {"low_memory": True, "cap_mib": 10240}),
    "memory_py_fp16_bank_one_cap4g": ("fp16", "bank", "python", "openvino", {"low_memory": True, "cap_mib": 4096}),
    # The default backend (auto) with low_memory, on a host that has not measured its backends yet.
    "memory_py_fp32_bank_one_auto_cap6g": ("fp32", "bank", "python", "auto",
                                           {"low_memory": True, "cap_mib": 6144, "cold_choice": True}),
    # The first run on a host compiles (fp16 weights widened to fp32 on a CPU without bf16) instead of importing.
    "memory_py_fp16_bank_one_cold": ("fp16", "bank", "python", "openvino", {"low_memory": True, "cold_cache": True}),
    "memory_py_fp16_bank_one_cold_cap4g": ("fp16", "bank", "python", "openvino",
                                           {"low_memory": True, "cold_cache": True, "cap_mib": 4096}),
    # A line PC's first image with everything left at its default (issue 38): backend auto on a host that has not
    # measured its backends yet (the measurement opens each backend's engine), a fresh reference. "all" holds every
    # component as the default did before (low_memory=False); "default" passes nothing, so low_memory is chosen
    # from the memory the process finds free (the cgroup's limit).
    "memory_py_fp16_reference_all": ("fp16", "reference", "python", "auto", {"cold_choice": True}),
    "memory_py_fp16_reference_all_cap16g": ("fp16", "reference", "python", "auto",
                                            {"cold_choice": True, "cap_mib": 16384}),
    "memory_py_fp16_reference_all_cap8g": ("fp16", "reference", "python", "auto",
                                           {"cold_choice": True, "cap_mib": 8192}),
    "memory_py_fp16_reference_default_cap16g": ("fp16", "reference", "python", "auto",
                                                {"cold_choice": True, "cap_mib": 16384, "low_memory": None}),
    "memory_py_fp16_reference_default_cap8g": ("fp16", "reference", "python", "auto",
                                               {"cold_choice": True, "cap_mib": 8192, "low_memory": None}),
    "memory_py_fp32_reference_all": ("fp32", "reference", "python", "auto", {"cold_choice": True}),
    "memory_py_fp32_reference_default_cap8g": ("fp32", "reference", "python", "auto",
                                               {"cold_choice": True, "cap_mib": 8192, "low_memory": None}),
}
# The export matrix (issue 38): each flag set a user runs, built from the real-size checkpoint, then one 512 px image
# on ONNX Runtime and on OpenVINO, each in its own process. A row: its export.build flags, and the row whose dir it
# starts from (`--from-onnx`: TensorRT plans on the target, through a fake TensorRT up to the builder here).
MATRIX = {
    "fp16": (["--fp16"], None),
    "int8": (["--int8"], None),
    "fp8": (["--fp8"], None),
    "fp16_int8": (["--fp16", "--int8"], None),
    "fp16_fp8": (["--fp16", "--fp8"], None),
    "from_onnx_fp16": (["--fp16"], "int8"),
}
# What bounds the quantized rows' calibration and gate here (export.build's defaults take hours at real size on 2
# cores: the report states their cost from these runs' per-scene times).
QUANT_BOUNDS = ["--calibration-scenes", "4", "--gate-scenes", "2", "--scene-steps", "6"]
IMAGE_BACKENDS = ("onnxruntime", "openvino")
STAGES = ("sources", "init_folder", "init_single_file", "export_fp32", "export_fp16", "synth_fp32", "synth_fp16",
          *MEMORY, *(f"matrix_{row}" for row in MATRIX))
# fmt: on
PROMPT = "a photo of a metal plate with a hole"
TARGET = ("vae_encoder", "unet", "vae_decoder")


def _scene():
    from acsdk.testing import make_box_mask, make_defect_pair, make_texture

    ref, ref_mask = make_defect_pair(512, seed=3)
    return make_texture(512, seed=1), make_box_mask(512, 200, 220, 90, 70), ref, ref_mask


def _memory(name: str, work: Path, steps: int, binary: str) -> dict:
    """One image's peak resident memory per stage: load, reference (text + CSM + ASEA), encode, denoise, decode."""
    import numpy as np
    from PIL import Image

    import acsdk
    import runtime.onnxruntime_engine as ort_engine
    import runtime.openvino_engine as ov_engine
    from acsdk.inference.bank import Bank
    from runtime.process import MemorySampler, peak_rss_mb, reset_peak_rss

    precision, source, runtime, backend, knobs = MEMORY[name]
    low_memory = knobs.get("low_memory", source == "reference_low")
    engines, bank_dir = work / f"engines-{precision}", work / f"bank-{precision}"
    if knobs.get("cold_cache") or knobs.get("cold_choice"):  # as on a host's first run: OpenVINO compiles again,
        from acsdk.inference.backend_choice import CHOICE_FILE  # or `auto` has not measured its backends yet
        from acsdk.inference.parts import openvino_cache_dir
        from runtime.manifest import Manifest

        cache = openvino_cache_dir(Manifest.load(engines))
        if knobs.get("cold_cache"):
            shutil.rmtree(cache, ignore_errors=True)
        (cache / CHOICE_FILE).unlink(missing_ok=True)
    image, mask, ref, ref_mask = _scene()
    if runtime == "native":
        if not Path(binary).is_file():
            return {"skipped": f"no acsdk-native at {binary} (cmake -S . -B build && cmake --build build)"}
        Image.fromarray(image).save(work / "target.png")
        Image.fromarray(mask).save(work / "target_mask.png")
        cmd = [binary, "synth", "--engines", str(engines), "--bank", str(bank_dir), "--image", str(work / "target.png"),
               "--mask", str(work / "target_mask.png"), "--out", str(work / f"{name}.png"), "--seed", "7",
               "--steps", str(steps), "--json"] + (["--low-memory"] if low_memory else [])  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        with MemorySampler(proc.pid) as whole:  # the process's own memory, apart from mapped files: sampled
            stdout, _ = proc.communicate()
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd)
        out = json.loads(stdout)
        return {"peak_rss_mib": {k: round(v) for k, v in out["peak_rss_mib"].items()}, "timings": out["timings"],
                "peak_anon_mib": {"run": round(whole.peak.get("anon", 0))}}  # fmt: skip
    ort_engine.CPU_MEMORY.update({k: v for k, v in knobs.items() if k in ort_engine.CPU_MEMORY})
    if "mmap" in knobs:
        make_core = ov_engine._core

        def _core():
            core = make_core()
            core.set_property({"ENABLE_MMAP": knobs["mmap"]})
            return core

        ov_engine._core = _core
    peaks: dict[str, float] = {}
    anon: dict[str, float] = {}  # the peak of the process's own memory (no mapped files), sampled
    sampler = MemorySampler().__enter__()

    def measured(label: str, fn):
        reset_peak_rss()
        sampler.reset()
        value = fn()
        peaks[label] = max(peaks.get(label, 0.0), peak_rss_mb())
        anon[label] = max(anon.get(label, 0.0), sampler.peak.get("anon", 0.0))
        return value

    def stage(label: str, fn):
        t0 = time.perf_counter()
        value = measured(label, fn)
        seconds[label] = round(time.perf_counter() - t0, 2)
        return value

    seconds: dict[str, float] = {}
    synth = acsdk.Synthesizer(engines, backend=backend, device="cpu", low_memory=low_memory)
    low_memory = synth.low_memory  # (None: the Synthesizer chose)
    if source == "bank":
        bank = Bank.load(bank_dir)
    else:
        if not low_memory or (source == "reference_low" and "low_memory" not in knobs):  # (one at a time: opened
            # when its stage comes; the older reference_low scenarios hold one side at a time)
            stage("load reference side", lambda: synth.load("reference"))
        bank = stage("reference", lambda: synth.prepare(PROMPT, ref, ref_mask))
        bank.save(bank_dir, overwrite=True)  # for the bank scenarios after it (the same bytes each time)
    if not low_memory:  # (low_memory opens each when its stage comes, and releases it after)
        stage("load target side", lambda: synth.load("unet", "vae_encoder", "vae_decoder"))
    for engine_class in (ov_engine.OpenVINOEngine, ort_engine.OrtEngine):  # (either, with backend auto)

        def timed(self, inputs, run=engine_class.run):  # each target engine call's own peak (compilation included)
            return measured(self.name, lambda: run(self, inputs)) if self.name in TARGET else run(self, inputs)

        engine_class.run = timed
    t0 = time.perf_counter()  # (its peaks are the engine calls' above)
    res = synth.run(image, mask, bank=bank, seed=7, num_inference_steps=steps)
    seconds["image"] = round(time.perf_counter() - t0, 2)
    res.image.save(work / f"{name}.png")
    loaded = [n for n, c in synth.info()["components"].items() if c["loaded"]]
    sampler.__exit__()
    return {
        "peak_rss_mib": {k: round(v) for k, v in peaks.items()},
        "peak_anon_mib": {k: round(v) for k, v in anon.items()},
        "stage_seconds": seconds,
        "timings": {k: round(v, 3) for k, v in res.timings.items()},
        "loaded": loaded,
        "image_mean": float(np.asarray(res.image, dtype=np.float64).mean()),
        "memory_mode": synth.info()["memory"],
    }


log = logging.getLogger("benchmarks.realsize")


def _dir_mib(root: Path) -> dict:
    """Per component, the files of each artifact (MiB), and the dir's total."""
    from runtime.manifest import Manifest

    manifest = Manifest.load(root)
    out = {}
    for name, entry in manifest.components.items():
        out[name] = {
            "precision": entry["precision"],
            "artifacts": [
                {"format": a["format"], "precision": a["precision"], "file": a["file"],
                 "mib": round(sum((root / f).stat().st_size for f in [a["file"], *a.get("data_files", [])]) / 2**20)}
                for a in entry["artifacts"]
            ],
        }  # fmt: skip
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return {"components": out, "total_gib": round(total / 2**30, 2)}


def _quantization(root: Path) -> dict:
    """What the manifest recorded of the UNet's quantization: gates (numbers, scopes tried, seconds), calibration."""
    from runtime.manifest import Manifest

    unet = Manifest.load(root).components["unet"]
    out = {k: unet[k] for k in ("quantization", "int8_gate", "int8_qdq_gate") if k in unet}
    for a in unet["artifacts"]:
        if "gate" in a:
            out[f"{a['precision']}_qdq_gate"] = a["gate"]
    return out


def _fake_tensorrt() -> None:
    """TensorRT 11's API up to the builder (the tests' fake, tests/trt_api.py): the plans it 'builds' hold no
    engine, so their GPU check is recorded as not run."""
    import torch

    from export import build as build_mod
    from export import tensorrt as trt_build

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from trt_api import builder_calls, fake_builder

    sys.modules["tensorrt"] = fake_builder(builder_calls(), version="11.4.0")
    torch.cuda.is_available = lambda: True
    trt_build.gpu_info = lambda device=None: {"name": "fake (tests/trt_api.py)", "compute_capability": "8.9",
                                              "cuda": "-"}  # fmt: skip
    build_mod.verify_plan = lambda *a, **k: {"passed": False, "max_abs": float("nan"), "reason": "fake TensorRT"}


def _matrix(row: str, work: Path, steps: int, keep: bool) -> dict:
    """Build one row of the export matrix, then one image per CPU backend in processes of their own."""
    from export.build import main as build_main
    from runtime.process import peak_rss_mb, reset_peak_rss

    flags, source = MATRIX[row]
    out = work / f"matrix-{row}"
    quantized = any(f in flags for f in ("--int8", "--fp8"))
    if source is None:
        argv = ["--checkpoint", str(work / "ckpt"), *flags, *(QUANT_BOUNDS if quantized else [])]
    else:
        if not (work / f"matrix-{source}").is_dir():
            return {"flags": flags, "built": False, "error": f"needs the {source} row's dir (run matrix_{source})"}
        _fake_tensorrt()
        argv = ["--from-onnx", str(work / f"matrix-{source}"), *flags]
    argv += ["--out", str(out), "--force"]
    reset_peak_rss()
    t0 = time.perf_counter()
    tee = _Tee(sys.stderr)
    with contextlib.redirect_stderr(tee):  # the build's own error line, for the record; its progress stays live
        code = build_main(argv)
    record = {
        "flags": flags if source is None else ["--from-onnx", f"<{source} dir>", *flags],
        "bounds": QUANT_BOUNDS if quantized else [],
        "built": code == 0,
        "exit_code": code,
        "build_minutes": round((time.perf_counter() - t0) / 60, 1),
        "build_peak_rss_mib": round(peak_rss_mb()),
    }
    if code != 0:
        record["stderr"] = next((ln for ln in reversed(tee.lines) if ln.startswith("export.build:")), "")[:2000]
        return record
    from runtime.manifest import Manifest

    # The build resets the high-water mark per component (each records its own peak): the last one's mark covers
    # the quantization after it, the components' records the rest.
    peaks = [e.get("peak_rss_mb", 0) for e in Manifest.load(out).components.values()]
    record["build_peak_rss_mib"] = round(max([record["build_peak_rss_mib"], *peaks]))
    record.update(artifacts=_dir_mib(out), quantization=_quantization(out), images={})
    for backend in IMAGE_BACKENDS:
        cmd = [sys.executable, "-m", "benchmarks.realsize", "--work", str(work), "--steps", str(steps),
               "--image", str(out), backend]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            record["images"][backend] = {"error": proc.stderr.strip().splitlines()[-1:]}
        else:
            record["images"][backend] = json.loads(proc.stdout.strip().splitlines()[-1])
    dependants = [r for r, (_, src) in MATRIX.items() if src == row]
    if not keep and not dependants:
        _remove_engine_dir(out)
    return record


class _Tee(io.TextIOBase):
    """Writes through to `stream` and keeps the lines written."""

    def __init__(self, stream):
        self.stream, self.lines, self._part = stream, [], ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *done, self._part = (self._part + text).split("\n")
        self.lines += done
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _remove_engine_dir(root: Path) -> None:
    """A matrix dir and its OpenVINO model-cache entry (GBs each at real size), once measured."""
    from acsdk.inference.parts import openvino_cache_dir
    from runtime.manifest import Manifest

    shutil.rmtree(openvino_cache_dir(Manifest.load(root)), ignore_errors=True)
    shutil.rmtree(root)


def image_on(engines: Path, backend: str, steps: int) -> dict:
    """One 512 px image from a fresh reference on `backend` in the default mode (this process's peak RSS is the
    image's: opening, compiling and running)."""
    import acsdk
    from runtime.process import peak_rss_mb

    image, mask, ref, ref_mask = _scene()
    t0 = time.perf_counter()
    synth = acsdk.Synthesizer(engines, backend=backend, device="cpu")
    res = synth.run(image, mask, PROMPT, ref, ref_mask, seed=7, num_inference_steps=steps)
    info = synth.info()["components"]
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mib": round(peak_rss_mb()),
            "unet_precision": info["unet"]["precision"], "unet_backend": info["unet"]["backend"],
            "seconds_per_unet_call": round(res.timings["denoise"] / res.timings["denoise_steps"], 2)}  # fmt: skip


def _stage(name: str, work: Path, steps: int, preset: str, binary: str, keep: bool = False) -> dict:
    if name in MEMORY:
        return _memory(name, work, steps, binary)
    if name.startswith("matrix_"):
        return _matrix(name[len("matrix_") :], work, steps, keep)
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

        t0 = time.perf_counter()
        synth = acsdk.Synthesizer(work / f"engines-{name[6:]}", backend="onnxruntime", device="cpu").load()
        load_s = time.perf_counter() - t0
        image, mask, ref, ref_mask = _scene()
        res = synth.run(
            image,
            mask,
            PROMPT,
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


def run_stage(name: str, work: Path, steps: int, preset: str, binary: str, keep: bool = False) -> None:
    """In this process: run one stage and write its record (the driver starts one process per stage)."""
    from runtime.files import atomic_write
    from runtime.process import peak_rss_mb

    t0 = time.perf_counter()
    record = _stage(name, work, steps, preset, binary, keep)
    record.update(seconds=round(time.perf_counter() - t0, 1), peak_rss_mb=round(peak_rss_mb()))
    atomic_write(work / "stages" / f"{name}.json", json.dumps(record, indent=2))


def weights_table(engine_dir: Path) -> list[str]:
    """Per component, the bytes of the artifact a GPU backend loads at the dir's precision (its ONNX file and
    external data; a TensorRT plan built from it holds about the same), the fp32 VAE variants and ASEA's torch
    Q-Former listed apart: what an Orin's shared memory must hold."""
    from runtime.manifest import Manifest

    manifest = Manifest.load(engine_dir)
    rows = ["| component | precision | MiB |", "|---|---|---:|"]
    total = 0.0
    for name, entry in manifest.components.items():
        for art in entry["artifacts"]:
            if art["format"] != "onnx":
                continue
            files = [art["file"], *art.get("data_files", [])]
            mib = sum((engine_dir / f).stat().st_size for f in files) / 2**20
            variant = art["precision"] != entry["precision"]
            rows.append(f"| {name}{' (fp32 variant, opened on NaN)' if variant else ''} | {art['precision']} | "
                        f"{mib:,.0f} |")  # fmt: skip
            total += 0 if variant else mib
    qformer = (engine_dir / "torch" / "qformer.safetensors").stat().st_size / 2**20
    rows += [f"| ASEA's Q-Former (torch) | fp32 | {qformer:,.0f} |", f"| **held without variants** | | "
             f"**{total + qformer:,.0f}** |"]  # fmt: skip
    return rows


def _stage_rows(stages: dict) -> list[str]:
    lines = ["| stage | seconds | peak RSS (MiB) |", "|---|---:|---:|"]
    return lines + [f"| {s} | {r['seconds']:.0f} | {r['peak_rss_mb']} |" for s, r in stages.items() if "seconds" in r]


def _export_rows(stages: dict) -> list[str]:
    lines = []
    for prec in ("fp32", "fp16"):
        if f"export_{prec}" not in stages:
            continue
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
        r = stages.get(f"synth_{prec}")
        if r is None:
            continue
        lines += ["", f"Synthesizer on the {prec} engines: {r['image_size'][0]}x{r['image_size'][1]}, "
                  f"{r['seconds_per_unet_call']:.2f} s per UNet call (CFG batch 2), load {r['load_seconds']:.0f} s, "
                  f"stages {r['timings']}, ASEA r {r['asea']['r_before']:.3f} -> {r['asea']['r_after']:.3f}, "
                  f"peak RSS {r['peak_rss_mb']} MiB"]  # fmt: skip
    return lines


def _memory_rows(stages: dict) -> list[str]:
    if not any(name in stages for name in MEMORY):
        return []
    cols = ("load reference side", "reference", "load target side", "vae_encoder", "unet", "vae_decoder")
    head = f"| scenario | {' | '.join(cols)} | peak | seconds per image | memory limit |"
    lines = ["", "Peak resident memory per stage (MiB; RSS / the process's own memory without mapped files where "
             "sampled; each scenario its own process; native: opening engines + bank, then the whole synthesis in "
             "the unet column)", "", head, "|---|" + "---:|" * (len(cols) + 3)]  # fmt: skip
    for name in MEMORY:
        r = stages.get(name, {"skipped": "not run"})
        cap = r.get("cap")
        limit = "-" if cap is None else f"{cap['mib']:,}: {'fits' if cap['fits'] else cap['why']}"
        if "peak_rss_mib" not in r:
            lines.append(f"| {name[7:]} | {r.get('skipped', '-')} |" + " |" * (len(cols) + 1) + f" {limit} |")
            continue
        p, a = r["peak_rss_mib"], r.get("peak_anon_mib", {})

        def cell(key, p=p, a=a):
            return "-" if key not in p else f"{p[key]:,}" + (f" / {a[key]:,}" if key in a else "")

        if "run" in p:  # native
            row = ["-", "-", cell("load"), "-", cell("run"), "-"]
            image_s = r["timings"]["total"]
        else:
            row = [cell(c) for c in cols]
            image_s = r["stage_seconds"]["image"]
        peak = f"**{max(p.values()):,}**" + (f" / **{max(a.values()):,}**" if a else "")
        lines.append(f"| {name[7:]} | {' | '.join(row)} | {peak} | {image_s:.1f} | {limit} |")
    return lines


def _gate_cell(gate: dict | None) -> str:
    if not gate:
        return "-"

    def one(t: dict) -> str:
        scope = t["scope"].split(" ")[0]  # "convolutions", "linear"
        if "error" in t:
            return f"{scope}: {t['error'][:60]}"
        return f"{scope} {t['mean']:.2f}/{t['p99']:.1f}/{t['psnr_db']:.1f} dB {'pass' if t['passed'] else 'miss'}"

    return "; ".join(one(t) for t in gate.get("tried", [])) or "-"


def _matrix_rows(stages: dict) -> list[str]:
    rows = {r: stages[f"matrix_{r}"] for r in MATRIX if f"matrix_{r}" in stages}
    if not rows:
        return []
    lines = ["", "Export matrix (each flag set, real size; images: one 512 px image from a fresh reference, default "
             "mode, each in its own process; seconds include opening and compiling)", "",
             "| flags | built | build min | build peak RSS (MiB) | dir GiB | UNet artifacts (MiB) | INT8 gate OpenVINO "
             "(mean/p99/PSNR per scope) | Q/DQ gate | ONNX Runtime: s, peak MiB, UNet | OpenVINO: s, peak MiB, UNet |",
             "|---|---|---:|---:|---:|---|---|---|---|---|"]  # fmt: skip
    for r in rows.values():
        flags = " ".join(r["flags"])
        if not r.get("built"):
            why = r.get("error") or f"exit {r.get('exit_code')}: {r.get('stderr', '')}"
            lines.append(f"| `{flags}` | **no**: {why} |" + " |" * 8)
            continue
        unet = r["artifacts"]["components"]["unet"]["artifacts"]
        arts = ", ".join(f"{a['format']} {a['precision']} {a['mib']:,}" for a in unet)
        q = r.get("quantization", {})
        qdq = q.get("int8_qdq_gate") or q.get("fp8_qdq_gate")
        images = []
        for backend in IMAGE_BACKENDS:
            im = r["images"].get(backend, {})
            images.append("error: " + " ".join(im["error"]) if "error" in im else
                          f"{im['seconds']:.0f} s, {im['peak_rss_mib']:,}, {im['unet_precision']}")  # fmt: skip
        lines.append(f"| `{flags}` | yes | {r['build_minutes']:.1f} | {r['build_peak_rss_mib']:,} | "
                     f"{r['artifacts']['total_gib']:.1f} | {arts} | {_gate_cell(q.get('int8_gate'))} | "
                     f"{_gate_cell(qdq)} | {images[0]} | {images[1]} |")  # fmt: skip
    return lines


def report(work: Path) -> str:
    """report.md and report.json from whichever stages have run (any subset, in any order)."""
    files = {s: work / "stages" / f"{s}.json" for s in STAGES}
    stages = {s: json.loads(f.read_text()) for s, f in files.items() if f.is_file()}
    lines = _stage_rows(stages) + _export_rows(stages) + _memory_rows(stages) + _matrix_rows(stages)
    if (work / "engines-fp16" / "manifest.json").is_file():
        lines += ["", "Weights a GPU holds per component with the fp16 engine dir (MiB, from its files; activations "
                  "come on top)", ""] + weights_table(work / "engines-fp16")  # fmt: skip
    text = "\n".join(lines) + "\n"
    (work / "report.md").write_text(text)
    (work / "report.json").write_text(json.dumps(stages, indent=2))
    return text


def _capped(stage: str, work: Path, mib: int, cmd: list[str]) -> None:
    """Run a stage inside a memory limit of `mib` MiB and add to its record whether it fitted: a stage the kernel
    stops at the limit leaves only that."""
    from acsdk.inference.parts import openvino_cache_dir
    from benchmarks.memcap import MemoryCap, evict
    from runtime.files import atomic_write
    from runtime.manifest import Manifest

    record = work / "stages" / f"{stage}.json"
    record.unlink(missing_ok=True)
    limit = MemoryCap(mib)
    engines = work / f"engines-{MEMORY[stage][0]}"
    try:
        why = limit.unavailable()
        if why:
            raise OSError(why)
        # Out of the page cache, so that their pages are read again inside the limit and count in it: the engine
        # dir, the bank and OpenVINO's compiled blobs (cached pages stay charged to whoever read them first).
        evict([engines, work / f"bank-{MEMORY[stage][0]}", openvino_cache_dir(Manifest.load(engines))])
        ran = limit.run(cmd)
    except OSError as exc:  # no limit can be set here, or the process could not join it
        atomic_write(record, json.dumps({"skipped": str(exc), "cap": {"mib": mib, "fits": False, "why": str(exc)}}))
        return
    fits = ran["returncode"] == 0 and record.is_file()
    why = "" if fits else ("stopped by the OOM killer" if ran["oom_kills"] else f"exit {ran['returncode']}")
    body = json.loads(record.read_text()) if record.is_file() else {}
    body["cap"] = {"mib": mib, "fits": fits, "why": why, "max_usage_mib": ran["max_usage_mib"]}
    atomic_write(record, json.dumps(body, indent=2))
    log.info("stage %s within %d MiB: %s", stage, mib, "fits" if fits else why)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.realsize", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="working directory (resumable)")
    p.add_argument("--steps", type=int, default=4, help="DDIM steps before strength 0.7 (default 4: 2 UNet calls)")
    p.add_argument("--redo", choices=STAGES, help="run this stage and the later ones again")
    p.add_argument("--preset", default="sd15", help="model sizes (sd15; tiny for a dry run of the script)")
    p.add_argument("--native-binary", default="build/native/acsdk-native", help="acsdk-native, for its memory stages")
    p.add_argument("--only", nargs="+", choices=STAGES, default=[], help="run these stages (again) and no others")
    p.add_argument("--matrix", action="store_true", help="also the export matrix (every flag set: ~1 h a row here)")
    p.add_argument("--keep-matrix", action="store_true", help="keep the export matrix's engine dirs (~10 GB each)")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in this process
    p.add_argument("--image", nargs=2, metavar=("ENGINES", "BACKEND"), help=argparse.SUPPRESS)  # one image, here
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work)
    (work / "stages").mkdir(parents=True, exist_ok=True)
    if args.image:
        print(json.dumps(image_on(Path(args.image[0]), args.image[1], args.steps)))
        return 0
    if args.stage:
        run_stage(args.stage, work, args.steps, args.preset, args.native_binary, args.keep_matrix)
        return 0
    redo = STAGES.index(args.redo) if args.redo else len(STAGES)
    for i, stage in enumerate(STAGES):
        record = work / "stages" / f"{stage}.json"
        if args.only and stage not in args.only:
            continue
        if stage.startswith("matrix_") and not (args.matrix or stage in args.only):
            continue
        if record.is_file() and i < redo and stage not in args.only:
            log.info("stage %s: done before", stage)
            continue
        log.info("stage %s", stage)
        cmd = [sys.executable, "-m", "benchmarks.realsize", "--work", str(work), "--steps", str(args.steps)]
        cmd += ["--preset", args.preset, "--native-binary", args.native_binary, "--stage", stage]
        cmd += ["--keep-matrix"] if args.keep_matrix else []
        cap = MEMORY[stage][4].get("cap_mib") if stage in MEMORY else None
        if cap is not None:
            _capped(stage, work, cap, cmd)
        elif subprocess.run(cmd).returncode != 0:
            log.error("stage %s failed", stage)
            return 1
    print(report(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
