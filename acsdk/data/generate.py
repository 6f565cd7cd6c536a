"""`acsdk generate`: a synthetic training set from MVTec-shaped data, deterministic and resumable.

    OUT/<category>/generate.json                    the settings; a resume must match them
    OUT/<category>/<defect>/image/<i>.png           synthetic anomaly
    OUT/<category>/<defect>/mask/<i>.png            its label mask
    OUT/<category>/<defect>/metadata.jsonl          one line per finished pair (the record of completion)
    OUT/<category>/<defect>/contact_sheet.png       normal | mask | result
    OUT/<category>/skipped.json                     unreadable inputs, skipped with a warning

Index i of a defect type depends only on (seed, defect, i): re-running, resuming or extending gives the
same files. A pair is written to temporary names and renamed; its metadata line is appended last, so an
interrupted run leaves either a complete, recorded pair or nothing that a resume will not redo.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from runtime.files import atomic_path, atomic_write, is_temporary, sha256_file

from ..errors import InputError
from .contact_sheet import contact_sheet
from .masks import estimate_foreground, sample_target_mask
from .mvtec import MVTecCategory, Sample, load_category
from .prompts import DEFAULT_TEMPLATE, PromptSource

log = logging.getLogger(__name__)
SETTINGS_FILE = "generate.json"


@dataclass(frozen=True)
class GenerateSettings:
    """Everything that decides the output bytes (compared on --resume; per-type and defects may grow)."""

    seed: int
    num_inference_steps: int
    strength: float
    guidance_scale: float
    asea_steps: int
    semantic_scale: float
    max_mask_fraction: float
    foreground: bool
    template: str
    captions_sha: str | None
    engine_manifest_sha256: str | None
    roi: str = "auto"
    roi_padding: int = 32
    batch_size: int = 1  # batched arithmetic may round differently: part of what decides the bytes

    def run_kwargs(self) -> dict:
        """The Synthesizer settings these generate settings imply."""
        return {
            "num_inference_steps": self.num_inference_steps,
            "strength": self.strength,
            "guidance_scale": self.guidance_scale,
            "asea_steps": self.asea_steps,
            "semantic_scale": self.semantic_scale,
            "roi": self.roi,
            "roi_padding": self.roi_padding,
        }


@dataclass
class GenerateSummary:
    out_dir: Path
    written: dict[str, int]  # defect -> pairs written in this run
    total: dict[str, int]  # defect -> pairs present
    seconds: float
    skipped: list[dict]
    contact_sheets: list[Path]


def _index_rng(seed: int, defect: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(defect.encode()), index])


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _load_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127


def _read_done(meta: Path, image_dir: Path, mask_dir: Path) -> dict[int, dict]:
    """Indices recorded as finished; a torn last line (killed mid-append) is dropped and rewritten."""
    done: dict[int, dict] = {}
    if not meta.is_file():
        return done
    lines = meta.read_text().splitlines()
    good = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        name = f"{rec['index']:04d}.png"
        if (image_dir / name).is_file() and (mask_dir / name).is_file() and rec["index"] not in done:
            done[rec["index"]] = rec
            good.append(line)
    if len(good) != len(lines):
        atomic_write(meta, "".join(g + "\n" for g in good))
    return done


def _write_pair(image: Image.Image, mask: Image.Image, image_path: Path, mask_path: Path) -> None:
    for im, path in ((mask, mask_path), (image, image_path)):
        with atomic_path(path) as tmp:
            im.save(tmp, format="PNG")


def _append(meta: Path, record: dict) -> None:
    with open(meta, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _check_out(root: Path, settings: GenerateSettings, resume: bool) -> None:
    file = root / SETTINGS_FILE
    if file.is_file():
        stored = json.loads(file.read_text())
        if not resume:
            raise InputError(
                "out", f"a new directory, or --resume to continue the run in {root}", "a directory holding results"
            )
        diff = {k: (stored.get(k), v) for k, v in dataclasses.asdict(settings).items() if stored.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
            raise InputError("out", "results made with the same settings to resume", f"other settings ({detail})")
    elif root.is_dir() and any(root.iterdir()):
        raise InputError("out", "a new or empty directory", f"'{root}', which holds other files")


def generate(
    engines: str | os.PathLike | None,
    data: str | os.PathLike,
    category: str,
    per_type: int,
    out: str | os.PathLike,
    *,
    defects: list[str] | None = None,
    seed: int = 0,
    num_inference_steps: int = 50,
    strength: float = 0.7,
    guidance_scale: float = 7.0,
    asea_steps: int = 5,
    semantic_scale: float = 1.0,
    max_mask_fraction: float = 0.25,
    foreground: bool = True,
    template: str = DEFAULT_TEMPLATE,
    captions: str | os.PathLike | None = None,
    roi: str = "auto",
    roi_padding: int = 32,
    batch_size: int = 1,
    resume: bool = False,
    backend: str = "auto",
    device: str | None = None,
    openvino_device: str = "CPU",
    synthesizer=None,
    progress: bool = True,
) -> GenerateSummary:
    """Write `per_type` synthetic pairs for each defect type of `category`; see the module docstring."""
    from ..inference.synthesizer import ROI_MODES, Synthesizer

    started = time.perf_counter()
    if isinstance(per_type, bool) or not isinstance(per_type, int) or per_type < 1:
        raise InputError("per_type", "an integer >= 1", repr(per_type))
    if roi not in ROI_MODES:
        raise InputError("roi", f"one of {', '.join(ROI_MODES)}", repr(roi))
    if isinstance(roi_padding, bool) or not isinstance(roi_padding, int) or roi_padding < 0:
        raise InputError("roi_padding", "an integer >= 0", repr(roi_padding))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError("batch_size", "an integer >= 1", repr(batch_size))
    if not 0.0 < max_mask_fraction <= 1.0:
        raise InputError("max_mask_fraction", "a fraction in (0, 1]", repr(max_mask_fraction))
    cat: MVTecCategory = load_category(data, category, defects)
    for defect in cat.anomalies:
        if not cat.references(defect):
            n = len(cat.anomalies[defect])
            raise InputError(
                "defects",
                "defect types with at least 3 anomaly images (the first third are references)",
                f"'{defect}' with {n}",
            )
    prompts = PromptSource(template, captions)
    manifest_sha = None
    if synthesizer is None:
        if engines is None:
            raise InputError("engines", "an engine dir built by `python -m export.build`", "None")
        n_refs = sum(len(cat.references(d)) for d in cat.anomalies)
        synthesizer = Synthesizer(
            engines, backend=backend, device=device, cache_size=max(64, n_refs + 8), openvino_device=openvino_device
        )
    if batch_size > synthesizer.max_batch:
        raise InputError(
            "batch_size",
            f"at most {synthesizer.max_batch}, the engine dir's batch profile (rebuild with --max-batch {batch_size})",
            str(batch_size),
        )
    if synthesizer.engine_dir is not None:
        from runtime.manifest import MANIFEST_NAME

        manifest_sha = sha256_file(Path(synthesizer.engine_dir) / MANIFEST_NAME)
    settings = GenerateSettings(
        seed=int(seed),
        num_inference_steps=int(num_inference_steps),
        strength=float(strength),
        guidance_scale=float(guidance_scale),
        asea_steps=int(asea_steps),
        semantic_scale=float(semantic_scale),
        max_mask_fraction=float(max_mask_fraction),
        foreground=bool(foreground),
        template=template,
        captions_sha=None if captions is None else zlib.crc32(Path(captions).read_bytes()).__format__("08x"),
        engine_manifest_sha256=manifest_sha,
        roi=roi,
        roi_padding=int(roi_padding),
        batch_size=int(batch_size),
    )
    root = Path(out) / category
    _check_out(root, settings, resume)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / SETTINGS_FILE, json.dumps(dataclasses.asdict(settings), indent=2))
    atomic_write(root / "skipped.json", json.dumps(cat.skipped, indent=2))

    written: dict[str, int] = {}
    total: dict[str, int] = {}
    sheets: list[Path] = []
    bar = tqdm(total=per_type * len(cat.anomalies), desc=f"generate {category}", unit="img", disable=not progress)
    for defect in cat.anomalies:
        ddir = root / defect
        image_dir, mask_dir, meta = ddir / "image", ddir / "mask", ddir / "metadata.jsonl"
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*image_dir.iterdir(), *mask_dir.iterdir()]:
            if is_temporary(stale):
                stale.unlink()
        done = _read_done(meta, image_dir, mask_dir)
        written[defect] = 0
        bar.update(sum(1 for i in done if i < per_type))
        pending = [i for i in range(per_type) if i not in done]
        planner = ItemPlanner(cat, defect, settings, prompts)
        for start in range(0, len(pending), settings.batch_size):
            items = [planner.item(i) for i in pending[start : start + settings.batch_size]]
            results = synthesizer.run_batch(
                [item.job for item in items], batch_size=len(items), **settings.run_kwargs()
            )
            for item, res in zip(items, results, strict=True):  # in index order: metadata stays sorted
                write_item(ddir, item, res, settings, cat.root)
                written[defect] += 1
                bar.update(1)
        records = _read_done(meta, image_dir, mask_dir)
        total[defect] = len(records)
        sheets.append(_sheet(cat.root, ddir, records))
    bar.close()
    return GenerateSummary(root, written, total, time.perf_counter() - started, cat.skipped, sheets)


@dataclass
class Item:
    """One synthetic pair to make: everything that decides its bytes, from (seed, defect, index) alone."""

    defect: str
    index: int
    normal: Path
    reference: Sample
    prompt: str
    reference_prompt: str
    seed: int
    job: dict  # run_batch's per-target arguments


class ItemPlanner:
    """Draws each index's normal image, reference, target mask and seed from its own generator."""

    def __init__(self, cat: MVTecCategory, defect: str, settings: GenerateSettings, prompts: PromptSource):
        self.cat, self.defect, self.settings, self.prompts = cat, defect, settings, prompts
        self.refs = cat.references(defect)
        self.ref_masks = [_load_mask(r.mask) for r in self.refs]

    def item(self, index: int) -> Item:
        s, cat = self.settings, self.cat
        rng = _index_rng(s.seed, self.defect, index)
        normal_path = cat.normals[int(rng.integers(len(cat.normals)))]
        ref = self.refs[int(rng.integers(len(self.refs)))]
        normal = _load_rgb(normal_path)
        fg = estimate_foreground(normal) if s.foreground else None
        target = sample_target_mask(self.ref_masks, normal.shape[:2], rng, fg, s.max_mask_fraction)
        seed = int(rng.integers(2**31 - 1))
        prompt = self.prompts(cat.name, self.defect)
        ref_prompt = self.prompts(cat.name, self.defect, ref.image.relative_to(cat.root))
        job = {
            "image": normal,
            "mask": target.astype(np.uint8) * 255,
            "prompt": prompt,
            "reference_image": ref.image,
            "reference_mask": ref.mask,
            "reference_prompt": ref_prompt,
            "seed": seed,
        }
        return Item(self.defect, index, normal_path, ref, prompt, ref_prompt, seed, job)


def write_item(ddir: Path, item: Item, res, settings: GenerateSettings, data_root: Path) -> None:
    """The pair (atomically), then its metadata line: the line is the record that the pair is complete."""
    name = f"{item.index:04d}.png"
    _write_pair(res.image, res.mask, ddir / "image" / name, ddir / "mask" / name)
    _append(
        ddir / "metadata.jsonl",
        {
            "index": item.index,
            "image": f"image/{name}",
            "mask": f"mask/{name}",
            "normal": str(item.normal.relative_to(data_root)),
            "reference": str(item.reference.image.relative_to(data_root)),
            "reference_mask": str(item.reference.mask.relative_to(data_root)),
            "prompt": item.prompt,
            "reference_prompt": item.reference_prompt,
            "seed": item.seed,
            "settings": dataclasses.asdict(settings),
            "timings": {k: round(v, 4) for k, v in res.timings.items()},
            "windows": res.windows,
            "asea": res.asea,
            "reference_cached": res.cache_hits.get("reference", False),
            "notes": res.notes,
        },
    )


def _sheet(data_root: Path, ddir: Path, records: dict[int, dict], rows: int = 8) -> Path:
    tiles = []
    for i in sorted(records)[:rows]:
        rec = records[i]
        tiles.append(
            [Image.open(data_root / rec["normal"]), Image.open(ddir / rec["mask"]), Image.open(ddir / rec["image"])]
        )
    path = ddir / "contact_sheet.png"
    with atomic_path(path) as tmp:
        contact_sheet(tiles, titles=("normal", "mask", "result")).save(tmp, format="PNG")
    return path
