"""`acsdk playground`: look at defects before generating thousands of them.

`Playground` is what the page does (pick or upload a good image, a mask, a reference; generate one or several
seeds; save a pair; show the command that reproduces it) without Gradio, so it is tested on the tiny model;
`acsdk.apps.playground_ui` lays it out as a Gradio page. Safe by default: the page reads files only under `--data`
and writes only under `--out` (Gradio's own temp files included, see `playground_ui.launch`), and one generation
runs at a time per engine dir. Saved pairs are in `acsdk generate`'s layout and record format, so `acsdk evaluate`
reads a playground's `--out` as it reads a generated set.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.files import atomic_path, atomic_write, confined

from ..data.masks import estimate_foreground, sample_target_mask
from ..data.mvtec import MVTecCategory, load_category
from ..data.prompts import PromptSource
from ..data.runs import RECORDS, SETTINGS_FILE, manifest_digest, read_records, worker_name
from ..errors import InputError
from ..inference import imaging
from ..inference.settings import SamplingSettings
from ..inference.synthesizer import SynthesisResult, Synthesizer

SEEDS_IN_GALLERY = 4
NO_CATEGORY = "part"  # the prompt's object (and --out's category folder) without --data
ROI, ROI_PADDING = "auto", 32  # run_batch's defaults, passed and recorded explicitly
SOURCE = "acsdk playground"
# A category folder of --out the playground writes: generate.json says so (and `acsdk generate` refuses to resume
# into it, since its settings are not a generate run's). The body is constant, so two playgrounds that both find no
# generate.json and both write it write the same bytes.
PLAYGROUND_SETTINGS = {"source": SOURCE, "settings": "per pair, in its record (records/NNNN.json: settings)"}


@dataclass
class Preview:
    """What Generate made: the results (one per seed), the settings that made them, and how long it took."""

    image: np.ndarray  # the good image, RGB uint8
    mask: np.ndarray  # bool [H, W]
    prompt: str
    reference: str | None  # a --data path (relative) or "upload"; None without a reference
    defect: str
    seeds: list[int]
    sampling: dict
    results: list[SynthesisResult]
    seconds: float
    backend: str
    sources: dict = field(default_factory=dict)  # --data paths the inputs came from (relative)
    reference_pair: tuple[np.ndarray, np.ndarray] | None = None  # the reference and its mask as generated from


class Playground:
    def __init__(
        self,
        synth: Synthesizer,
        engines: str,
        data: str | Path | None = None,
        category: str | None = None,
        out: str | Path = "acsdk-playground",
    ):
        if (data is None) != (category is None):
            raise InputError("category" if category is None else "data", "--data and --category together", "one")
        self.synth = synth
        self.engines = engines
        self.cat: MVTecCategory | None = load_category(data, category) if data is not None else None
        self.out = Path(out)
        self.prompts = PromptSource()
        self._lock = threading.Lock()  # one generation at a time: the engines' threads are the machine's cores

    # -- what --data offers ------------------------------------------------------------------
    def goods(self) -> list[str]:
        return [self._rel(p) for p in self.cat.normals] if self.cat else []

    def defects(self) -> list[str]:
        return sorted(self.cat.anomalies) if self.cat else []

    def references(self, defect: str) -> list[str]:
        """The defect type's references (the paper's split: what `acsdk generate` draws from)."""
        if not self.cat or defect not in self.cat.anomalies:
            return []
        return [self._rel(s.image) for s in self.cat.references(defect)]

    def read(self, rel: str, argument: str = "image") -> np.ndarray:
        """An image under --data, RGB uint8; a path leading elsewhere is refused."""
        return imaging.read_rgb8(self._data_path(rel, argument), argument)

    def reference_pair(self, rel: str) -> tuple[np.ndarray, np.ndarray]:
        """A reference and its ground-truth mask, both under --data."""
        path = self._data_path(rel, "reference")
        mask = self._mask_of(rel)
        if mask is None:
            raise InputError("reference", "a defect image of --data's test/ with its ground_truth mask", repr(rel))
        return imaging.read_rgb8(path, "reference"), imaging.read_mask(mask, "reference_mask")

    def prompt(self, defect: str) -> str:
        return self.prompts(self.cat.name if self.cat else NO_CATEGORY, defect or "defect")

    def shape_mask(self, image: np.ndarray, defect: str | None, seed: int) -> np.ndarray:
        """A target mask as `acsdk generate` draws it: one of the defect type's reference masks moved, scaled and
        turned, inside the part's foreground. A type --data lacks (typed into the page) draws from every type's
        reference masks; without --data, a disc."""
        image = imaging.read_rgb8(image, "image")
        rng = np.random.default_rng(seed)
        h, w = image.shape[:2]
        refs = self._reference_masks(defect)
        if not refs:
            yy, xx = np.ogrid[:h, :w]
            r = max(2, min(h, w) // 10)
            refs = [((yy - h // 2) ** 2 + (xx - w // 2) ** 2 <= r * r)]
        return sample_target_mask(refs, (h, w), rng, estimate_foreground(image))

    def _reference_masks(self, defect: str | None) -> list[np.ndarray]:
        if self.cat is None:
            return []
        types = [defect] if defect in self.cat.anomalies else sorted(self.cat.anomalies)
        return [imaging.read_mask(s.mask) for d in types for s in self.cat.references(d)]

    # -- actions -------------------------------------------------------------------------------
    def generate(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        prompt: str,
        reference_image: np.ndarray | None = None,
        reference_mask: np.ndarray | None = None,
        *,
        seed: int = 0,
        seeds: int = 1,
        defect: str = "defect",
        sources: dict | None = None,
        progress=None,
        **sampling,
    ) -> Preview:
        """Synthesize `seeds` images (seed, seed + 1, ...) through run_batch; bad input is an InputError naming it."""
        image = imaging.read_rgb8(image, "image")
        mask = imaging.read_mask(mask, "mask")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("prompt", "a sentence such as 'a photo of a bottle with a crack'", repr(prompt))
        settings = SamplingSettings.of(None, **sampling)
        seed_list = [int(seed) + i for i in range(int(seeds))]
        ref = {}
        if reference_image is not None or reference_mask is not None:
            if reference_image is None or reference_mask is None:
                missing = "reference_mask" if reference_mask is None else "reference_image"
                raise InputError(missing, "a reference image and its mask together", "only the other")
            ref = {"reference_image": imaging.read_rgb8(reference_image, "reference_image"),
                   "reference_mask": imaging.read_mask(reference_mask, "reference_mask")}  # fmt: skip
        jobs = [{"image": image, "mask": mask, "prompt": prompt, **ref, "seed": s} for s in seed_list]
        with self._lock:
            t0 = time.perf_counter()
            results = self.synth.run_batch(jobs, settings, roi=ROI, roi_padding=ROI_PADDING, progress=False)
            seconds = time.perf_counter() - t0
        sources = dict(sources or {})
        reference = sources.get("reference", "upload") if ref else None
        backend = self.synth.parts.engines["unet"].backend
        pair = (ref["reference_image"], ref["reference_mask"]) if ref else None
        return Preview(image, mask, prompt, reference, defect or "defect", seed_list, settings.as_dict(), results,
                       seconds, backend, sources, pair)  # fmt: skip

    def save(self, preview: Preview, which: int = 0) -> dict[str, Path]:
        """One result into --out exactly as `acsdk generate` writes a pair: OUT/<category>/<defect>/image/NNNN.png,
        mask/NNNN.png, then records/NNNN.json (its keys, `settings` included, paths from --data relative to
        --data's root), then metadata.jsonl rewritten from the records. Inputs that were uploaded, not picked from
        --data, are saved beside the pair (normal/, reference/, reference_mask/) and named under `uploads`.

        The index is claimed exclusively (a claim file created with O_EXCL), so two playgrounds saving into one
        --out never share an index; every file is written atomically; a save that fails removes what it wrote."""
        ddir = self._out_dir(preview.defect)
        res = preview.results[which]
        self._own(ddir.parent)
        uploads = {} if "image" in preview.sources else {"normal": preview.image}
        if preview.reference == "upload" and preview.reference_pair is not None:
            uploads["reference"] = preview.reference_pair[0]
            uploads["reference_mask"] = preview.reference_pair[1].astype(np.uint8) * 255
        for sub in ("image", "mask", RECORDS, *uploads):
            (ddir / sub).mkdir(parents=True, exist_ok=True)
        index, claim = _claim_index(ddir)
        n = f"{index:04d}"
        paths = {key: ddir / key / f"{n}.png" for key in ("image", "mask", *uploads)}
        paths["record"] = ddir / RECORDS / f"{n}.json"
        try:
            images = {"mask": res.mask, "image": res.image, **{k: Image.fromarray(v) for k, v in uploads.items()}}
            for key, im in images.items():
                with atomic_path(paths[key]) as tmp:
                    im.save(tmp, format="PNG")
            reference = preview.reference if preview.reference != "upload" else None
            ref_mask = self._mask_of(reference) if reference else None
            record = {
                "index": index,
                "image": f"image/{n}.png",
                "mask": f"mask/{n}.png",
                "normal": preview.sources.get("image"),  # relative to --data, as generate's; None: uploaded
                "reference": reference,
                "reference_mask": self._rel(ref_mask) if ref_mask else None,
                "prompt": preview.prompt,
                "reference_prompt": preview.prompt if preview.reference else None,  # run_batch's default
                "seed": preview.seeds[which],
                "settings": {**preview.sampling, "roi": ROI, "roi_padding": ROI_PADDING,
                             "batch_size": self.synth.max_batch,
                             "engine_manifest_sha256": manifest_digest(self.engines)},  # fmt: skip
                "windows": res.windows,
                "asea": res.asea,
                "notes": res.notes,
                **({"uploads": {k: f"{k}/{n}.png" for k in uploads}} if uploads else {}),
                "run": {"worker": worker_name(), "source": SOURCE, "engines": self.engines, "backend": preview.backend,
                        "timings": {k: round(v, 4) for k, v in res.timings.items()},
                        "reference_cached": res.cache_hits.get("reference", False)},
            }  # fmt: skip
            atomic_write(paths["record"], json.dumps(record))
        except BaseException:
            for path in paths.values():
                path.unlink(missing_ok=True)
            raise
        finally:
            claim.unlink(missing_ok=True)
        _write_metadata(ddir)
        return paths

    def command(self, preview: Preview, which: int = 0, saved: dict[str, Path] | None = None) -> str:
        """The `acsdk synth` line that makes this result again (inputs from --data, or the saved files)."""
        data = self.cat.root if self.cat else None
        image = str(data / preview.sources["image"]) if "image" in preview.sources else None
        image = image or (str(saved["normal"]) if saved and "normal" in saved else "GOOD.png")
        mask = str(saved["mask"]) if saved else "MASK.png"
        s = preview.sampling
        args = ["acsdk", "synth", "--engines", self.engines, "--image", image, "--mask", mask,
                "--prompt", preview.prompt]  # fmt: skip
        if preview.reference:
            ref = preview.reference
            pair = self._mask_of(ref) if ref != "upload" else None
            if pair:
                args += ["--reference", str(data / ref), "--reference-mask", str(pair)]
            elif saved and "reference" in saved:
                args += ["--reference", str(saved["reference"]), "--reference-mask", str(saved["reference_mask"])]
            else:
                args += ["--reference", "REFERENCE.png", "--reference-mask", "REFERENCE_MASK.png"]
        args += ["--seed", str(preview.seeds[which]), "--steps", str(s["num_inference_steps"]),
                 "--strength", str(s["strength"]), "--guidance", str(s["guidance_scale"]),
                 "--semantic-scale", str(s["semantic_scale"]), "--asea-steps", str(s["asea_steps"]),
                 "--sampler", s["sampler"], "--roi", "auto", "--out", "OUT.png"]  # fmt: skip
        if s.get("cfg_cutoff") is not None:
            args += ["--cfg-cutoff", str(s["cfg_cutoff"])]
        return shlex.join(args)

    # -- paths -----------------------------------------------------------------------------------
    def _rel(self, path: Path) -> str:
        return path.relative_to(self.cat.root).as_posix()

    def _data_path(self, rel: str, argument: str) -> Path:
        if self.cat is None:
            raise InputError(argument, "an upload (the playground was started without --data)", repr(rel))
        path = confined(self.cat.root, str(rel))
        if path is None or not path.is_file():
            raise InputError(argument, f"a file under --data ({self.cat.root})", repr(rel))
        return path

    def _mask_of(self, rel: str) -> Path | None:
        """The ground-truth mask of a defect image under --data; None for anything else."""
        path = confined(self.cat.root, rel) if self.cat else None
        for samples in self.cat.anomalies.values() if self.cat else ():
            for s in samples:
                if s.image == path:
                    return s.mask
        return None

    def _out_dir(self, defect: str) -> Path:
        """OUT/<category>/<defect>, as `acsdk generate` lays it out (category "part" without --data)."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", defect or ""):
            raise InputError("defect", "a defect type name: letters, digits, _ and - (a folder of --out)", repr(defect))
        return self.out / (self.cat.name if self.cat else NO_CATEGORY) / defect

    def _own(self, root: Path) -> None:
        """Make OUT/<category> a playground's (its generate.json); an `acsdk generate` run's is refused: pairs
        saved among its items would pass for items of its seed."""
        file = root / SETTINGS_FILE
        if not file.is_file():
            root.mkdir(parents=True, exist_ok=True)
            atomic_write(file, json.dumps(PLAYGROUND_SETTINGS, indent=2))  # constant bytes: a race writes the same
            return
        try:
            stored = json.loads(file.read_bytes())
        except (ValueError, UnicodeDecodeError):
            stored = None
        if not isinstance(stored, dict) or stored.get("source") != SOURCE:
            raise InputError("out", "a folder for the playground's pairs (not an acsdk generate run's output)",
                             f"'{root}', whose {SETTINGS_FILE} is not the playground's")  # fmt: skip


# Every file of an index (uploads included): an index any of them exists for is taken.
_FILES = (("image", ".png"), ("mask", ".png"), (RECORDS, ".json"), ("normal", ".png"), ("reference", ".png"),
          ("reference_mask", ".png"))  # fmt: skip


def _claim_index(ddir: Path) -> tuple[int, Path]:
    """The lowest free index of a defect folder and its claim file (records/.NNNN.claim, created with O_EXCL, so
    one saver in any process gets it); the caller removes the claim once the record is written. A claim left by a
    killed save keeps its index unused, never overwritten."""
    taken = {p.name.split(".")[0] for sub, _ in _FILES if (ddir / sub).is_dir() for p in (ddir / sub).iterdir()}
    index = 0
    while True:
        n = f"{index:04d}"
        claim = ddir / RECORDS / f".{n}.claim"
        if n not in taken:
            try:
                os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                pass
            else:
                if not any((ddir / sub / f"{n}{ext}").exists() for sub, ext in _FILES):
                    return index, claim
                claim.unlink()  # finished by another saver between the listing and the claim
        index += 1


def _write_metadata(ddir: Path) -> None:
    """metadata.jsonl from the finished records, as `acsdk generate` writes it. Savers running at once may each
    read the records before the other's is written: each rewrites until the file matches the records it reads
    after writing, so the last writer leaves every finished pair listed (no lock needed)."""
    meta = ddir / "metadata.jsonl"
    written = None
    while True:
        records = read_records(ddir, adopt=False)
        body = "".join(json.dumps(records[i]) + "\n" for i in sorted(records))
        if body == written and meta.read_text() == body:
            return
        atomic_write(meta, body)
        written = body


def outline(result: SynthesisResult, color: tuple[int, int, int] = (255, 32, 32)) -> np.ndarray:
    """The result with the label's outline drawn on it (RGB uint8), to see where the defect was painted."""
    image = imaging.read_rgb8(result.image, "image").copy()
    label = np.asarray(result.mask) > 127
    inner = label.copy()
    inner[1:-1, 1:-1] = label[1:-1, 1:-1] & label[:-2, 1:-1] & label[2:, 1:-1] & label[1:-1, :-2] & label[1:-1, 2:]
    image[label & ~inner] = color
    return image
