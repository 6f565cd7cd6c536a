"""The Python side of the native runtime's tests (run by ctest, see CMakeLists.txt).

    fixtures.py make DIR            golden vectors (DDIM, torch's generator), engine dirs (tiny, demo), banks,
                                    inputs and the Python runtime's outputs for every parity case
    fixtures.py list                the parity and bad-input case names (CMake reads them at configure time)
    fixtures.py parity DIR NAME BIN run acsdk-native on a case; its output must equal Python's within tolerance
                                    and its label PNG exactly
    fixtures.py sensitivity DIR NAME BIN  the same check must refuse Python's output with timesteps one lower
    fixtures.py bad DIR NAME BIN    run acsdk-native on bad input: a non-zero exit, one line naming the argument

Both runtimes run the same engines on OpenVINO, from the same seed: the native runtime reproduces torch's CPU
generator, so no noise file is needed (the generator itself is checked against torch.randn in test_core).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

# name -> (engines, bank, image, settings). Images: RGB, 16-bit gray, RGBA; one window, several, roi full.
PARITY = {
    "tiny_rgb_full": ("tiny", "tiny_plain", "rgb64", {"seed": 3, "steps": 10, "strength": 0.7, "guidance": 7.0,
                                                      "roi": "full"}),
    "tiny_gray16_windows": ("tiny", "tiny_plain", "gray16_wide", {"seed": 11, "steps": 8, "strength": 0.75,
                                                                  "guidance": 1.0, "semantic_scale": 0.5}),
    "tiny_gray12_bit_depth": ("tiny", "tiny_plain", "gray12", {"seed": 2, "steps": 6, "strength": 0.7,
                                                               "guidance": 7.0, "bit_depth": 12, "roi": "full"}),
    "tiny_rgba_strength1": ("tiny", "tiny_plain", "rgba80", {"seed": 5, "steps": 6, "strength": 1.0,
                                                             "guidance": 4.0, "blur_sigma": 2.0}),
    # Guidance for the first half of the calls, then the conditional row alone (batch 1), in both runtimes.
    "tiny_cfg_cutoff": ("tiny", "tiny_plain", "rgb64", {"seed": 4, "steps": 12, "strength": 0.75, "guidance": 5.0,
                                                        "cfg_cutoff": 0.5, "roi": "full"}),
    # DPM-Solver++ (2M): with guidance on every call at strength 0.7, and from pure noise with a CFG cut-off.
    "tiny_dpmpp": ("tiny", "tiny_plain", "rgb64", {"seed": 6, "steps": 14, "strength": 0.7, "guidance": 7.0,
                                                   "sampler": "dpmpp-2m", "roi": "full"}),
    # 16 calls: the last step, to DDIM's end point (alphas_cumprod[0]), is DPM-Solver++'s second-order one.
    "tiny_dpmpp_second_order_end": ("tiny", "tiny_plain", "rgb64", {"seed": 10, "steps": 24, "strength": 0.7,
                                                                    "guidance": 7.0, "sampler": "dpmpp-2m",
                                                                    "roi": "full"}),
    "tiny_dpmpp_strength1_cutoff": ("tiny", "tiny_plain", "rgba80", {"seed": 8, "steps": 8, "strength": 1.0,
                                                                     "guidance": 5.0, "sampler": "dpmpp-2m",
                                                                     "cfg_cutoff": 0.6}),
    # --low-memory releases each engine after its stage and recompiles it for the next window and for the batch-1
    # calls after the cut-off: the image Python makes by default, window for window.
    "tiny_windows_cutoff_low_memory": ("tiny", "tiny_plain", "gray16_wide", {"seed": 12, "steps": 8, "strength": 0.75,
                                                                             "guidance": 5.0, "cfg_cutoff": 0.5,
                                                                             "low_memory": True}),
    "demo_dpmpp": ("demo", "demo_hole", "demo160", {"seed": 7, "steps": 20, "strength": 0.7, "guidance": 7.0,
                                                    "sampler": "dpmpp-2m"}),
    "tiny_fp16_engines": ("tiny_fp16", "tiny_fp16_plain", "rgb64", {"seed": 9, "steps": 10, "strength": 0.8,
                                                                    "guidance": 7.0}),
    "demo_int8_engines": ("demo_int8", "demo_int8_hole", "demo160", {"seed": 7, "steps": 20, "strength": 0.7,
                                                                     "guidance": 7.0}),
    "demo_reference": ("demo", "demo_hole", "demo160", {"seed": 7, "steps": 20, "strength": 0.7, "guidance": 7.0}),
    # An INT8 dir whose gate was measured on another CPU architecture: both runtimes run its fp32 UNet and say so.
    # At the fp32 tolerance this fails if either ran the INT8 UNet (INT8 vs fp32: mean ~1, p99 ~6 grey levels).
    "demo_int8_uncovered_cpu": ("demo_int8_other_cpu", "demo_int8_other_cpu_hole", "demo160",
                                {"seed": 7, "steps": 20, "strength": 0.7, "guidance": 7.0}),
}  # fmt: skip
# Cases whose tolerance is shown to be tight enough: the native output compared with what Python makes with every
# DDIM timestep one lower (the size of the trailing/linspace rounding errors issue 23 found) must FAIL the parity
# check, so an off-by-one in the native schedule cannot pass unnoticed.
SENSITIVITY = ("tiny_rgb_full", "demo_reference", "tiny_dpmpp")
# name -> a note the native runtime's --json must carry
NOTES = {"demo_int8_uncovered_cpu": "unet: fp32 instead of INT8, because its INT8 gate was measured on"}

# Max and mean |diff| in grey levels where the UNet is not fp32: fp16 engines where this CPU runs them in bf16
# (AMX): there the float32 inputs' last-bit differences (torch's SLEEF exp/log/sin/cos vs libm's in the noise
# draw) flip bf16 roundings inside the UNet, which a random tiny model amplifies to a few values off by 2.
# INT8 engines (the UNet as OpenVINO IR with quantized activations) likewise: a last-bit difference moves a value
# across a quantization step.
TOLERANCE = {"tiny_fp16_engines": (3.0, 0.1), "demo_int8_engines": (4.0, 0.1)}
# fp32 engines: the same engines on the same backend compute the same floats, so the images agree to one step of
# the file's own format (1 grey level for 8 bits, 1/257 of one for 16) and 0.01 grey levels on average; measured
# here: identical, or one 16-bit step where a value sits on a rounding edge. None: one step of the format.
DEFAULT_TOLERANCE = (None, 0.01)

# name -> (argument changes, expected regex of the one-line error)
E = "^acsdk-native synth: error: "
BAD = {
    "tampered_engine_file": ({"engines": "engines/tampered"}, E + r"engines: engine file 'onnx/unet.onnx' has sha256"),
    "bank_of_other_engines": ({"bank": "banks/demo_hole"}, E + r"bank: expected a bank prepared for this engine dir"),
    "mask_size_mismatch": ({"mask": "inputs/mask_small.png"},
                           E + r"mask: expected the size of image \(H x W = 64 x 64\), got 32 x 32"),
    "empty_mask": ({"mask": "inputs/mask_empty.png"}, E + r"mask: expected a mask with at least one defect pixel"),
    "unreadable_image": ({"image": "inputs/not_a_png.png"},
                         E + r"image: expected a readable PNG image, got .*\(not a PNG file\)"),
    "missing_image": ({"image": "inputs/absent.png"}, E + r"image: expected a readable file"),
    "unknown_device": ({"device": "NPU7"}, E + r"device: expected an OpenVINO device of this machine"),
    "steps_times_strength": ({"steps": "1", "strength": "0.5"}, E + r"steps: expected at least 2 at strength 0.5"),
    "bit_depth_above_storage": ({"bit-depth": "12"}, E + r"bit-depth: expected an integer in \[1, 8\]"),
    "out_is_the_image": ({"out": "inputs/rgb64.png"}, E + r"out: expected a path other than --image"),
    "unknown_flag": ({"colour": "red"}, E + r"arguments: expected a flag"),
    # Files nobody vouched for (issue 23): typed errors, never a read past a buffer (and clean under ASan/UBSan).
    "bank_negative_dimension": ({"bank": "banks/bad_negative_dim"}, E + r"bank: .*has a negative dimension"),
    "bank_shape_overflow": ({"bank": "banks/bad_huge_shape"}, E + r"bank: .*shape larger than the file's data"),
    "bank_rank_2_tokens": ({"bank": "banks/bad_rank2"}, E + r"bank: expected bank.safetensors with semantic_tokens"),
    "manifest_without_unet_inputs": ({"engines": "engines/bad_manifest", "bank": "banks/bad_manifest_plain"},
                                     E + r"engines: .*unet.*malformed"),
    "png_truncated": ({"image": "inputs/truncated.png"}, E + r"image: expected a readable PNG image"),
    # OpenVINO's own failures (here: compiling a graph for the fed shape) are one line naming the component.
    "engine_graph_fails": ({"engines": "engines/bad_vae_graph", "bank": "banks/bad_vae_graph_plain"},
                           E + r"engines: vae_encoder: OpenVINO failed on CPU: \S"),
    # Both outputs are staged before either is renamed into place: a label path that cannot be written leaves no
    # --out behind (bad() checks), and --out and --mask-out naming one file is refused up front.
    "sampler_unknown": ({"sampler": "unipc"}, E + r"sampler: expected ddim or dpmpp-2m, got 'unipc'"),
    "cfg_cutoff_out_of_range": ({"cfg-cutoff": "1.5"}, E + r"cfg-cutoff: expected a number in \[0, 1\], got 1.5"),
    "mask_out_unwritable": ({"mask-out": "absent_dir/label.png"}, E + r"mask-out: expected a writable path"),
    "mask_out_is_out": ({"mask-out": "native/bad_mask_out_is_out.png"},
                        E + r"mask-out: expected a path other than --out"),
}  # fmt: skip

BAD_BASE = {"engines": "engines/tiny", "bank": "banks/tiny_plain", "image": "inputs/rgb64.png",
            "mask": "inputs/rgb64_mask.png", "steps": "2"}  # fmt: skip
PROMPTS = {"tiny_plain": ("tiny", "a photo of a part with a scratch", None),
           "tiny_fp16_plain": ("tiny_fp16", "a photo of a part with a dent", None),
           "demo_hole": ("demo", "a photo of a plate with a hole", "hole"),
           "demo_int8_hole": ("demo_int8", "a photo of a plate with a hole", "hole"),
           "demo_int8_other_cpu_hole": ("demo_int8_other_cpu", "a photo of a plate with a hole", "hole")}  # fmt: skip


@contextlib.contextmanager
def _timesteps_one_lower():
    """diffusers' DDIMScheduler with each timestep 1 lower (floored at 0) while the block runs."""
    from diffusers import DDIMScheduler

    original = DDIMScheduler.set_timesteps

    def shifted(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.timesteps = (self.timesteps - 1).clamp(min=0)

    DDIMScheduler.set_timesteps = shifted
    try:
        yield
    finally:
        DDIMScheduler.set_timesteps = original


def _flags(settings: dict) -> list[str]:
    """--name value per setting; a setting that is True is a flag alone (--low-memory)."""
    flags = [(f"--{k.replace('_', '-')}", v) for k, v in settings.items()]
    return [x for f, v in flags for x in ((f,) if v is True or v == "True" else (f, str(v)))]


def _inputs(root: Path, data: Path) -> dict[str, tuple[Path, Path]]:
    """Target images and masks, one file pair each, in the layouts the cases cover."""
    from PIL import Image

    from acsdk.testing import make_defect_pair, make_texture

    out = root / "inputs"
    out.mkdir(parents=True, exist_ok=True)
    img, mask = make_defect_pair(64, seed=1)
    wide = (make_texture(300, seed=2, gray=True).astype(np.uint16) * 257)[:110]
    wide_mask = np.zeros(wide.shape, np.uint8)
    wide_mask[10:22, 12:30] = 255  # two defects far apart: two windows
    wide_mask[80:95, 250:270] = 255
    gray12 = make_texture(96, seed=4, gray=True).astype(np.uint16) * 16  # 12-bit data in a 16-bit PNG
    gray12_mask = np.zeros(gray12.shape, np.uint8)
    gray12_mask[40:60, 30:52] = 255
    rgba = np.dstack([make_texture(80, seed=3), np.linspace(60, 255, 80 * 80).reshape(80, 80).astype(np.uint8)])
    rgba_mask = np.zeros((80, 80), np.uint8)
    rgba_mask[30:50, 25:41] = 255
    good = sorted((data / "train" / "good").glob("*.png"))[0]
    demo = np.asarray(Image.open(good).convert("RGB").resize((160, 160), Image.BICUBIC))
    demo_mask = np.zeros((160, 160), np.uint8)
    demo_mask[60:84, 90:110] = 255
    pairs = {"rgb64": (img, mask), "gray16_wide": (wide, wide_mask), "rgba80": (rgba, rgba_mask),
             "gray12": (gray12, gray12_mask), "demo160": (demo, demo_mask)}  # fmt: skip
    files = {}
    for name, (pixels, m) in pairs.items():
        Image.fromarray(pixels).save(out / f"{name}.png")
        Image.fromarray(m).save(out / f"{name}_mask.png")
        files[name] = (out / f"{name}.png", out / f"{name}_mask.png")
    Image.fromarray(mask[::2, ::2]).save(out / "mask_small.png")
    Image.fromarray(np.zeros_like(mask)).save(out / "mask_empty.png")
    (out / "not_a_png.png").write_text("this is text, not an image\n")
    return files


# The ends and counts of the torch.linspace vectors test_core reproduces exactly (its LINSPACE table): DDIM's linear
# and scaled_linear betas (the latter's ends as diffusers takes them, beta ** 0.5), a rising, a falling and a flat run.
LINSPACE_ENDS = ((0.0001, 0.02), (0.00085**0.5, 0.012**0.5), (-1.0, 3.0), (0.3, 0.1), (2.5, 2.5))
LINSPACE_COUNTS = (1, 2, 3, 7, 16, 17, 50, 999, 1000, 4096)


def _golden(root: Path) -> None:
    """DDIM and DPM-Solver++ under several scheduler configs and torch's generator, for test_core."""
    import torch
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    from acsdk.apps.demo import demo_engines
    from acsdk.inference.schedules import stepper, visited_timesteps

    base = json.loads((demo_engines() / "scheduler" / "scheduler_config.json").read_text())
    configs = [
        base,
        {**base, "timestep_spacing": "trailing", "prediction_type": "v_prediction", "set_alpha_to_one": True},
        {**base, "timestep_spacing": "linspace", "beta_schedule": "linear", "beta_end": 0.02, "clip_sample": True,
         "prediction_type": "sample", "steps_offset": 0},
    ]  # fmt: skip
    tensors: dict[str, torch.Tensor] = {}
    g = torch.Generator("cpu").manual_seed(0)
    for k, config in enumerate(configs):
        (root / f"ddim_{k}.json").write_text(json.dumps(config))
        s = DDIMScheduler.from_config(config)
        tensors[f"ddim/{k}/alphas_cumprod"] = s.alphas_cumprod.float()
        tensors[f"ddim/{k}/betas"] = s.betas.float()
        for steps, strength in ((50, 0.7), (10, 1.0), (7, 0.5)):
            s.set_timesteps(steps)
            init = min(int(steps * strength), steps)
            tensors[f"ddim/{k}/timesteps_{steps}_{int(strength * 100)}"] = s.timesteps[steps - init :].double()
        visited = []  # what a run visits (acsdk/inference/schedules.py): steps 1..200 at strengths 1, 0.7, 0.3
        for steps in range(1, 201):
            for strength in (1.0, 0.7, 0.3):
                if int(steps * strength) >= 1:
                    ts = visited_timesteps(config, steps, strength)
                    visited += [float(len(ts)), *map(float, ts)]
        tensors[f"ddim/{k}/visited"] = torch.tensor(visited, dtype=torch.float64)
        sweep = []  # every step count 1..200 at strengths 1 and 0.7, as diffusers' pipeline slices them
        for steps in range(1, 201):
            s.set_timesteps(steps)
            for strength in (1.0, 0.7):
                init = min(int(steps * strength), steps)
                sweep += [float(len(s.timesteps) - (steps - init)), *s.timesteps[steps - init :].double().tolist()]
        tensors[f"ddim/{k}/sweep"] = torch.tensor(sweep, dtype=torch.float64)
        s.set_timesteps(10)
        x0, noise, out = (torch.randn(1, 4, 8, 8, generator=g) for _ in range(3))
        t = int(s.timesteps[3])
        tensors[f"ddim/{k}/x0"], tensors[f"ddim/{k}/noise"], tensors[f"ddim/{k}/model_output"] = x0, noise, out
        tensors[f"ddim/{k}/t"] = torch.tensor([float(t)])
        tensors[f"ddim/{k}/add_noise"] = s.add_noise(x0, noise, torch.tensor([t]))
        tensors[f"ddim/{k}/step"] = s.step(out, t, x0, eta=0.0).prev_sample
        # DPM-Solver++ over a run's timesteps (7 calls at steps 10, 21 at steps 30; strength 0.7): the noised start,
        # then each step on a fresh model output (first order first; second order between; the last step, to DDIM's
        # end point, first order below 15 calls, second order from 15 unless it ends at sigma 0).
        for steps in (10, 30):
            timesteps = visited_timesteps(config, steps, 0.7)
            dpm = stepper("dpmpp-2m", config, timesteps)
            latents = dpm.add_noise(x0, noise, timesteps[0])
            outputs, trajectory = [], [latents]
            for t in timesteps:
                outputs.append(torch.randn(1, 4, 8, 8, generator=g))
                latents = dpm.step(outputs[-1], t, latents)
                trajectory.append(latents)
            tensors[f"dpmpp/{k}/{steps}/timesteps"] = torch.tensor(timesteps, dtype=torch.float64)
            tensors[f"dpmpp/{k}/{steps}/model_outputs"] = torch.cat(outputs)
            tensors[f"dpmpp/{k}/{steps}/trajectory"] = torch.cat(trajectory)
    # torch.linspace in float32, value for value (test_core's LINSPACE table: the same ends, the same counts)
    for i, (start, end) in enumerate(LINSPACE_ENDS):
        for n in LINSPACE_COUNTS:
            tensors[f"linspace/{i}/{n}"] = torch.linspace(start, end, n, dtype=torch.float32)
    for seed in (0, 7, 2**40 + 3, 2**63 - 5):
        gen = torch.Generator("cpu").manual_seed(seed)
        draws = [torch.randn(n, generator=gen, dtype=torch.float32) for n in (1024, 36, 4 * 16 * 16)]
        tensors[f"randn/{seed}"] = torch.cat(draws)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(root / "golden_core.safetensors"))


def make(root: Path) -> None:
    from acsdk import Synthesizer
    from acsdk.apps.demo import demo_checkpoint, demo_engines
    from acsdk.data.procedural import make_mvtec_like
    from acsdk.testing import make_tiny_checkpoint
    from export.build import build_engine_dir

    root.mkdir(parents=True, exist_ok=True)
    _golden(root)
    names = ("demo", "demo_int8", "demo_int8_other_cpu", "tiny", "tiny_fp16")
    engines = {name: root / "engines" / name for name in names}
    for name, fp16 in (("tiny", False), ("tiny_fp16", True)):
        if not (engines[name] / "manifest.json").is_file():  # kept across ctest runs in the build dir
            ckpt = root / "tiny_ckpt"
            if not (ckpt / "acsdk.json").is_file():
                make_tiny_checkpoint(ckpt)
            build_engine_dir(ckpt, engines[name], fp16=fp16, backend="onnxruntime", force=True, progress=False)
    if not (engines["demo_int8"] / "manifest.json").is_file():  # the UNet as INT8 OpenVINO IR, default gate
        build_engine_dir(demo_checkpoint(), engines["demo_int8"], int8=True, force=True, progress=False)
    if not engines["demo"].exists():
        shutil.copytree(demo_engines(), engines["demo"], ignore=shutil.ignore_patterns("cache"))
    _other_cpu(engines["demo_int8"], engines["demo_int8_other_cpu"])
    tampered = root / "engines" / "tampered"
    if tampered.exists():
        shutil.rmtree(tampered)
    shutil.copytree(engines["tiny"], tampered, ignore=shutil.ignore_patterns("cache"))
    unet = tampered / "onnx" / "unet.onnx"
    data = bytearray(unet.read_bytes())
    data[len(data) // 2] ^= 0xFF
    unet.write_bytes(bytes(data))

    shutil.rmtree(root / "data", ignore_errors=True)
    dataset = make_mvtec_like(root / "data", size=64, defects=("hole",), n_good=2, n_per_defect=2) / "plate"
    files = _inputs(root, dataset)
    synths = {name: Synthesizer(path, backend="openvino", device="cpu") for name, path in engines.items()}
    for bank, (model, prompt, defect) in PROMPTS.items():
        ref = {}
        if defect:
            image = sorted((dataset / "test" / defect).glob("*.png"))[0]
            ref = {"reference_image": image,
                   "reference_mask": dataset / "ground_truth" / defect / f"{image.stem}_mask.png"}  # fmt: skip
        synths[model].prepare(prompt, **ref).save(root / "banks" / bank, overwrite=True)
        (root / "banks" / f"{bank}.json").write_text(json.dumps({k: str(v) for k, v in ref.items()}))
    _malformed(root, engines["tiny"])
    cases = {}
    for name, (model, bank, inputs, settings) in PARITY.items():
        _, prompt, _ = PROMPTS[bank]
        ref = json.loads((root / "banks" / f"{bank}.json").read_text())
        image, mask = files[inputs]
        run_kwargs = dict(
            seed=settings["seed"], num_inference_steps=settings["steps"], strength=settings["strength"],
            guidance_scale=settings["guidance"], semantic_scale=settings.get("semantic_scale", 1.0),
            roi=settings.get("roi", "auto"), blur_sigma=settings.get("blur_sigma"), bit_depth=settings.get("bit_depth"),
            cfg_cutoff=settings.get("cfg_cutoff"), sampler=settings.get("sampler", "ddim"),
        )  # fmt: skip
        result = synths[model].run(image, mask, prompt, **ref, **run_kwargs)
        expected = root / "python" / f"{name}.png"
        expected.parent.mkdir(exist_ok=True)
        result.image.save(expected)
        result.mask.save(expected.with_name(f"{name}_mask.png"))
        cases[name] = {"args": {"engines": str(engines[model]), "bank": str(root / "banks" / bank),
                                "image": str(image), "mask": str(mask), **{k: str(v) for k, v in settings.items()}},
                       "expected": str(expected), "expected_mask": str(expected.with_name(f"{name}_mask.png")),
                       "windows": result.windows}  # fmt: skip
        if name in SENSITIVITY:  # what Python makes with every timestep one lower: a native off-by-one's image
            with _timesteps_one_lower():
                off = synths[model].run(image, mask, prompt, **ref, **run_kwargs)
            cases[name]["one_step_off"] = str(expected.with_name(f"{name}_one_step_off.png"))
            off.image.save(cases[name]["one_step_off"])
    (root / "cases.json").write_text(json.dumps(cases, indent=2))


def _other_cpu(src: Path, dest: Path) -> None:
    """A copy of an INT8 engine dir whose manifest says its gate was measured on another CPU architecture."""
    import platform

    from runtime.manifest import write_manifest

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((dest / "manifest.json").read_text())
    other = "aarch64" if platform.machine().lower() in ("x86_64", "amd64") else "x86_64"
    for art in manifest["components"]["unet"]["artifacts"]:
        if art["precision"] == "int8":
            art["build_cpu"] = {**art.get("build_cpu", {}), "machine": other}
    write_manifest(dest, manifest)


def _malformed(root: Path, tiny: Path) -> None:
    """Banks and an engine dir whose contents are malformed but whose recorded sha256 match (so the parsers, not
    the hashes, are what refuses them), and a truncated PNG."""
    import hashlib
    import struct

    from runtime.manifest import write_manifest

    def bank(name: str, tensors: dict[str, tuple[list[int], bytes]]) -> None:
        header = {k: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]} for k, (shape, _) in tensors.items()}
        offset, body = 0, b""
        for k, (_, data) in tensors.items():
            header[k]["data_offsets"] = [offset, offset + len(data)]
            offset, body = offset + len(data), body + data
        head = json.dumps(header).encode()
        blob = struct.pack("<Q", len(head)) + head + body
        dest = root / "banks" / name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(root / "banks" / "tiny_plain", dest)
        (dest / "bank.safetensors").write_bytes(blob)
        info = json.loads((dest / "bank.json").read_text())
        info["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
        (dest / "bank.json").write_text(json.dumps(info))

    real = json.loads((root / "banks" / "tiny_plain" / "bank.json").read_text())
    ok = ([2, 1, 4], bytes(32))
    bank("bad_negative_dim", {"text_embeds": ok, "semantic_tokens": ([2, -1, 4], bytes(32))})
    bank("bad_huge_shape", {"text_embeds": ok, "semantic_tokens": ([2**40, 2**40, 2**20], bytes(32))})
    bank("bad_rank2", {"text_embeds": ok, "semantic_tokens": ([2, 4], bytes(32))})
    assert real.get("tensors_sha256")  # the banks above mimic acsdk prepare's bank.json

    def sibling(name: str, edit) -> None:
        """engines/NAME: the tiny dir with its manifest edited in place by `edit(dir, manifest)`, and a sound bank
        for it (banks/NAME_plain), so what is refused is the dir's content."""
        dest = root / "engines" / name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(tiny, dest, ignore=shutil.ignore_patterns("cache"))
        manifest = json.loads((dest / "manifest.json").read_text())
        manifest.pop("schema_version", None)
        edit(dest, manifest)
        write_manifest(dest, manifest)
        plain = root / "banks" / f"{name}_plain"
        shutil.rmtree(plain, ignore_errors=True)
        shutil.copytree(root / "banks" / "tiny_plain", plain)
        info = json.loads((plain / "bank.json").read_text())
        info["engine_manifest_sha256"] = hashlib.sha256((dest / "manifest.json").read_bytes()).hexdigest()
        (plain / "bank.json").write_text(json.dumps(info))

    def without_unet_inputs(dest: Path, manifest: dict) -> None:
        del manifest["components"]["unet"]["inputs"]

    def unrunnable_vae_encoder(dest: Path, manifest: dict) -> None:
        """A VAE encoder graph OpenVINO reads (width left dynamic) but cannot compile for the fed 64 px width: a
        MatMul with a 5 x 8 weight."""
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("MatMul", ["image", "weight"], ["latent_moments"])],
            "unrunnable",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
            [helper.make_tensor_value_info("latent_moments", TensorProto.FLOAT, None)],
            [helper.make_tensor("weight", TensorProto.FLOAT, [5, 8], [0.0] * 40)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        path = dest / "onnx" / "vae_encoder.onnx"
        onnx.save(model, str(path))
        manifest["files"]["onnx/vae_encoder.onnx"] = hashlib.sha256(path.read_bytes()).hexdigest()

    sibling("bad_manifest", without_unet_inputs)
    sibling("bad_vae_graph", unrunnable_vae_encoder)
    png = (root / "inputs" / "rgb64.png").read_bytes()
    (root / "inputs" / "truncated.png").write_bytes(png[: len(png) // 2])


def _native(root: Path, name: str, binary: str) -> tuple[dict, Path] | None:
    """Run acsdk-native on a parity case: its --json summary and output path, or None (reported) on failure."""
    case = json.loads((root / "cases.json").read_text())[name]
    out = root / "native" / f"{name}.png"
    out.parent.mkdir(exist_ok=True)
    args = {**case["args"], "out": str(out)}
    run = subprocess.run([binary, "synth", *_flags(args), "--json"], capture_output=True, text=True)
    if run.returncode != 0:
        print(f"{name}: acsdk-native failed ({run.returncode}): {run.stderr}")
        return None
    return json.loads(run.stdout), out


def _within(case: dict, name: str, native_png: Path, expected_png: str) -> tuple[bool, str]:
    """Whether the native image equals Python's within the case's tolerance, and the numbers that say so."""
    from PIL import Image

    native, expected = np.asarray(Image.open(native_png)), np.asarray(Image.open(expected_png))
    if native.shape != expected.shape or native.dtype != expected.dtype:
        return False, f"native {native.shape} {native.dtype} vs Python {expected.shape} {expected.dtype}"
    diff = np.abs(native.astype(np.int64) - expected.astype(np.int64))
    bits = int(case["args"].get("bit_depth", 16 if expected.dtype == np.uint16 else 8))
    grey = (2**bits - 1) / 255  # one 8-bit grey level, in the image's own scale
    moved = np.asarray(Image.open(case["args"]["image"])) != expected
    changed = int((moved.any(axis=-1) if moved.ndim == 3 else moved).sum())
    worst, mean = diff.max() / grey, diff.mean() / grey
    max_ok, mean_ok = TOLERANCE.get(name, DEFAULT_TOLERANCE)
    max_ok = 1 / grey if max_ok is None else max_ok
    ok = worst <= max_ok and mean <= mean_ok and changed > 0
    return ok, (f"|diff| max {worst:.3f} mean {mean:.4f} grey levels (tolerance {max_ok:.3g} / {mean_ok:g}) over "
                f"{expected.size} values ({changed} pixels changed by the synthesis)")  # fmt: skip


def parity(root: Path, name: str, binary: str) -> int:
    """The native image within tolerance of Python's, the label PNG identical, the same windows and notes."""
    from PIL import Image

    ran = _native(root, name, binary)
    if ran is None:
        return 1
    summary, out = ran
    case = json.loads((root / "cases.json").read_text())[name]
    ok, numbers = _within(case, name, out, case["expected"])
    label = np.array_equal(np.asarray(Image.open(summary["mask_out"])), np.asarray(Image.open(case["expected_mask"])))
    print(f"{name}: windows native {summary['windows']} / Python {case['windows']}; {numbers}; label PNG "
          f"{'identical' if label else 'DIFFERS'}")  # fmt: skip
    ok = ok and label and summary["windows"] == case["windows"]
    if name in NOTES:
        noted = any(n.startswith(NOTES[name]) for n in summary["notes"])
        print(f"{name}: native notes {summary['notes']} ({'has' if noted else 'lacks'} {NOTES[name]!r})")
        ok = ok and noted
    return 0 if ok else 1


def sensitivity(root: Path, name: str, binary: str) -> int:
    """The parity check must refuse Python's one-step-off image: the tolerance catches an off-by-one schedule."""
    ran = _native(root, name, binary)
    if ran is None:
        return 1
    case = json.loads((root / "cases.json").read_text())[name]
    ok, numbers = _within(case, name, ran[1], case["one_step_off"])
    print(
        f"{name}: native vs Python with every timestep one lower: {numbers}: "
        f"{'passes the parity check (tolerance too loose)' if ok else 'refused, as it must be'}"
    )
    return 1 if ok else 0


def bad(root: Path, name: str, binary: str) -> int:
    import hashlib
    import re

    changes, pattern = BAD[name]
    paths = ("engines", "bank", "image", "mask", "out", "mask-out")
    args = {"out": f"native/bad_{name}.png", **BAD_BASE, **changes}
    args = {k: str(root / v) if k in paths else v for k, v in args.items()}
    (root / "native").mkdir(exist_ok=True)
    inputs = [Path(args[k]) for k in ("image", "mask") if Path(args[k]).is_file()]
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs]
    for p in (Path(args[k]) for k in ("out", "mask-out") if k in args):
        if p.parent == root / "native":  # a previous run's leftovers, never a fixture input
            p.unlink(missing_ok=True)
    run = subprocess.run([binary, "synth", *_flags(args)], capture_output=True, text=True)
    lines = run.stderr.strip().splitlines()
    print(f"{name}: exit {run.returncode}, stderr: {run.stderr.strip()!r}")
    outputs = [Path(args[k]) for k in ("out", "mask-out") if k in args]
    written = any(p.exists() and p not in inputs for p in outputs)
    kept = before == [hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs]
    ok = run.returncode != 0 and len(lines) == 1 and re.search(pattern, lines[0]) is not None
    return 0 if ok and not written and kept else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["list"]:
        print(";".join([f"parity_{n}" for n in PARITY] + [f"sensitivity_{n}" for n in SENSITIVITY]
                       + [f"bad_{n}" for n in BAD]))  # fmt: skip
        return 0
    if argv[:1] == ["make"] and len(argv) == 2:
        make(Path(argv[1]))
        return 0
    kinds = {"parity": parity, "sensitivity": sensitivity, "bad": bad}
    if argv[:1] and argv[0] in kinds and len(argv) == 4:
        return kinds[argv[0]](Path(argv[1]), argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
