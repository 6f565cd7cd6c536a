"""Detection metrics of the MVTec AD lineage: image and pixel AUROC / AP / F1-max (scikit-learn) and AU-PRO.

AU-PRO is the one piece no well-kept library offers: the per-region overlap curve of Bergmann et al., integrated
over false-positive rates up to 0.3 and divided by 0.3, with regions from scipy's connected components.

The exact values sweep every distinct score. AnomalyDiffusion's evaluation code (which later papers' tables follow)
sweeps a fixed grid instead: pixel F1-max over 21 thresholds and AU-PRO over 100, evenly spaced between the
smallest and the largest anomaly-map value. `grid_metrics` computes those, reported beside the exact ones under
`--protocol anomalydiffusion` (`GRID_METRICS`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, check_int

PRO_FPR_LIMIT = 0.3


def require_sklearn():
    """scikit-learn's metrics module, or the InputError that says how to install it (callers check before work)."""
    try:
        from sklearn import metrics
    except ImportError as exc:  # an optional extra
        raise InputError("scikit-learn", 'installed (pip install "acsdk[eval]")', "not importable") from exc
    return metrics


def _check(labels: np.ndarray, scores: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels).ravel().astype(bool), np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise InputError(what, "one score per label", f"{scores.size} scores for {labels.size} labels")
    if labels.all() or not labels.any():
        raise InputError(what, "both normal and anomalous samples", f"only {'anomalous' if labels.any() else 'normal'}")
    if not np.isfinite(scores).all():
        raise InputError(what, "finite scores", "NaN or infinite scores")
    return labels, scores


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """The best F1 over all thresholds (the lineage's "F1-max")."""
    return _f1_max(*_check(labels, scores, "scores"))


def _f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = require_sklearn().precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, AP and F1-max of one set of scores against binary labels."""
    labels, scores = _check(labels, scores, "scores")
    m = require_sklearn()
    return {
        "auroc": float(m.roc_auc_score(labels, scores)),
        "ap": float(m.average_precision_score(labels, scores)),
        "f1_max": _f1_max(labels, scores),
    }


def au_pro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = PRO_FPR_LIMIT) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit`, normalised to [0, 1].

    masks: N x H x W ground truth (bool); maps: N x H x W anomaly scores. Every connected region of every mask
    counts equally, whatever its size; FPR is over all normal pixels. Exact over every distinct threshold:
    pixels sorted by score, each anomalous pixel adding 1 / (regions x its region's size) to the PRO.
    """
    from scipy import ndimage

    masks, maps = np.asarray(masks).astype(bool), np.asarray(maps, dtype=np.float64)
    if masks.shape != maps.shape or masks.ndim != 3:
        raise InputError("maps", f"N x H x W scores matching the masks {masks.shape}", f"shape {maps.shape}")
    weights = np.zeros(masks.shape, dtype=np.float64)
    regions = []
    for i, m in enumerate(masks):
        labelled, n = ndimage.label(m, structure=np.ones((3, 3)))
        for k in range(1, n + 1):
            regions.append((i, labelled == k))
    if not regions or masks.all():
        raise InputError("masks", "both anomalous regions and normal pixels", "only one kind")
    for i, region in regions:
        weights[i][region] = 1.0 / (len(regions) * region.sum())
    normal = ~masks.ravel()
    order = np.argsort(-maps.ravel(), kind="stable")
    scores = maps.ravel()[order]
    pro = np.cumsum(weights.ravel()[order])
    fpr = np.cumsum(normal[order]) / normal.sum()
    last = np.r_[scores[1:] != scores[:-1], True]  # one point per distinct threshold: ties enter together
    return _area_up_to(np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]], fpr_limit)


def _area_up_to(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """The trapezoid area under (fpr, pro) (fpr non-decreasing, from 0, reaching 1) up to `fpr_limit`, / the limit."""
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit:  # close the curve at the limit, interpolating on the segment that crosses it
        j = np.searchsorted(fpr, fpr_limit)
        t = (fpr_limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
        x, y = np.r_[x, fpr_limit], np.r_[y, pro[j - 1] + t * (pro[j] - pro[j - 1])]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / fpr_limit)


F1_GRID_STEPS = 21
PRO_GRID_STEPS = 100


def _grid(maps: np.ndarray, steps: int) -> np.ndarray:
    """`steps` thresholds evenly spaced from the smallest to the largest map value, both included."""
    return np.linspace(maps.min(), maps.max(), steps)


def _at_or_above(sorted_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of the (ascending) scores are >= each threshold."""
    return sorted_scores.size - np.searchsorted(sorted_scores, thresholds, side="left")


def f1_max_grid(masks: np.ndarray, maps: np.ndarray, steps: int = F1_GRID_STEPS) -> float:
    """Pixel F1-max as AnomalyDiffusion's code computes it: the best F1 of `steps` thresholds evenly spaced between
    the smallest and the largest map value (a pixel is predicted anomalous when its score is >= the threshold, as in
    scikit-learn's curves, so this is the exact F1 curve sampled at the grid: never above `f1_max`)."""
    check_int("steps", steps, 2)
    labels, scores = _check(masks, maps, "maps")
    thresholds = _grid(scores, steps)
    tp = _at_or_above(np.sort(scores[labels]), thresholds)
    predicted = _at_or_above(np.sort(scores), thresholds)  # >= 1: every threshold is at most the largest score
    precision, recall = tp / predicted, tp / labels.sum()
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def _region_labels(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """N x H x W region ids (0 outside every region, 1..n across all images), 8-connected as `au_pro`'s."""
    from scipy import ndimage

    ids = np.zeros(masks.shape, dtype=np.int64)
    n = 0
    for i, m in enumerate(masks):
        labelled, k = ndimage.label(m, structure=np.ones((3, 3)))
        ids[i] = np.where(labelled > 0, labelled + n, 0)
        n += k
    return ids, n


def au_pro_grid(
    masks: np.ndarray, maps: np.ndarray, steps: int = PRO_GRID_STEPS, fpr_limit: float = PRO_FPR_LIMIT
) -> float:
    """AU-PRO as AnomalyDiffusion's code computes it: the PRO curve at `steps` thresholds evenly spaced between the
    smallest and the largest map value (PRO at a threshold = the mean over all connected ground-truth regions of the
    fraction of the region's pixels >= the threshold; FPR over all normal pixels), from (0, 0), integrated by
    trapezoids up to FPR `fpr_limit` (the segment crossing it interpolated, as `au_pro` does) and divided by it."""
    check_int("steps", steps, 2)
    masks, maps = np.asarray(masks).astype(bool), np.asarray(maps, dtype=np.float64)
    if masks.shape != maps.shape or masks.ndim != 3:
        raise InputError("maps", f"N x H x W scores matching the masks {masks.shape}", f"shape {maps.shape}")
    if not np.isfinite(maps).all():
        raise InputError("maps", "finite scores", "NaN or infinite scores")
    ids, n = _region_labels(masks)
    if not n or masks.all():
        raise InputError("masks", "both anomalous regions and normal pixels", "only one kind")
    thresholds = _grid(maps, steps)[::-1]  # high to low: FPR and PRO grow
    fpr = _at_or_above(np.sort(maps[~masks]), thresholds) / (~masks).sum()
    flat_ids, flat_maps = ids[masks], maps[masks]
    order = np.lexsort((flat_maps, flat_ids))  # by region, then score
    flat_ids, flat_maps = flat_ids[order], flat_maps[order]
    starts = np.searchsorted(flat_ids, np.arange(1, n + 1), side="left")
    ends = np.r_[starts[1:], flat_ids.size]
    pro = np.zeros(steps)
    for a, b in zip(starts, ends, strict=True):
        pro += _at_or_above(flat_maps[a:b], thresholds) / (b - a)
    return _area_up_to(np.r_[0.0, fpr], np.r_[0.0, pro / n], fpr_limit)


def grid_metrics(masks: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """The threshold-grid values of AnomalyDiffusion's evaluation code (`GRID_METRICS`)."""
    return {"pixel_f1_max_grid21": f1_max_grid(masks, maps), "pixel_au_pro_100": au_pro_grid(masks, maps)}


def detection_metrics(
    masks: np.ndarray,
    maps: np.ndarray,
    image_scores: np.ndarray,
    labels: np.ndarray | None = None,
    grid: bool = False,
) -> dict[str, float]:
    """Image-level and pixel-level metrics plus AU-PRO for one test set (`METRICS`), and with `grid` also the
    threshold-grid values of AnomalyDiffusion's code (`GRID_METRICS`).

    `labels` (N bool) is the image-level truth: where each image came from (MVTec's test/good or a defect folder);
    without it an image counts as anomalous when its mask has a defect pixel."""
    masks = np.asarray(masks).astype(bool)
    if labels is None:
        labels = masks.reshape(len(masks), -1).any(1)
    labels = np.asarray(labels).astype(bool).ravel()
    if labels.shape != (len(masks),):
        raise InputError("labels", f"one image label per mask ({len(masks)})", f"{labels.size} labels")
    out = {f"image_{k}": v for k, v in binary_metrics(labels, image_scores).items()}
    out.update({f"pixel_{k}": v for k, v in binary_metrics(masks, maps).items()})
    out["pixel_au_pro"] = au_pro(masks, maps)
    if grid:
        out.update(grid_metrics(masks, maps))
    return out


METRICS = (
    "image_auroc",
    "image_ap",
    "image_f1_max",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "pixel_au_pro",
)
GRID_METRICS = ("pixel_f1_max_grid21", "pixel_au_pro_100")
"""Reported beside `METRICS` under the anomalydiffusion protocol; never used for selection or verdicts."""
