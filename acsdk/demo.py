"""`acsdk demo`: the whole job on an embedded default, offline, in seconds on 2 CPU cores."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from . import __version__
from .cache import cache_dir
from .contact_sheet import contact_sheet
from .synthesizer import Synthesizer
from .testing import make_box_mask, make_defect_pair, make_texture, make_tiny_checkpoint

log = logging.getLogger(__name__)

DEMO_MODEL_NOTE = (
    "The demo runs the tiny *random* test checkpoint: the pipeline is complete, but its 'defects' are "
    "untrained noise, not realistic anomalies."
)


@dataclass
class DemoSummary:
    out_dir: Path
    images: list[Path]
    contact_sheet: Path
    timings: dict[str, float]
    asea: dict
    note: str


def demo_checkpoint() -> Path:
    path = cache_dir() / f"demo-{__version__}" / "tiny-checkpoint"
    if not (path / "acsdk.json").is_file():
        log.info("building the demo checkpoint in %s", path)
        make_tiny_checkpoint(path, seed=0)
    return path


def run_demo(out_dir: str | Path, count: int = 4, seed: int = 0, steps: int = 50) -> DemoSummary:
    out = Path(out_dir)
    (out / "image").mkdir(parents=True, exist_ok=True)
    (out / "mask").mkdir(parents=True, exist_ok=True)
    synth = Synthesizer.from_checkpoint(demo_checkpoint())
    size = synth.parts.config.height
    ref_img, ref_mask = make_defect_pair(size, seed=seed + 100)
    features = synth.encode_reference(ref_img, ref_mask, "a photo of a surface with a hole")
    rows, written, timings = [], [], {}
    for i in range(count):
        normal = make_texture(size, seed=seed + i, gray=(i % 2 == 1))
        side = size // 4 + (i * 3) % (size // 4)
        mask = make_box_mask(size, size // 4 + i * 2, size // 3, side, side)
        res = synth.run(
            normal,
            mask,
            "a photo of a surface with a hole",
            reference=features,
            seed=seed + i,
            num_inference_steps=steps,
        )
        res.image.save(out / "image" / f"{i:03d}.png")
        res.mask.save(out / "mask" / f"{i:03d}.png")
        written.append(out / "image" / f"{i:03d}.png")
        rows.append([Image.fromarray(normal), res.mask, res.image])
        for k, v in res.timings.items():
            timings[k] = timings.get(k, 0.0) + v / count
    sheet_path = out / "contact_sheet.png"
    contact_sheet(rows, titles=("normal", "mask", "result")).save(sheet_path)
    summary = {"timings_mean_s": timings, "asea": features.asea, "note": DEMO_MODEL_NOTE, "images": count}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return DemoSummary(out, written, sheet_path, timings, features.asea, DEMO_MODEL_NOTE)
