"""The downstream report: which training set made the better detector, per metric, as JSON, markdown and plots."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.files import atomic_path, atomic_write

from ..data.contact_sheet import contact_sheet
from ..errors import InputError
from .metrics import GRID_METRICS, METRICS
from .sets import Pairs

log = logging.getLogger(__name__)


TEST_SELECTION_NOTE = "selected on the test set, as AnomalyDiffusion's code does; optimistic"
VALIDATION_SELECTION_NOTE = "selected on a validation split of the training data (never on the test set)"

VERDICT_TOLERANCE = 0.01
"""How far apart two test metrics (all in [0, 1]) must be before the report calls the synthetic set better or worse
than a baseline: 0.01, one point on the 0-100 scale the papers' tables print. A single training seed's difference
below it says nothing about which set is better (another seed can reverse it), so it reads "tie". With several
seeds the verdict also needs every seed to agree on the sign. Changing it changes the verdicts, not the metrics."""


def verdict(
    ours: float | Sequence[float], theirs: float | Sequence[float], tolerance: float = VERDICT_TOLERANCE
) -> str:
    """The verdict on one metric: "better", "worse" or "tie"; `ours` and `theirs` are one value each, or one per seed
    (paired by seed).

    better: the mean difference exceeds `tolerance` and no seed disagrees (every seed's difference is positive);
    worse: the mirror image; anything else is a tie."""
    a, b = np.atleast_1d(np.asarray(ours, dtype=np.float64)), np.atleast_1d(np.asarray(theirs, dtype=np.float64))
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        raise InputError("theirs", f"as many values (one per seed) as ours ({a.size})", str(b.size))
    if not tolerance >= 0:
        raise InputError("tolerance", "a non-negative number", repr(tolerance))
    d = a - b
    mean = round(float(d.mean()), 12)  # 0.51 - 0.50 is 0.0100000000000000089: exactly the tolerance is a tie
    if mean > tolerance and (d > 0).all():
        return "better"
    if mean < -tolerance and (d < 0).all():
        return "worse"
    return "tie"


def comparison(*runs: dict[str, dict], tolerance: float = VERDICT_TOLERANCE) -> dict[str, dict[str, str]]:
    """For each baseline and metric: is the synthetic set's detector better, worse or tied on the test set?

    Each run is one seed's results ({set: record}); with several, each metric is compared seed by seed (`verdict`)."""
    if not runs or any("synthetic" not in r for r in runs):
        return {}
    names = [n for n in runs[0] if n != "synthetic" and all(n in r for r in runs)]

    def values(name: str, k: str) -> list[float]:
        return [r[name]["test"]["all"][k] for r in runs]

    return {name: {k: verdict(values("synthetic", k), values(name, k), tolerance) for k in METRICS} for name in names}


def _table(rows: dict[str, dict[str, float]], keys: tuple[str, ...] | list[str]) -> list[str]:
    lines = ["| training set | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in keys) + " |" for name, m in rows.items()]
    return lines


def _metric_keys(results: dict[str, dict]) -> list[str]:
    """METRICS, then the grid metrics where the runs have them (the anomalydiffusion protocol)."""
    first = next(iter(results.values()), {}).get("test", {}).get("all", {})
    return [*METRICS, *(k for k in GRID_METRICS if k in first)]


def selection_note(record: dict) -> str:
    """How the reported model was selected, as every output of the run labels it."""
    on_test = record["settings"].get("protocol", "acsdk") == "anomalydiffusion"
    return TEST_SELECTION_NOTE if on_test else VALIDATION_SELECTION_NOTE


def markdown(record: dict, results: dict[str, dict], beats: dict[str, dict[str, str]]) -> str:
    s = record["settings"]
    protocol = s.get("protocol", "acsdk")
    on_test = protocol == "anomalydiffusion"
    keys = _metric_keys(results)
    flips = "no flips" if on_test else "each example flipped at random"
    lines = [
        f"# Downstream evaluation: {record['category']}",
        "",
        f"Protocol: **{protocol}**" + (" (AnomalyDiffusion's evaluation code's settings)" if on_test else "") + ".",
        f"Real data: `{record['real']}`; synthetic set: `{record['synthetic']}`.",
        f"Detector: DRAEM-style U-Net (base width {s['base_width']}, {s['levels']} levels) at {s['size']} px, "
        f"{s['steps']} steps of batch {s['batch_size']} (half normal; {flips}), focal loss, "
        f"Adam lr {s['lr']}, seed {s['seed']}.",
        "Test: the held-out 2/3 of each defect type's real images plus the good test images. Model "
        + (
            f"{TEST_SELECTION_NOTE} (best of the steps every {s['eval_every']}, by the mean of the exact "
            "test metrics); every training pair and normal image trained on."
            if on_test
            else "selected on a validation split of each training set (never on the test set)."
        ),
    ]
    if on_test:
        lines += [
            "`pixel_f1_max_grid21` and `pixel_au_pro_100` are computed as AnomalyDiffusion's code does (21 and 100 "
            "thresholds evenly spaced between the smallest and largest map value), beside the exact values "
            "`pixel_f1_max` and `pixel_au_pro` (every distinct threshold).",
        ]
    lines += [
        "",
        f"## Test metrics of the model {selection_note(record)}",
        "",
        *_table({n: r["test"]["all"] for n, r in results.items()}, keys),
    ]
    if beats:
        lines += ["", "## Does the synthetic set beat each baseline? (test metric better / tie / worse)", ""]
        lines += [
            f"better or worse: the test metrics differ by more than {VERDICT_TOLERANCE} (one seed: a smaller "
            "difference is within what another training seed changes, and reads tie)."
            + (" Each set's model was selected on the test set (optimistic)." if on_test else ""),
            "",
        ]
        lines += ["| baseline | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        lines += [f"| {b} | " + " | ".join(v[k] for k in METRICS) + " |" for b, v in beats.items()]
    defects = sorted({d for r in results.values() for d in r["test"] if d != "all"})
    for key in ("image_auroc", "pixel_ap"):
        lines += ["", f"## {key} per defect type", ""]
        rows = {n: {d: r["test"][d][key] for d in defects} for n, r in results.items()}
        lines += _table(rows, defects)
    if not on_test:  # under the anomalydiffusion protocol the table above is this one
        lines += ["", "## Best step on the test set (optimistic: the selection the papers report)", ""]
        lines += _table(
            {f"{n} (step {r['best_on_test']['step']})": r["best_on_test"]["metrics"] for n, r in results.items()},
            METRICS,
        )
    else:
        lines += ["", "Selected steps (on the test set): "]
        lines[-1] += ", ".join(f"{n} {r['selected_step']}" for n, r in results.items()) + "."
    lines += ["", "Plots: `plots/roc.png`, `plots/pr.png`, `plots/per_type.png`, `plots/detections.png`.", ""]
    return "\n".join(lines)


def _plots(out: Path, results: dict[str, dict], test: Pairs, predictions: dict[str, tuple[np.ndarray, np.ndarray]]):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.metrics import precision_recall_curve, roc_curve
    except ImportError:  # plots are optional; the numbers are not
        log.warning("matplotlib or scikit-learn missing: report without plots")
        return
    labels = test.labels  # image truth from the folders, as the metrics take it
    for kind, curve in (("roc", roc_curve), ("pr", precision_recall_curve)):
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for name, (_, scores) in predictions.items():
            a, b, _ = curve(labels, scores)
            ax.plot(*((a, b) if kind == "roc" else (b, a)), label=name)
        ax.set_xlabel("false positive rate" if kind == "roc" else "recall")
        ax.set_ylabel("true positive rate" if kind == "roc" else "precision")
        ax.set_title(f"image-level {kind.upper()} on the real test set")
        ax.legend()
        fig.tight_layout()
        with atomic_path(out / f"{kind}.png") as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
    defects = sorted({d for r in results.values() for d in r["test"] if d != "all"})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    width = 0.8 / max(len(results), 1)
    for ax, key in zip(axes, ("image_auroc", "pixel_ap"), strict=True):
        for j, (name, r) in enumerate(results.items()):
            ax.bar(np.arange(len(defects)) + j * width, [r["test"][d][key] for d in defects], width, label=name)
        ax.set_xticks(np.arange(len(defects)) + 0.4 - width / 2, defects)
        ax.set_title(key)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "per_type.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _detections(out: Path, test: Pairs, predictions: dict[str, tuple[np.ndarray, np.ndarray]], rows: int = 8):
    """Real test defects, round-robin over the types: image | truth | each set's map."""
    by_type: dict[str, list[int]] = {}
    for i, d in enumerate(test.defects):
        if d != "good":
            by_type.setdefault(d, []).append(i)
    queues = list(by_type.values())
    anomalous = [q[k] for k in range(max(map(len, queues), default=0)) for q in queues if k < len(q)][:rows]
    tiles = []
    for i in anomalous:
        row = [Image.fromarray(test.images[i]), Image.fromarray(test.masks[i].astype(np.uint8) * 255)]
        row += [Image.fromarray((255 * maps[i]).clip(0, 255).astype(np.uint8)) for maps, _ in predictions.values()]
        tiles.append(row)
    with atomic_path(out / "detections.png") as tmp:
        contact_sheet(tiles, titles=("image", "truth", *predictions)).save(tmp, format="PNG")


def write_report(
    out: Path,
    record: dict,
    results: dict[str, dict],
    test: Pairs,
    predictions: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict:
    """OUT/report.json, OUT/report.md and OUT/plots/; returns the report."""
    beats = comparison(results)
    report = {
        **record,
        "selection": selection_note(record),
        "results": {n: {k: v for k, v in r.items() if k != "history"} for n, r in results.items()},
        "synthetic_beats": beats,
        "verdict_tolerance": VERDICT_TOLERANCE,
    }
    atomic_write(out / "report.json", json.dumps(report, indent=1))
    atomic_write(out / "report.md", markdown(record, results, beats))
    (out / "plots").mkdir(exist_ok=True)
    _plots(out / "plots", results, test, predictions)
    _detections(out / "plots", test, predictions)
    return report
