"""What the detector trains and is tested on: pixels read once at the detector's size, from the MVTec layout and
from `acsdk generate`'s layout, and the training sets (synthetic, real-train, perlin, cutpaste) as one interface.

The real data splits as the paper does: per defect type the first third (by file name) are the references a
synthetic set was conditioned on and the "real-train" upper bound trains on; the other two thirds are the test.
An image's label is its folder (test/good is normal, every other defect folder anomalous), never its mask; masks are
brought to the detector's size by a max pool, so a thin defect or a 0/1-valued mask is not lost on the way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from runtime.files import confined

from ..data.mvtec import MVTecCategory, image_files
from ..errors import InputError
from ..inference.imaging import read_mask as read_mask_file
from ..inference.imaging import read_rgb8, resize_mask
from .baselines import cutpaste_anomaly, perlin_anomaly

log = logging.getLogger(__name__)

SYNTHETIC_LAYOUT = (
    "the `acsdk generate` layout: SYNTH/<category>/<defect>/image/NNNN.png, mask/NNNN.png and metadata.jsonl "
    'with one JSON line per finished pair, e.g. {"index": 0, "image": "image/0000.png", "mask": "mask/0000.png"}'
)


def read_image(path: Path, size: int, argument: str = "image") -> np.ndarray:
    """size x size x 3 uint8: the project's one 8-bit RGB reader (`imaging.read_rgb8`), resized bilinearly."""
    rgb = read_rgb8(path, argument)
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))


def read_mask(path: Path, size: int, image: Path, argument: str = "mask") -> np.ndarray:
    """size x size bool (the project's one mask reader and its one mask resize, which never loses a defect); a mask
    whose shape differs from its image's is refused (they do not pair)."""
    with Image.open(path) as m, Image.open(image) as im:
        if m.size != im.size:
            raise InputError("mask", f"a mask the size of its image {image} {im.size}", f"{path} of {m.size}")
    return resize_mask(torch.from_numpy(read_mask_file(path, argument)), size, size).numpy()  # one max-pool rule


@dataclass
class Pairs:
    """Images (N x S x S x 3 uint8) with masks (N x S x S bool) and where each came from: `defects` is the defect
    folder (or set) of each image, "good" for a normal one."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]
    defects: list[str]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def labels(self) -> np.ndarray:
        """Image-level truth, from where each image came (not from its mask): anomalous unless "good"."""
        return np.array([d != "good" for d in self.defects], dtype=bool)

    def take(self, index: np.ndarray | list[int]) -> Pairs:
        idx = np.asarray(index, dtype=int)
        return Pairs(self.images[idx], self.masks[idx], [self.names[i] for i in idx], [self.defects[i] for i in idx])


def read_pairs(items: list[tuple[Path, Path | None, str]], size: int, argument: str = "mask") -> Pairs:
    """(image, mask or None for a normal, defect) files -> Pairs at `size`.

    An image with a defect other than "good" is anomalous: its mask must have a defect pixel, or it is refused
    (InputError on `argument`, naming the mask and the image) rather than scored as a normal image."""
    images = np.zeros((len(items), size, size, 3), dtype=np.uint8)
    masks = np.zeros((len(items), size, size), dtype=bool)
    for i, (image, mask, defect) in enumerate(items):
        try:
            images[i] = read_image(image, size, argument)
            if mask is not None:
                masks[i] = read_mask(mask, size, image, argument)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL: truncated or not an image (InputError is a ValueError)
            if isinstance(exc, InputError):
                raise
            raise InputError(argument, "readable image and mask files", f"'{image}' / '{mask}': {exc}") from exc
        if defect != "good" and not masks[i].any():
            raise InputError(
                argument,
                "a mask with at least one defect pixel for every anomalous image (any defect folder but good)",
                f"an empty mask '{mask}' for '{image}' ({defect})" if mask is not None else f"no mask for '{image}'",
            )
    return Pairs(images, masks, [str(p) for p, _, _ in items], [d for _, _, d in items])


def read_synthetic(
    synthetic: str | os.PathLike, category: str, real_defects: Sequence[str]
) -> dict[str, list[tuple[Path, Path]]]:
    """defect -> (image, mask) of the pairs recorded in its metadata.jsonl, in index order.

    The layout is checked strictly (a wrong folder gives a wrong score, not an error, otherwise): a missing category
    folder, a defect folder without metadata.jsonl, a defect the real data lacks, or a line naming a missing file is
    an InputError naming `synthetic`. A torn last line (a generate run killed mid-append) is skipped with a warning.
    """
    root = Path(synthetic)
    if not root.is_dir():
        raise InputError("synthetic", SYNTHETIC_LAYOUT, f"'{root}', which is not a folder")
    cat = root / category
    if not cat.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise InputError("synthetic", SYNTHETIC_LAYOUT, f"no folder '{category}' in '{root}' (folders there: {found})")
    out: dict[str, list[tuple[Path, Path]]] = {}
    for ddir in sorted(p for p in cat.iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta = ddir / "metadata.jsonl"
        if not meta.is_file():
            raise InputError("synthetic", SYNTHETIC_LAYOUT, f"'{ddir}' without metadata.jsonl")
        if ddir.name not in real_defects:
            raise InputError(
                "synthetic",
                f"{SYNTHETIC_LAYOUT}, with defect types of the real '{category}': {sorted(real_defects)}",
                f"defect folder '{ddir.name}' in '{cat}'",
            )
        lines = meta.read_text().splitlines()
        seen: dict[int, tuple[Path, Path]] = {}
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):
                    log.warning("%s: skipping the torn last line %d (an interrupted generate run)", meta, n)
                    continue
                raise InputError("synthetic", SYNTHETIC_LAYOUT, f"'{meta}' line {n}: not JSON") from None
            if not isinstance(rec, dict) or not all(isinstance(rec.get(k), str) for k in ("image", "mask")):
                raise InputError("synthetic", SYNTHETIC_LAYOUT, f"'{meta}' line {n}: no 'image' and 'mask' entries")
            files = {k: confined(ddir, rec[k]) for k in ("image", "mask")}
            for key, path in files.items():
                if path is None or not path.is_file():
                    raise InputError(
                        "synthetic",
                        SYNTHETIC_LAYOUT,
                        f"'{meta}' line {n}: {key} '{rec[key]}' is not a file in '{ddir}'",
                    )
            index = rec.get("index", n - 1)
            if not isinstance(index, int) or isinstance(index, bool):
                raise InputError("synthetic", SYNTHETIC_LAYOUT, f"'{meta}' line {n}: index {index!r} is not a number")
            if index in seen:
                log.warning("%s line %d: index %s recorded twice; keeping the first", meta, n, index)
                continue
            seen[index] = (files["image"], files["mask"])
        out[ddir.name] = [seen[i] for i in sorted(seen)]
    if not out:
        raise InputError("synthetic", SYNTHETIC_LAYOUT, f"no defect folders in '{cat}'")
    if not any(out.values()):
        raise InputError("synthetic", f"{SYNTHETIC_LAYOUT}; at least one pair", f"no pairs recorded under '{cat}'")
    return out


def held_out_count(n: int, fraction: float) -> int:
    """How many of n items validate: the fraction rounded, at least one, never all (none of a single item)."""
    return min(max(round(fraction * n), 1), n - 1)


@dataclass
class RealSplit:
    """The real category at the detector's size: normals to train on, references, and the held-out test."""

    normals: Pairs
    references: Pairs
    test: Pairs  # held-out defects of every type, then the good test images (empty masks)

    @classmethod
    def read(cls, cat: MVTecCategory, size: int) -> RealSplit:
        refs = [(s.image, s.mask, d) for d in sorted(cat.anomalies) for s in cat.references(d)]
        held = [(s.image, s.mask, d) for d in sorted(cat.anomalies) for s in cat.held_out(d)]
        if not held:
            raise InputError(
                "category", "a category with held-out real defects (2/3 of each type's test images)", cat.name
            )
        good_dir = cat.root / cat.name / "test" / "good"
        goods = image_files(good_dir) if good_dir.is_dir() else []  # the MVTec reader's filter: no .DS_Store, ._x
        test = held + [(p, None, "good") for p in goods]
        return cls(
            normals=read_pairs([(p, None, "good") for p in cat.normals], size, "real"),
            references=read_pairs(refs, size, "real"),
            test=read_pairs(test, size, "real"),
        )


class TrainingSet:
    """Anomalous (image, mask) examples for the detector: a fixed list (synthetic, real-train) or drawn on the fly
    from normal images (perlin, cutpaste). `draw` is a pure function of its Generator, so a run resumes exactly."""

    def __init__(self, name: str, pairs: Pairs | None = None):
        if name not in ("perlin", "cutpaste") and (pairs is None or not len(pairs)):
            raise InputError(name, "at least one (image, mask) pair to train on", "none")
        self.name, self.pairs = name, pairs

    def split(self, fraction: float, rng: np.random.Generator) -> tuple[TrainingSet, Pairs | None]:
        """(the set to train on, its held-out validation pairs); drawn sets validate on drawn pairs instead."""
        if self.pairs is None:
            return self, None
        order = rng.permutation(len(self.pairs))
        n_val = held_out_count(len(order), fraction)
        return TrainingSet(self.name, self.pairs.take(order[n_val:])), self.pairs.take(order[:n_val])

    def draw(self, normals: Pairs, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One anomalous example: float S x S x 3 in [0, 1] and S x S bool."""
        if self.pairs is not None:
            i = rng.integers(len(self.pairs))
            return self.pairs.images[i] / np.float32(255), self.pairs.masks[i]
        image = normals.images[rng.integers(len(normals))] / np.float32(255)
        if self.name == "cutpaste":
            return cutpaste_anomaly(image, rng)
        source = normals.images[rng.integers(len(normals))] / np.float32(255)
        return perlin_anomaly(image, source, rng)
