"""INT8 where it pays: the UNet (35 calls per image, ~all of the compute) quantized by NNCF for OpenVINO, and gated;
and the same UNet as a Q/DQ ONNX for TensorRT (explicit quantization: symmetric, zero point 0, per-channel
weights), made by ONNX Runtime's static quantizer on the same calibration inputs and gated on ONNX Runtime CPU,
which executes the same Q/DQ arithmetic. (NVIDIA's Model Optimizer would make it too, but its ONNX extra pins
onnxruntime-gpu and an older onnx, which cannot sit beside this project's onnxruntime.)

Calibration: the UNet inputs (latents at every step, both CFG rows, text and semantic tokens, lambda) that the
pipeline produces with its fp32 UNet on sample scenes (in an fp16 dir the other components run fp16, as they will
beside the quantized UNet), so the activation ranges are the ones inference meets. The gate
then generates *other* scenes with other seeds (held out from calibration), plus any images the user adds from
their own domain (`--gate-images`), through the INT8 UNet and the fp32 one and compares the final images: mean and
99th-percentile grey-level difference inside the label, PSNR over the blend region (the only pixels generation
may change). A build whose INT8 UNet misses the gate fails (exit 1) and writes nothing. INT8 is opt-in (`--int8`):
it changes the results (within the gate), fp32 and fp16 do not.

Portability: weights are quantized with NNCF's overflow fix (7-bit weights), so x86 CPUs without VNNI compute the
same integers as VNNI ones (see runtime/cpu.py) and the gate measured on the build machine holds on every x86 CPU.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from acsdk.inference.agreement import Gate, agreement

from .errors import BuildArgumentError, BuildError

log = logging.getLogger(__name__)

PROMPT = "a photo of a surface with a defect"
# Weights at 7 bits on every layer: no u8 x s8 pair can saturate pre-VNNI x86's int16 accumulator, so the integers,
# and hence the gate, are the same on every x86 CPU (measured: identical images under ONEDNN_MAX_CPU_ISA=AVX2).
OVERFLOW_FIX = "enable"
QDQ_KINDS = ("int8", "fp8")  # the Q/DQ graphs made for TensorRT
FP8_MIN_COMPUTE_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0) and later; not Orin (8.7), A100 (8.0)


@dataclass(frozen=True)
class Scene:
    """One generation the calibration or the gate runs: a good image, a target mask, a reference and its seed."""

    image: np.ndarray  # HxWx3 uint8
    mask: np.ndarray  # HxW uint8 0/255
    reference: np.ndarray
    reference_mask: np.ndarray
    seed: int
    roi: str = "full"
    source: str = "procedural"


def _u8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0, 1) * 255).round().astype(np.uint8)


@dataclass(frozen=True)
class Scenes:
    """Procedural scenes at the model's size: a surface, a target mask, a reference with its defect.

    `seed` picks both the scenes and the generation seeds, so two `Scenes` with different seeds share neither."""

    count: int = 4
    steps: int = 20
    seed: int = 0

    def make(self, size: int) -> list[Scene]:
        from acsdk.data.procedural import DEFECTS, render_sample

        rng = np.random.default_rng(self.seed)
        out = []
        for i in range(self.count):
            kind = DEFECTS[i % len(DEFECTS)]
            image = render_sample("good", size, rng)[0]
            _, target = render_sample(kind, size, rng)
            ref, ref_mask = render_sample(kind, size, rng)
            out.append(Scene(_u8(image), _u8(target), _u8(ref), _u8(ref_mask), seed=1000 * self.seed + i))
        return out


@dataclass(frozen=True)
class Int8Settings:
    """What `--int8` calibrates on and gates on. The gate's scenes are held out from calibration (other seeds)."""

    # Measured on the demo model (linear-layer scope, overflow fix, gate on 4 held-out scenes): 4 calibration scenes
    # give mean 2.25 / p99 12 grey levels (fails), 12 give 1.51 / 8.0, 24 give 1.02 / 6.0.
    calibration: Scenes = Scenes(count=24, seed=0)
    gate: Scenes = Scenes(count=8, seed=1)
    gate_images: Path | None = None  # the user's own good images, gated besides the procedural scenes

    def __post_init__(self) -> None:
        if self.calibration.seed == self.gate.seed:
            raise BuildArgumentError("int8 settings: gate scenes must be held out (a seed other than calibration's)")

    @classmethod
    def of(
        cls,
        calibration_scenes: int | None = None,
        gate_scenes: int | None = None,
        scene_steps: int | None = None,
        gate_images: Path | None = None,
    ) -> Int8Settings:
        """The defaults with the command line's bounds applied (`--calibration-scenes`, `--gate-scenes`,
        `--scene-steps`): fewer scenes or steps make a real-size build hours shorter and its evidence weaker."""
        d = cls()
        for flag, value, least in (("--calibration-scenes", calibration_scenes, 1), ("--gate-scenes", gate_scenes, 1),
                                   ("--scene-steps", scene_steps, 2)):  # fmt: skip
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise BuildArgumentError(f"{flag}: expected an integer >= {least}, got {value!r}")
        steps = {"steps": scene_steps} if scene_steps is not None else {}
        cal = replace(d.calibration, **({"count": calibration_scenes} if calibration_scenes else {}), **steps)
        gate = replace(d.gate, **({"count": gate_scenes} if gate_scenes else {}), **steps)
        return cls(cal, gate, gate_images)

    def gate_scenes(self, size: int) -> list[Scene]:
        extra = user_scenes(self.gate_images, size) if self.gate_images is not None else []
        return self.gate.make(size) + extra


def gate_image_files(directory: Path) -> list[Path]:
    """The images in `--gate-images` (checked before the build starts)."""
    from acsdk.data.mvtec import IMAGE_SUFFIXES, image_files

    if not directory.is_dir():
        raise BuildArgumentError(f"--gate-images: expected a directory of good images, got '{directory}'")
    files = image_files(directory)
    if not files:
        raise BuildArgumentError(f"--gate-images: expected images ({', '.join(IMAGE_SUFFIXES)}) in '{directory}'")
    return files


def user_scenes(directory: Path, size: int, seed: int = 2) -> list[Scene]:
    """Gate scenes on the user's own good images: each gets a target mask drawn by acsdk's mask sampler on its
    foreground and a procedural reference, generated at its own size with context windows (roi auto)."""
    from PIL import Image, UnidentifiedImageError

    from acsdk.data.masks import estimate_foreground, sample_target_mask
    from acsdk.data.procedural import DEFECTS, render_sample

    rng = np.random.default_rng(seed)
    out = []
    for i, path in enumerate(gate_image_files(directory)):
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise BuildArgumentError(f"--gate-images: '{path}' is not a readable image ({exc})") from exc
        kind = DEFECTS[i % len(DEFECTS)]
        ref, ref_mask = render_sample(kind, size, rng)
        target = sample_target_mask([ref_mask], image.shape[:2], rng, foreground=estimate_foreground(image))
        out.append(Scene(image, _u8(target), _u8(ref), _u8(ref_mask), 1000 * seed + i, "auto", path.name))
    return out


def _generate(synth, scene: Scene, steps: int):
    return synth.run(
        scene.image, scene.mask, PROMPT, scene.reference, scene.reference_mask,
        seed=scene.seed, num_inference_steps=steps, roi=scene.roi,
    )  # fmt: skip


def calibration_inputs(
    engine_dir: Path, scenes: list[Scene], steps: int, progress: bool = True
) -> list[dict[str, np.ndarray]]:
    """The UNet's inputs at every step of the pipeline on the scenes (one dict per call), with the fp32 UNet: the
    graph being quantized sees the inputs it produces itself. The other components run at the dir's precision
    (an `--fp16 --int8` dir's fp16 text encoder and VAE: what its INT8 UNet will be fed)."""
    from acsdk.inference.synthesizer import Synthesizer

    # Every component held (low_memory=False): the recording wraps the open UNet, which a release would drop.
    synth = Synthesizer(engine_dir, backend="openvino", device="cpu", precision_overrides={"unet": "fp32"},
                        low_memory=False)  # fmt: skip
    unet = synth.parts.engines["unet"]
    seen: list[dict[str, np.ndarray]] = []
    real = unet.run

    def record(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seen.append({k: v.detach().cpu().numpy().copy() for k, v in inputs.items()})
        return real(inputs)

    unet.run = record
    for scene in tqdm(scenes, desc="quantization: calibration scenes", unit="scene", disable=not progress):
        _generate(synth, scene, steps)
    return seen


@dataclass(frozen=True)
class Scope:
    """Which layers run in INT8. Tried in order until one passes the gate."""

    name: str
    keep_fp32_scopes: tuple[str, ...]  # module scopes left in fp32 (mapped to nodes by the exporter's metadata)
    keep_fp32_types: tuple[str, ...] = ()  # OpenVINO op types left in fp32
    onnx_op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")  # ONNX op types the Q/DQ graph quantizes


# The UNet's first and last convolutions and its timestep embedding set the scale of everything else; measured on
# the demo model, quantizing them doubles the error. Measured there too (24 calibration scenes, held-out gate): every
# conv and matmul in INT8 gives mean 3.1 / p99 24 grey levels inside the label (fails), the linear layers alone
# 1.0 / 6.0 (passes).
ENDS = ("unet.conv_in", "unet.conv_out", "unet.time_embedding", "unet.time_proj")
SCOPES = (
    Scope("convolutions and linear layers", ENDS),
    Scope("linear layers (convolutions fp32)", ENDS, ("Convolution",), ("MatMul", "Gemm")),
)


def quantize_unet(
    onnx_path: Path,
    calibration: list[dict[str, np.ndarray]],
    out_xml: Path,
    scope: Scope,
    overflow_fix: str = OVERFLOW_FIX,
) -> Path:
    """NNCF post-training quantization (mixed preset: symmetric weights, asymmetric activations) to OpenVINO IR.

    `overflow_fix` "enable" (the default) keeps weights at 7 bits so pre-VNNI x86 computes what VNNI computes;
    "disable" and "first_layer_only" exist for measuring what that costs."""
    try:
        import nncf
        import onnx
        import openvino as ov
    except ImportError as exc:
        raise BuildError(f"--int8 needs OpenVINO and NNCF ({exc}): pip install 'acsdk[openvino]'") from exc
    from .onnx_export import nodes_in_scopes

    names = nodes_in_scopes(onnx.load(str(onnx_path), load_external_data=False), scope.keep_fp32_scopes)
    ignored = nncf.IgnoredScope(
        patterns=[f"^{re.escape(n)}(/.*)?$" for n in names], types=list(scope.keep_fp32_types), validate=False
    )
    model = ov.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(calibration),
        preset=nncf.QuantizationPreset.MIXED,
        model_type=nncf.ModelType.TRANSFORMER,  # keeps softmax and the attention scores' matmul out of INT8
        subset_size=len(calibration),
        ignored_scope=ignored,
        advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix(overflow_fix)),
    )
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return out_xml


def quantize_unet_qdq(
    onnx_path: Path,
    calibration: list[dict[str, np.ndarray]],
    out_path: Path,
    scope: Scope,
    kind: str = "int8",
    progress: bool = False,
) -> Path:
    """The UNet as a Q/DQ ONNX for TensorRT's explicit quantization. `kind` "int8": INT8 weights per output channel
    and INT8 activations, both symmetric (zero point 0, which TensorRT requires), min/max calibrated on
    `calibration`; "fp8": E4M3 weights and activations, per tensor, scaled so the calibrated |max| lands on E4M3's
    largest value 448 (TensorRT's FP8 recipe; ONNX Runtime's own FP8 scale matches standard deviations, which
    clips the outliers: mean 5.5 / p99 28 grey levels on the demo model's gate, against 0.8 / 6 for INT8); the
    graph moves to opset 19, which defines float8 Q/DQ. Biases stay float
    (TensorRT's Q/DQ takes 8-bit types, not ONNX Runtime's int32 bias quantization). INT8 weights span 7 bits (as
    OpenVINO's overflow fix): ONNX Runtime's pre-VNNI x86 kernels multiply in saturating int16 pairs, so the gate
    it measures holds on AVX2-only CPUs too; TensorRT reads them as ordinary INT8.
    Left in float: the scope's fp32 modules and, as NNCF's transformer mode does for OpenVINO, the attention's
    activation-by-activation matmuls (scores and their product with the values).

    Real size: the calibration models and the output are written with external data (a real-size UNet is past
    protobuf's 2 GiB). Ranges are calibrated min/max (the calibration graph reduces every tensor to its min and max,
    so a 512 px call keeps two numbers per tensor, not its activations); FP8's scales come from those |max| values,
    not from ONNX Runtime's histogram calibration, which would hold every call's activations."""
    if kind not in QDQ_KINDS:
        raise BuildArgumentError(f"Q/DQ kind: expected one of {', '.join(QDQ_KINDS)}, got {kind!r}")
    # float8 Q/DQ is defined from opset 19: the graph is converted first, its weights left where they are
    with _at_opset(onnx_path, FP8_OPSET) if kind == "fp8" else nullcontext(onnx_path) as source:
        return _quantize_qdq(source, calibration, out_path, scope, kind, progress)


def _quantize_qdq(
    onnx_path: Path,
    calibration: list[dict[str, np.ndarray]],
    out_path: Path,
    scope: Scope,
    kind: str,
    progress: bool,
) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .onnx_export import nodes_in_scopes

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    produced_by = {o: n for n in graph.node for o in n.output}

    def constant(name: str) -> bool:  # an initializer, or a Constant / a cast or transpose of one
        node = produced_by.get(name)
        while node is not None and node.op_type in ("Transpose", "Cast", "Reshape") and node.input:
            name, node = node.input[0], produced_by.get(node.input[0])
        return name in weights or (node is not None and node.op_type == "Constant")

    attention = [n.name for n in graph.node if n.op_type == "MatMul" and not any(constant(i) for i in n.input)]
    excluded = nodes_in_scopes(model, scope.keep_fp32_scopes)
    del model, graph
    fp8 = kind == "fp8"
    qtype = QuantType.QFLOAT8E4M3FN if fp8 else QuantType.QInt8
    options = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    if fp8:  # every calibrated tensor gets its |max| / 448 scale: ONNX Runtime's std-based FP8 scale is never used
        options["TensorQuantOverrides"] = _fp8_amax_scales(onnx_path, calibration, scope.onnx_op_types, progress)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # ONNX Runtime insists on its histogram calibration for float8 and keeps every call's activations for it (GBs
    # per call at 512 px); the overrides above set every scale, so one row satisfies it.
    rows = unet_rows(calibration)
    feeds = _Feeds(rows[:1] if fp8 else rows, f"quantization: {kind} Q/DQ ranges", progress)
    with _calibration_in_priority_order():
        quantize_static(
            str(onnx_path), str(out_path), feeds,
            quant_format=QuantFormat.QDQ, activation_type=qtype, weight_type=qtype,
            per_channel=not fp8, reduce_range=not fp8,
            op_types_to_quantize=list(scope.onnx_op_types), nodes_to_exclude=excluded + attention,
            calibrate_method=CalibrationMethod.Distribution if fp8 else CalibrationMethod.MinMax,
            extra_options=options, use_external_data_format=True,
        )  # fmt: skip
    _inline_small(out_path)
    onnx.checker.check_model(str(out_path), full_check=True)
    return out_path


FP8_OPSET = 19


@contextmanager
def _at_opset(path: Path, opset: int) -> Iterator[Path]:
    """The graph at `path` converted to `opset` beside it (its weights left in their external-data file, which the
    converted graph names by the same relative path), for as long as the context lasts. ONNX Runtime's quantizer
    converts by serialising the whole model with its weights, which fails past protobuf's 2 GiB (a real-size UNet)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        yield path
        return
    converted = onnx.version_converter.convert_version(model, opset)
    out = path.with_name(f"{path.stem}.opset{opset}.tmp.onnx")
    onnx.save(converted, str(out))
    try:
        yield out
    finally:
        out.unlink(missing_ok=True)


@contextmanager
def _calibration_in_priority_order() -> Iterator[None]:
    """ONNX Runtime's calibrators run their graph (every measured tensor also feeding a ReduceMin/ReduceMax, or kept
    as an output) in ONNX Runtime's default execution order, which keeps them alive: a 512 px UNet row held 10.9 GB
    of activations that way, 2.5 GB in the priority-based order (measured, one row, no arena). The session is made in
    `CalibraterBase.create_inference_session`, with no option to pass: replaced, as the original makes it but for
    the order, for the duration of one quantization (where that method exists)."""
    import onnxruntime
    from onnxruntime.quantization import calibrate

    base = getattr(calibrate, "CalibraterBase", None)
    original = getattr(base, "create_inference_session", None)
    if original is None or not hasattr(onnxruntime, "ExecutionOrder"):
        yield
        return

    def create_inference_session(self) -> None:
        opts = onnxruntime.SessionOptions()
        opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.execution_order = onnxruntime.ExecutionOrder.PRIORITY_BASED
        self.infer_session = onnxruntime.InferenceSession(
            self.augmented_model_path, sess_options=opts, providers=self.execution_providers
        )

    base.create_inference_session = create_inference_session
    try:
        yield
    finally:
        base.create_inference_session = original


def unet_rows(calibration: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Each recorded UNet call split into its rows (CFG's unconditional and conditional), for ONNX Runtime's
    calibration: min/max over the rows one at a time are the min/max over the call, and the calibration graph, which
    measures every tensor, holds half the activations on one row (in ONNX Runtime's default order a 512 px call of two
    rows took 20.6 GB of its own memory, one row 10.9 GB: measured)."""
    from .specs import BATCH, SPECS

    batched = {t.name for t in SPECS["unet"].inputs if t.shape and t.shape[0] == BATCH}
    out = []
    for feed in calibration:
        rows = next(len(v) for k, v in feed.items() if k in batched)
        out += [{k: (v[i : i + 1] if k in batched else v) for k, v in feed.items()} for i in range(rows)]
    return out


class _Feeds:
    """ONNX Runtime's calibration data reader over `calibration`, with a progress bar (the pass that runs the model
    once per sample is the long part of a Q/DQ quantization)."""

    def __init__(self, calibration: list[dict[str, np.ndarray]], desc: str, progress: bool):
        self.feeds = iter(calibration)
        self.bar = tqdm(total=len(calibration), desc=desc, unit="call", disable=not progress)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self.feeds, None)
        if feed is None:
            self.bar.close()
        else:
            self.bar.update()
        return feed


def _inline_small(path: Path) -> None:
    """A Q/DQ graph small enough for one protobuf file is stored as one (the quantizer wrote external data to be
    safe at real size); a larger one keeps its weights in `<name>.data` beside it, listed in the manifest."""
    import onnx

    from .onnx_export import EXTERNAL_DATA_THRESHOLD, artifact_files

    data = artifact_files(path)[1:]
    if sum(f.stat().st_size for f in data) >= EXTERNAL_DATA_THRESHOLD:
        return
    model = onnx.load(str(path))
    onnx.save(model, str(path))
    for f in data:
        f.unlink()


E4M3_MAX = 448.0


def _fp8_amax_scales(
    onnx_path: Path, calibration: list[dict[str, np.ndarray]], op_types: tuple[str, ...], progress: bool = False
) -> dict:
    """ONNX Runtime TensorQuantOverrides giving every tensor the calibrator ranges for the quantized op types scale
    = |max| / 448, zero point 0: weights' |max| from their values, activations' from a min/max pass over
    `calibration`."""
    import tempfile

    import onnx
    from ml_dtypes import float8_e4m3fn
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    with tempfile.TemporaryDirectory() as tmp:
        with _calibration_in_priority_order():
            calibrator = create_calibrator(
                onnx_path, list(op_types), Path(tmp) / "augmented.onnx", CalibrationMethod.MinMax,
                use_external_data_format=True, extra_options={"symmetric": True},
            )  # fmt: skip
        calibrator.collect_data(_Feeds(unet_rows(calibration), "quantization: fp8 activation ranges", progress))
        ranges = calibrator.compute_data()
        del calibrator
    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs = {i for n in model.graph.node if n.op_type in op_types for i in n.input[:2]}
    onnx.load_external_data_for_model(model, str(onnx_path.parent))
    amax = {t.name: float(np.abs(numpy_helper.to_array(t)).max()) for t in model.graph.initializer if t.name in inputs}
    del model
    for name in ranges:
        if name not in amax:
            amax[name] = float(np.abs(np.concatenate([np.ravel(v) for v in ranges[name].range_value])).max())
    zero = np.array(0, dtype=float8_e4m3fn)
    return {n: [{"scale": np.array(max(a, 1e-12) / E4M3_MAX, np.float32), "zero_point": zero}] for n, a in amax.items()}


def gate_metrics(
    engine_dir: Path,
    scenes: list[Scene],
    steps: int,
    backend: str = "openvino",
    precision: str = "int8",
    progress: bool = False,
) -> dict:
    """The quantized UNet against the fp32 one, everything else equal, on the scenes: the numbers the gate judges.
    `backend` "openvino" gates the OpenVINO INT8 IR, "onnxruntime" a Q/DQ ONNX of `precision` (int8, fp8), whose
    arithmetic ONNX Runtime CPU runs."""
    from acsdk.inference.synthesizer import Synthesizer

    results = {}
    bar = tqdm(total=2 * len(scenes), desc=f"quantization: {precision} gate on {backend}", unit="image",
               disable=not progress)  # fmt: skip
    for prec in (precision, "fp32"):
        # One component at a time: the build already holds GBs, and a real-size ONNX Runtime pipeline holding
        # everything (~16 GB) beside them was stopped by the OOM killer on a 24 GB host (docs/real-size.md).
        synth = Synthesizer(engine_dir, backend=backend, device="cpu", precision_overrides={"unet": prec},
                            low_memory=True)  # fmt: skip
        model_size = (synth.parts.config.height, synth.parts.config.width)
        results[prec] = []
        for scene in scenes:
            results[prec].append(_generate(synth, scene, steps))
            bar.update()
        del synth  # one Synthesizer's engines at a time (at real size each UNet holds GBs)
    bar.close()
    return {
        **agreement(list(zip(results[precision], results["fp32"], strict=True)), model_size),
        "scenes": len(scenes),
        "user_scenes": sum(s.source != "procedural" for s in scenes),
        "steps": steps,
        "backend": backend,
    }


def gate_record(metrics: dict, gate: Gate) -> dict:
    return {**metrics, "gate": asdict(gate), "passed": gate.check(metrics)}
