"""MVTec AD layout reader and the paper's reference/held-out split.

ROOT/<category>/train/good/*.png
ROOT/<category>/test/<defect>/*.png            (test/good has no masks)
ROOT/<category>/ground_truth/<defect>/<stem>_mask.png
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import InputError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None = None


@dataclass
class MVTecCategory:
    root: Path
    name: str
    normals: list[Path]
    anomalies: dict[str, list[Sample]]  # defect -> samples sorted by file name
    skipped: list[dict] = field(default_factory=list)  # unreadable files, with why

    def references(self, defect: str) -> list[Sample]:
        """The paper's split: the first floor(n/3) anomalies by file name are references (training)."""
        samples = self.anomalies[defect]
        return samples[: len(samples) // 3]

    def held_out(self, defect: str) -> list[Sample]:
        samples = self.anomalies[defect]
        return samples[len(samples) // 3 :]


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, sorted; hidden files (.DS_Store, macOS ._ forks) and other suffixes skipped."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _readable(path: Path, skipped: list[dict]) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception as exc:  # PIL raises many types on corrupt files
        log.warning("skipping unreadable image %s (%s)", path, exc)
        skipped.append({"file": str(path), "reason": f"{type(exc).__name__}: {exc}"})
        return False


def load_category(root: str | os.PathLike, category: str, defects: list[str] | None = None) -> MVTecCategory:
    """Scan one category; corrupt files are skipped, logged and listed in `.skipped`."""
    base = Path(root)
    if not base.is_dir():
        raise InputError("data", "an MVTec-style root directory", f"'{base}', which does not exist")
    cat = base / category
    if not cat.is_dir():
        found = sorted(p.name for p in base.iterdir() if (p / "train" / "good").is_dir())
        raise InputError("category", f"one of the categories under {base}: {found}", repr(category))
    good, test, gt = cat / "train" / "good", cat / "test", cat / "ground_truth"
    for need in (good, test, gt):
        if not need.is_dir():
            raise InputError(
                "data",
                f"MVTec layout: {need.relative_to(base)}/ (train/good, test/<defect>, ground_truth/<defect>)",
                f"no such folder in {cat}",
            )
    skipped: list[dict] = []
    normals = [p for p in image_files(good) if _readable(p, skipped)]
    if not normals:
        raise InputError("data", f"normal images in {good}", "none readable")
    available = sorted(p.name for p in test.iterdir() if p.is_dir() and p.name != "good")
    chosen = available if not defects else defects
    unknown = [d for d in chosen if d not in available]
    if unknown:
        raise InputError("defects", f"defect types of '{category}': {available}", ", ".join(unknown))
    anomalies: dict[str, list[Sample]] = {}
    for defect in chosen:
        samples = []
        for img in image_files(test / defect):
            mask = gt / defect / f"{img.stem}_mask.png"
            if not mask.is_file():
                log.warning("skipping %s: no mask %s", img, mask)
                skipped.append({"file": str(img), "reason": f"missing mask {mask.name}"})
                continue
            if _readable(img, skipped) and _readable(mask, skipped):
                samples.append(Sample(img, mask))
        anomalies[defect] = samples
    return MVTecCategory(base, category, normals, anomalies, skipped)
