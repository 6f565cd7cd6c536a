"""`acsdk demo`: the whole product on an embedded default, offline: data -> engines -> synthetic training set."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from . import __version__
from .cache import cache_dir
from .contact_sheet import contact_sheet
from .data.procedural import make_mvtec_like
from .generate import generate
from .testing import make_tiny_checkpoint

log = logging.getLogger(__name__)

DEMO_MODEL_NOTE = (
    "The demo runs the tiny *random* test checkpoint: the pipeline is complete (procedural MVTec-style data, "
    "compiled ONNX engines, CSM + ASEA + SGA synthesis), but its 'defects' are untrained noise, not realistic "
    "anomalies."
)
CATEGORY = "plate"
DEFECTS = ("hole", "scratch", "stain")


@dataclass
class DemoSummary:
    out_dir: Path
    images: list[Path]
    contact_sheet: Path
    timings: dict[str, float]
    asea: dict
    note: str
    engines: Path


def demo_checkpoint() -> Path:
    path = cache_dir() / f"demo-{__version__}" / "tiny-checkpoint"
    if not (path / "acsdk.json").is_file():
        log.info("building the demo checkpoint in %s", path)
        make_tiny_checkpoint(path, seed=0)
    return path


def demo_engines() -> Path:
    """The demo checkpoint compiled once (about a minute on 2 cores) and cached."""
    from export.build import build_engine_dir

    path = cache_dir() / f"demo-{__version__}" / "engines"
    if not (path / "manifest.json").is_file():
        log.warning("compiling the demo engines into %s (once; about a minute on 2 CPU cores)", path)
        build_engine_dir(demo_checkpoint(), path, backend="onnx", force=True, progress=True)
    return path


def run_demo(
    out_dir: str | Path, per_type: int = 2, seed: int = 0, steps: int = 50, engines: str | Path | None = None
) -> DemoSummary:
    out = Path(out_dir)
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    make_mvtec_like(data, CATEGORY, size=64, n_good=6, n_per_defect=6, defects=DEFECTS, seed=seed)
    engine_dir = Path(engines) if engines else demo_engines()
    synth_dir = out / "synthetic"
    if synth_dir.exists():
        shutil.rmtree(synth_dir)
    summary = generate(
        engine_dir,
        data,
        CATEGORY,
        per_type,
        synth_dir,
        seed=seed,
        num_inference_steps=steps,
        backend="onnxruntime",
        device="cpu",
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
            for k, v in rec["timings"].items():
                timings.setdefault(k, []).append(v)
            asea = asea or rec["asea"]
    sheet = out / "contact_sheet.png"
    contact_sheet(rows, titles=("normal", "reference", "mask", "result")).save(sheet)
    means = {k: sum(v) / len(v) for k, v in timings.items()}
    (out / "summary.json").write_text(
        json.dumps(
            {
                "images": len(images),
                "engines": str(engine_dir),
                "timings_mean_s": means,
                "asea_example": asea,
                "note": DEMO_MODEL_NOTE,
            },
            indent=2,
        )
    )
    return DemoSummary(out, images, sheet, means, asea, DEMO_MODEL_NOTE, engine_dir)
