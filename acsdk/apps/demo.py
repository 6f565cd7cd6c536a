"""`acsdk demo`: the whole product on an embedded default, offline: data -> engines -> synthetic training set."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from runtime.files import atomic_path, atomic_write, cache_dir

from ..data.contact_sheet import contact_sheet
from ..data.generate import generate
from ..data.procedural import make_mvtec_like
from ..errors import CheckpointError, InputError
from ..inference.synthesizer import Synthesizer
from ..models.checkpoint import checkpoint_digest
from ..version import __version__

log = logging.getLogger(__name__)

DEMO_MODEL_NOTE = (
    "The demo model is a 64-px AnomalyControl (VAE, 9-channel SGA UNet, CLIP text encoder, vision tower + "
    "Q-Former, adapter) trained from scratch on procedural surfaces by `python -m acsdk.train_base` in about "
    "45 minutes on 2 CPU cores (docs/demo-model.md): it shows the whole chain working, not production quality."
)
MARKER = ".acsdk-demo"
OUTPUTS = (
    "data",
    "synthetic",
    "contact_sheet.png",
    "large_image.png",
    "summary.json",
)  # all the demo writes, all it may delete
CATEGORY = "plate"
DEFECTS = ("hole", "scratch", "stain", "crack")
DEMO_MODEL = Path(__file__).parent.parent / "assets" / "demo-model"


@dataclass
class DemoSummary:
    out_dir: Path
    images: list[Path]
    contact_sheet: Path
    timings: dict[str, float]
    asea: dict
    note: str
    engines: Path
    backend: str


def demo_checkpoint() -> Path:
    """The trained demo model shipped inside the package (an ordinary acsdk checkpoint, ~15 MB)."""
    if not (DEMO_MODEL / "acsdk.json").is_file():
        raise CheckpointError("demo model", DEMO_MODEL, "missing from this installation of acsdk")
    return DEMO_MODEL


def demo_engines() -> Path:
    """The demo checkpoint compiled once (about a minute on 2 cores) and cached, keyed by its digest."""
    from export.build import build_engine_dir

    digest = checkpoint_digest(demo_checkpoint())[:12]
    path = cache_dir() / f"demo-{__version__}-{digest}" / "engines"
    if not (path / "manifest.json").is_file():
        log.warning("compiling the demo engines into %s (once; about a minute on 2 CPU cores)", path)
        build_engine_dir(demo_checkpoint(), path, backend="onnxruntime", force=True, progress=True)
    return path


def _claim(out: Path) -> None:
    """Make `out` the demo's: a new or empty directory gets the marker; one with the marker had a demo run
    before, whose outputs are removed; anything else belongs to the user and is refused, never deleted."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise InputError("out", "a directory for the demo's outputs", f"'{out}', which is a file")
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise InputError(
            "out",
            f"a new or empty directory, or one an earlier `acsdk demo` wrote ({MARKER})",
            f"'{out}' holds other files",
        )
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    atomic_write(marker, "written by `acsdk demo`; it may delete and rewrite: " + ", ".join(OUTPUTS) + "\n")


def large_image_example(
    synth: Synthesizer, data: Path, path: Path, steps: int = 50, seed: int = 0, size: int = 1024
) -> dict:
    """A small defect on a large image, generated in a window around its mask, beside the same defect made by
    squashing the whole image to the model's size (roi="full"), where it spans ~2 model pixels. Writes a figure."""
    import numpy as np

    from ..data.procedural import render_sample

    rng = np.random.default_rng(seed + 99)
    image = (render_sample("good", size, rng)[0] * 255).round().astype(np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = int(size * 0.62), int(size * 0.35)
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 12**2).astype(np.uint8) * 255  # a 25 px hole on 1024 px
    ref = sorted((data / CATEGORY / "test" / "hole").glob("*.png"))[0]
    ref_mask = data / CATEGORY / "ground_truth" / "hole" / f"{ref.stem}_mask.png"
    prompt = f"a photo of a {CATEGORY} with a hole"
    runs = {roi: synth.run(image, mask, prompt, ref, ref_mask, seed=seed, num_inference_steps=steps, roi=roi)
            for roi in ("auto", "full")}  # fmt: skip
    win = runs["auto"].windows[0]
    model = synth.parts.config.width
    extent = {"auto": 25 * model / win["width"], "full": 25 * model / size}  # the defect, in model pixels
    box = (win["left"], win["top"], win["left"] + win["width"], win["top"] + win["height"])
    overview = Image.fromarray(image).copy()
    ImageDraw.Draw(overview).rectangle(box, outline=(255, 0, 0), width=6)
    crops = [Image.fromarray(image).crop(box), runs["auto"].image.crop(box), runs["full"].image.crop(box)]
    row = [overview, *crops, runs["auto"].mask.crop(box)]
    titles = (f"{size} px, window", "input (crop)", "roi=auto", "roi=full", "label")
    with atomic_path(path) as tmp:
        contact_sheet([row], cell=192, titles=titles).save(tmp, format="PNG")
    return {"size": size, "window": win, "defect_extent_model_px": extent, "figure": str(path)}


def run_demo(
    out_dir: str | Path, per_type: int = 2, seed: int = 0, steps: int = 50, engines: str | Path | None = None
) -> DemoSummary:
    out = Path(out_dir)
    engine_dir = Path(engines) if engines else demo_engines()
    _claim(out)
    data = out / "data"
    make_mvtec_like(data, CATEGORY, size=64, n_good=6, n_per_defect=6, defects=DEFECTS, seed=seed)
    synth_dir = out / "synthetic"
    synth = Synthesizer(engine_dir, device="cpu")  # the fastest backend installed (OpenVINO, else ONNX Runtime)
    backend = synth.parts.engines["unet"].backend  # opens the UNet, which the run needs first anyway
    summary = generate(
        None,
        data,
        CATEGORY,
        per_type,
        synth_dir,
        seed=seed,
        num_inference_steps=steps,
        synthesizer=synth,
        progress=True,
    )
    rows, images, timings, asea = [], [], {}, {}
    for defect in DEFECTS:
        ddir = summary.out_dir / defect
        for line in (ddir / "metadata.jsonl").read_text().splitlines():
            rec = json.loads(line)
            images.append(ddir / rec["image"])
            rows.append(
                [
                    Image.open(data / rec["normal"]),
                    Image.open(data / rec["reference"]),
                    Image.open(ddir / rec["mask"]),
                    Image.open(ddir / rec["image"]),
                ]
            )
            for k, v in rec["run"]["timings"].items():
                timings.setdefault(k, []).append(v)
            asea = asea or rec["asea"]
    sheet = out / "contact_sheet.png"
    with atomic_path(sheet) as tmp:
        contact_sheet(rows, titles=("normal", "reference", "mask", "result")).save(tmp, format="PNG")
    means = {k: sum(v) / len(v) for k, v in timings.items()}
    large = large_image_example(synth, data, out / "large_image.png", steps=steps, seed=seed)
    atomic_write(
        out / "summary.json",
        json.dumps(
            {
                "images": len(images),
                "engines": str(engine_dir),
                "backend": backend,
                "timings_mean_s": means,
                "asea_example": asea,
                "large_image": large,
                "note": DEMO_MODEL_NOTE,
            },
            indent=2,
        ),
    )
    return DemoSummary(out, images, sheet, means, asea, DEMO_MODEL_NOTE, engine_dir, backend)
