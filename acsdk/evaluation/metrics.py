"""Detection metrics of the MVTec AD lineage: image and pixel AUROC / AP / F1-max (scikit-learn) and AU-PRO.

AU-PRO is the one piece no well-kept library offers: the per-region overlap curve of Bergmann et al., integrated
over false-positive rates up to 0.3 and divided by 0.3, with regions from scipy's connected components.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

PRO_FPR_LIMIT = 0.3


def require_sklearn():
    """scikit-learn's metrics module, or the InputError that says how to install it (callers check before work)."""
    try:
        from sklearn import metrics
    except ImportError as exc:  # an optional extra
        raise InputError("scikit-learn", 'installed (pip install "acsdk[eval]")', "not importable") from exc
    return metrics


_sklearn = require_sklearn


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
    precision, recall, _ = _sklearn().precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, AP and F1-max of one set of scores against binary labels."""
    labels, scores = _check(labels, scores, "scores")
    m = _sklearn()
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
    fpr, pro = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit:  # close the curve at the limit, interpolating on the segment that crosses it
        j = np.searchsorted(fpr, fpr_limit)
        t = (fpr_limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
        x, y = np.r_[x, fpr_limit], np.r_[y, pro[j - 1] + t * (pro[j] - pro[j - 1])]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / fpr_limit)


def detection_metrics(
    masks: np.ndarray, maps: np.ndarray, image_scores: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, float]:
    """Image-level and pixel-level metrics plus AU-PRO for one test set.

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
