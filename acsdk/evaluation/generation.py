"""`acsdk evaluate generation`: IC-LPIPS (diversity) and Inception Score of an `acsdk generate` output.

IC-LPIPS follows the AnomalyDiffusion lineage: per defect type, the real reference anomalies (the images generation
was conditioned on) are cluster centres; each generated image joins the centre nearest by LPIPS; a cluster's value
is the mean LPIPS over pairs of its generated members (clusters with fewer than two are skipped); a type's value is
the mean over its clusters, the overall value the mean over types. Images are compared at 256x256.

Neither network is downloaded: the user gives the weight files (see `lpips.NEEDS`, `inception.NEEDS`).
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from runtime.files import sha256_file

from ..data.mvtec import load_category
from ..errors import InputError
from ..inference.imaging import read_rgb8
from ..version import __version__
from . import inception as _inception
from . import lpips as _lpips
from .sets import read_synthetic

log = logging.getLogger(__name__)
T = TypeVar("T")


def ic_lpips(
    generated: Sequence[T], centres: Sequence[T], distance: Callable[[Sequence[T], Sequence[T]], np.ndarray]
) -> dict:
    """Intra-cluster distance of `generated` around `centres`; `distance(a, b)` gives the len(a) x len(b) matrix.

    Each generated item joins its nearest centre (ties: the first). Returns {"value": mean over clusters of >= 2
    members, or None when there is none; "clusters": [{"centre", "members" (indices into `generated`),
    "value"}]}. `distance(m, m)` is called with the same list object twice, so an implementation may use symmetry.
    """
    if not centres:
        raise InputError("centres", "at least one cluster centre", "none")
    clusters: list[dict] = [{"centre": c, "members": [], "value": None} for c in range(len(centres))]
    if generated:
        to_centres = np.asarray(distance(generated, centres), dtype=np.float64)
        if to_centres.shape != (len(generated), len(centres)):
            raise InputError("distance", f"a {len(generated)} x {len(centres)} matrix", f"shape {to_centres.shape}")
        for i, c in enumerate(np.argmin(to_centres, axis=1)):
            clusters[int(c)]["members"].append(i)
    for cluster in clusters:
        members = [generated[i] for i in cluster["members"]]
        if len(members) < 2:
            continue
        d = np.asarray(distance(members, members), dtype=np.float64)
        cluster["value"] = float(d[np.triu_indices(len(members), k=1)].mean())
    values = [c["value"] for c in clusters if c["value"] is not None]
    return {"value": float(np.mean(values)) if values else None, "clusters": clusters}


def _subsample(paths: list[Path], limit: int | None, seed: int) -> list[Path]:
    """At most `limit` paths, chosen by default_rng(seed) (per type, so one type's draw does not move another's)."""
    if limit is None or len(paths) <= limit:
        return paths
    keep = np.sort(np.random.default_rng(seed).choice(len(paths), size=limit, replace=False))
    return [paths[i] for i in keep]


def _file_record(path: Path) -> dict:
    return {"path": str(path), "sha256": sha256_file(path)}


def _inception_probs(net: _inception.InceptionV3, paths: list[Path], device: str, progress: bool) -> np.ndarray:
    probs = []
    batch = 8
    with torch.inference_mode():
        for start in tqdm(range(0, len(paths), batch), desc="Inception", unit="batch", disable=not progress):
            xs = []
            for p in paths[start : start + batch]:
                a = read_rgb8(p, "synthetic").astype(np.float32)  # 0..255, as torch-fidelity feeds it
                x = torch.from_numpy(a).permute(2, 0, 1)[None]
                size = _inception.INPUT_SIZE
                xs.append(_inception.resize_like_tf1(x, size, size))  # images of any sizes batch together
            logits = net(torch.cat(xs).to(device))
            probs.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
    return np.concatenate(probs)


def evaluate_generation(
    real: str | os.PathLike,
    category: str,
    synthetic: str | os.PathLike,
    *,
    lpips_weights: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    inception_weights: str | os.PathLike | None = None,
    seed: int = 0,
    max_per_type: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """IC-LPIPS per defect type and overall (with `lpips_weights`) and Inception Score (with `inception_weights`).

    `lpips_weights`: a folder holding `vgg16-397923af.pth` and `vgg.pth` (or .safetensors), or that pair of paths.
    `inception_weights`: `pt_inception-2015-12-05-6726825d.pth` (or .safetensors). At least one must be given; the
    metric without weights is reported as skipped, with what it needs. `max_per_type` caps the generated images per
    type that IC-LPIPS uses (a seeded subsample): its cost grows with the square of a cluster's size.
    """
    if lpips_weights is None and inception_weights is None:
        raise InputError(
            "lpips_weights, inception_weights",
            f"weights for at least one metric -- IC-LPIPS (lpips_weights) needs {_lpips.NEEDS}; "
            f"the Inception Score (inception_weights) needs {_inception.NEEDS}",
            "neither",
        )
    if max_per_type is not None and max_per_type < 2:
        raise InputError("max_per_type", "at least 2 (IC-LPIPS compares pairs) or None for all", str(max_per_type))
    cat = load_category(real, category)
    generated = {
        d: [image for image, _ in pairs]
        for d, pairs in read_synthetic(synthetic, category, list(cat.anomalies)).items()
    }
    counts = {d: len(v) for d, v in generated.items()}
    log.info("evaluating %d generated images of %s (%s)", sum(counts.values()), category, counts)
    result: dict = {
        "category": category,
        "real": str(real),
        "synthetic": str(synthetic),
        "seed": seed,
        "max_per_type": max_per_type,
        "generated": counts,
        "real_anomalies": {d: len(cat.anomalies[d]) for d in generated},
        "versions": {
            "acsdk": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "weights": {},
    }
    # Load (and so check) every weight file before any long computation starts.
    lpips_net = inception_net = None
    if lpips_weights is not None:
        lpips_net, (backbone, linear) = _lpips.load_lpips(lpips_weights, device)
        result["weights"]["lpips_backbone"] = _file_record(backbone)
        result["weights"]["lpips_linear"] = _file_record(linear)
    if inception_weights is not None:
        inception_net = _inception.load_inception(inception_weights, device)
        result["weights"]["inception"] = _file_record(Path(inception_weights))

    if lpips_net is None:
        result["ic_lpips"] = {"skipped": f"IC-LPIPS needs lpips_weights: {_lpips.NEEDS}"}
    else:
        result["ic_lpips"] = _ic_lpips_all(cat, generated, lpips_net, seed, max_per_type, device, progress)
    if inception_net is None:
        result["inception_score"] = {"skipped": f"the Inception Score needs inception_weights: {_inception.NEEDS}"}
    else:
        paths = [p for d in generated for p in generated[d]]
        order = np.random.default_rng(seed).permutation(len(paths))  # splits mix types instead of following them
        probs = _inception_probs(inception_net, [paths[i] for i in order], device, progress)
        splits = min(10, len(paths))
        mean, std = _inception.inception_score(probs, splits=splits)
        result["inception_score"] = {
            "mean": mean,
            "std": std,
            "splits": splits,
            "n_images": len(paths),
            "image_size": _inception.INPUT_SIZE,
            "convention": "RGB in [0,1] resized bilinearly to 299 then 2x-1 (pytorch-fid's input); softmax over all "
            "1008 logits of the fc without bias (torch-fidelity's logits_unbiased); images shuffled with the seed, "
            "then contiguous splits",
        }
        if len(paths) < 1000:
            note = f"only {len(paths)} images: not comparable to scores over thousands of images"
            result["inception_score"]["note"] = note
    return result


def _ic_lpips_all(cat, generated: dict[str, list[Path]], net, seed, max_per_type, device, progress) -> dict:
    distance = _lpips.PairwiseLPIPS(net, size=_lpips.IMAGE_SIZE, device=device, progress=progress, argument="synthetic")
    try:
        per_type = {d: _ic_lpips_type(cat, d, paths, distance, seed, max_per_type) for d, paths in generated.items()}
    finally:
        distance.close()
    values = [e["value"] for e in per_type.values() if e["value"] is not None]
    return {
        "overall": float(np.mean(values)) if values else None,
        "per_type": per_type,
        "image_size": _lpips.IMAGE_SIZE,
        "network": "LPIPS-VGG v0.1 (lin)",
        "lpips_forwards": distance.forwards,
    }


def _ic_lpips_type(cat, defect: str, paths: list[Path], distance, seed: int, max_per_type: int | None) -> dict:
    """One type's IC-LPIPS entry: centres are its references, or all its real anomalies when it has none."""
    used = _subsample(paths, max_per_type, seed)
    refs = cat.references(defect)
    entry: dict = {"n_generated": len(paths), "n_used": len(used), "centres": "references"}
    if not refs:
        refs = cat.anomalies[defect]
        entry["centres"] = "all real anomalies (too few for references)"
        log.warning("%s: no reference anomalies; clustering around all %d real ones", defect, len(refs))
    entry["n_centres"] = len(refs)
    if not refs or not used:
        entry["value"] = None
        entry["reason"] = "no real anomalies of this type" if not refs else "no generated images"
        return entry
    res = ic_lpips(used, [r.image for r in refs], distance)
    entry["value"] = res["value"]
    entry["clusters"] = [
        {
            "centre": str(refs[c["centre"]].image.relative_to(cat.root)),
            "members": len(c["members"]),
            "value": c["value"],
        }
        for c in res["clusters"]
    ]
    if res["value"] is None:
        entry["reason"] = "no cluster has two generated members"
    log.info("IC-LPIPS %s: %s", defect, res["value"])
    return entry
