"""`acsdk playground`: look at defects before generating thousands of them.

`Playground` is what the page does (pick or upload a good image, a mask, a reference; generate one or several
seeds; save a pair; show the command that reproduces it) without Gradio, so it is tested on the tiny model;
`acsdk.apps.playground_ui` lays it out as a Gradio page. Safe by default: the page reads files only under `--data`
and writes only under `--out`, and one generation runs at a time per engine dir.
"""

from __future__ import annotations

import json
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
from ..errors import InputError
from ..inference import imaging
from ..inference.settings import SamplingSettings
from ..inference.synthesizer import SynthesisResult, Synthesizer

SEEDS_IN_GALLERY = 4
NO_CATEGORY = "part"  # the prompt's object without --data


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
            results = self.synth.run_batch(jobs, settings, progress=False)
            seconds = time.perf_counter() - t0
        sources = dict(sources or {})
        reference = sources.get("reference", "upload") if ref else None
        backend = self.synth.parts.engines["unet"].backend
        return Preview(image, mask, prompt, reference, defect or "defect", seed_list, settings.as_dict(), results,
                       seconds, backend, sources)  # fmt: skip

    def save(self, preview: Preview, which: int = 0) -> dict[str, Path]:
        """One result into --out as `acsdk generate` lays a defect type out (image/, mask/, records/ NNNN), with
        the good image beside it (normal/) when it was uploaded; each file atomically; never over an existing
        index."""
        ddir = self._out_dir(preview.defect)
        for sub in ("image", "mask", "normal", "records"):
            (ddir / sub).mkdir(parents=True, exist_ok=True)
        index = 0
        while any((ddir / sub / f"{index:04d}{ext}").exists() for sub, ext in _FILES):
            index += 1
        n = f"{index:04d}"
        res = preview.results[which]
        paths = {"image": ddir / "image" / f"{n}.png", "mask": ddir / "mask" / f"{n}.png"}
        normal = preview.sources.get("image")
        if normal is None:
            paths["normal"] = ddir / "normal" / f"{n}.png"
        for key, im in (("mask", res.mask), ("image", res.image), ("normal", Image.fromarray(preview.image))):
            if key in paths:
                with atomic_path(paths[key]) as tmp:
                    im.save(tmp, format="PNG")
        record = {
            "index": index,
            "image": f"image/{n}.png",
            "mask": f"mask/{n}.png",
            "normal": normal or f"normal/{n}.png",
            "reference": preview.reference,
            "prompt": preview.prompt,
            "seed": preview.seeds[which],
            "sampling": preview.sampling,
            "windows": res.windows,
            "asea": res.asea,
            "notes": res.notes,
            "run": {"source": "acsdk playground", "backend": preview.backend,
                    "timings": {k: round(v, 4) for k, v in res.timings.items()}},
        }  # fmt: skip
        paths["record"] = ddir / "records" / f"{n}.json"
        atomic_write(paths["record"], json.dumps(record, indent=2))
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
            args += ["--reference", str(data / ref) if pair else "REFERENCE.png",
                     "--reference-mask", str(pair) if pair else "REFERENCE_MASK.png"]  # fmt: skip
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
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", defect or ""):
            raise InputError("defect", "a defect type name: letters, digits, _ and - (a folder of --out)", repr(defect))
        return self.out / defect


_FILES = (("image", ".png"), ("mask", ".png"), ("normal", ".png"), ("records", ".json"))


def outline(result: SynthesisResult, color: tuple[int, int, int] = (255, 32, 32)) -> np.ndarray:
    """The result with the label's outline drawn on it (RGB uint8), to see where the defect was painted."""
    image = imaging.read_rgb8(result.image, "image").copy()
    label = np.asarray(result.mask) > 127
    inner = label.copy()
    inner[1:-1, 1:-1] = label[1:-1, 1:-1] & label[:-2, 1:-1] & label[2:, 1:-1] & label[1:-1, :-2] & label[1:-1, 2:]
    image[label & ~inner] = color
    return image
