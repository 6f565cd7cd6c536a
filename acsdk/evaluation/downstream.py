"""`acsdk evaluate downstream`: does a synthetic set train a better detector than the baselines? The protocol of
AnomalyDiffusion (which AnomalyControl follows) in one resumable, deterministic run per training set.

    OUT/evaluate.json                       the settings; a --resume must match them
    OUT/<set>/state.safetensors             model, optimizer, best-on-validation weights, history (one atomic file)
    OUT/<set>/metrics.json                  test metrics of the selected model (written last: the set is done)
    OUT/report.{json,md}, OUT/plots/*.png   the comparison (see report.py)

Each set trains the same detector for the same number of steps; every batch is half normal images, half anomalous
examples of the set. The model is selected on a validation split of the training data (held-out pairs of the set
and held-out normal images), never on the test set; the best-on-test step, the selection the papers report, is
given beside it, labelled. Step s draws its batch from Generator([seed, s]), so a killed run resumes exactly.

Two protocols (`DownstreamSettings.protocol`, `--protocol`): "acsdk", the above (the default), and
"anomalydiffusion", the settings of AnomalyDiffusion's published evaluation code, so that numbers can stand beside
the papers' tables (`DownstreamSettings.preset("anomalydiffusion")`): DRAEM's U-Net (64 x 6 levels), Adam 1e-4,
batch 8, 12,600 steps, no flips, every training pair and normal image trained on (no validation split), the
threshold-grid metrics besides the exact ones, and the model selected on the test set, labelled so everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from runtime.files import atomic_write
from runtime.state import load_optimizer_tensors, optimizer_tensors, read_state, save_state

from ..data.mvtec import load_category
from ..errors import InputError, TrainingError, check_int, check_real
from .detector import Detector, anomaly_maps, focal_loss, image_scores, pool_kernel
from .metrics import METRICS, detection_metrics, require_sklearn
from .report import TEST_SELECTION_NOTE, VALIDATION_SELECTION_NOTE, write_report
from .sets import Pairs, RealSplit, TrainingSet, held_out_count, read_pairs, read_synthetic

log = logging.getLogger(__name__)
SETTINGS_FILE = "evaluate.json"
STATE_FILE = "state.safetensors"
METRICS_FILE = "metrics.json"
_STATE_KIND = "acsdk-detector-state"
TRAINING_SETS = ("synthetic", "perlin", "cutpaste", "real-train")
# What else decides the numbers besides the settings; a --resume of a run made under another protocol is refused.
# 2: labels from folders, masks max-pooled, DRAEM's Perlin (scales 2^0..2^5, rotation), pooling with the padding.
PROTOCOL = 2
PROTOCOLS = ("acsdk", "anomalydiffusion")
ANOMALYDIFFUSION_EPOCHS, ANOMALYDIFFUSION_EPOCH_SAMPLES = 200, 500
_AD_EPOCH_STEPS = -(-ANOMALYDIFFUSION_EPOCH_SAMPLES // 8)  # 63 batches of 8 (the last of 4 there) per epoch
_PRESETS: dict[str, dict] = {
    "acsdk": {},  # the field defaults
    # AnomalyDiffusion's code: 200 epochs of 500 samples in batches of 8 (63 batches an epoch), evaluated per epoch
    "anomalydiffusion": {
        "size": 256,
        "steps": ANOMALYDIFFUSION_EPOCHS * _AD_EPOCH_STEPS,  # 12,600
        "batch_size": 8,
        "base_width": 64,
        "levels": 6,
        "lr": 1e-4,
        "eval_every": _AD_EPOCH_STEPS,
    },
}


@dataclass(frozen=True)
class DownstreamSettings:
    """Everything that decides the numbers (compared on --resume)."""

    size: int = 256
    steps: int = 3000
    batch_size: int = 8
    base_width: int = 32
    levels: int = 5
    lr: float = 1e-3
    eval_every: int = 200
    val_fraction: float = 0.2
    seed: int = 0
    protocol: str = "acsdk"

    @classmethod
    def preset(cls, protocol: str = "acsdk", **overrides) -> DownstreamSettings:
        """The settings of `protocol` ("acsdk": the field defaults; "anomalydiffusion": those of AnomalyDiffusion's
        evaluation code), with any field overridden (a run records what it ran, overrides included)."""
        if protocol not in PROTOCOLS:
            raise InputError("protocol", f"one of {list(PROTOCOLS)}", repr(protocol))
        return cls(**{**_PRESETS[protocol], **overrides, "protocol": protocol})

    @property
    def selects_on_test(self) -> bool:
        """AnomalyDiffusion's protocol: no validation split; the model is the best test step (optimistic)."""
        return self.protocol == "anomalydiffusion"

    @property
    def flips(self) -> bool:
        """Random horizontal/vertical flips in the batches: acsdk's protocol only (AnomalyDiffusion's has none)."""
        return self.protocol == "acsdk"

    def check(self) -> None:
        """Every field checked by the one numeric validator, before anything is read or written."""
        if self.protocol not in PROTOCOLS:
            raise InputError("protocol", f"one of {list(PROTOCOLS)}", repr(self.protocol))
        for name in ("steps", "batch_size", "base_width", "levels", "eval_every"):
            check_int(name, getattr(self, name), 2 if name == "batch_size" else 1)  # batch: half normal, half not
        check_int("seed", self.seed, 0)
        stride = 2 ** (self.levels - 1)
        size = check_int("size", self.size, 4 * stride)
        if size % stride:
            raise InputError("size", f"a multiple of {stride} (2^(levels-1)), at least {4 * stride}", str(size))
        if check_real("val_fraction", self.val_fraction, 0.0, 1.0, lo_open=True) == 1.0:
            raise InputError("val_fraction", "a fraction in (0, 1)", str(self.val_fraction))
        check_real("lr", self.lr, 0.0, 1e3, lo_open=True)


def _batch(
    train: TrainingSet, normals: Pairs, n: int, rng: np.random.Generator, flips: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """n // 2 normal images (empty masks) and n - n // 2 anomalous examples, each flipped at random with `flips`."""
    images, masks = [], []
    for k in range(n):
        if k < n // 2:
            i = rng.integers(len(normals))
            image, mask = normals.images[i] / np.float32(255), np.zeros(normals.masks.shape[1:], dtype=bool)
        else:
            image, mask = train.draw(normals, rng)
        if flips and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if flips and rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        images.append(np.ascontiguousarray(image, dtype=np.float32))
        masks.append(np.ascontiguousarray(mask))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.stack(masks))


@torch.no_grad()
def predict(model: Detector, pairs: Pairs, chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(N x S x S anomaly maps, N image scores) in eval mode."""
    model.eval()
    maps = []
    for i in range(0, len(pairs), chunk):
        x = torch.from_numpy(pairs.images[i : i + chunk]).permute(0, 3, 1, 2).float() / 255
        maps.append(anomaly_maps(model, x))
    m = torch.cat(maps)
    return m.numpy(), image_scores(m, pool_kernel(pairs.images.shape[1])).numpy()


def evaluate_on(model: Detector, pairs: Pairs, grid: bool = False) -> dict:
    return scored(pairs, *predict(model, pairs), grid=grid)


def scored(pairs: Pairs, maps: np.ndarray, scores: np.ndarray, grid: bool = False) -> dict:
    """Metrics over all of `pairs`, and per defect type (that type's images with the good ones). Image labels are
    the pairs' folders (`Pairs.labels`), not their masks. `grid` adds the threshold-grid metrics (`GRID_METRICS`)."""
    labels = pairs.labels
    result = {"all": detection_metrics(pairs.masks, maps, scores, labels, grid)}
    good = ~labels
    for defect in sorted(set(pairs.defects) - {"good"}):
        sel = good | np.array([d == defect for d in pairs.defects])
        if good.any():
            result[defect] = detection_metrics(pairs.masks[sel], maps[sel], scores[sel], labels[sel], grid)
    return result


def _test_score(metrics: dict[str, float]) -> float:
    """What the best-on-test step maximises: the mean of the exact test metrics (`METRICS`)."""
    return float(np.mean([metrics[k] for k in METRICS]))


def _selection_score(metrics: dict[str, float]) -> float:
    """What validation selects on: the mean of image AUROC and pixel AP (one image-level, one pixel-level)."""
    return 0.5 * (metrics["image_auroc"] + metrics["pixel_ap"])


def _save_state(file: Path, model: Detector, best: dict[str, torch.Tensor], optim: torch.optim.Adam, meta: dict):
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best.items()})
    save_state(file, {**tensors, **optimizer_tensors(optim)}, _STATE_KIND, meta)


def _load_state(file: Path, model: Detector, optim: torch.optim.Adam) -> tuple[dict, dict[str, torch.Tensor]]:
    kind, meta, tensors = read_state(file)
    if kind != _STATE_KIND:
        raise InputError("out", "a detector state written by acsdk evaluate", f"'{file}' of another kind")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    load_optimizer_tensors(optim, tensors)
    return meta, {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}


def _validation(train: TrainingSet, held: Pairs | None, normals: Pairs, seed: int) -> Pairs:
    """Held-out normals plus the set's held-out pairs (or, for drawn sets, as many drawn from held-out normals)."""
    if held is None:
        rng = np.random.default_rng([seed, 7919])
        drawn = [train.draw(normals, rng) for _ in range(max(len(normals), 4))]
        held = Pairs(
            np.stack([(255 * im).round().astype(np.uint8) for im, _ in drawn]),
            np.stack([m for _, m in drawn]),
            [f"{train.name}-{i}" for i in range(len(drawn))],
            [train.name] * len(drawn),
        )
    return Pairs(
        np.concatenate([held.images, normals.images]),
        np.concatenate([held.masks, normals.masks]),
        held.names + normals.names,
        ["anomalous"] * len(held) + ["good"] * len(normals),
    )


def train_one(
    name: str,
    train: TrainingSet,
    real: RealSplit,
    settings: DownstreamSettings,
    out: Path,
    progress: bool = True,
) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """Train, select (on validation; on the test set under the anomalydiffusion protocol), test; resumes from
    OUT/<set>/state.safetensors.

    Returns the metrics record and the selected model's (maps, image scores) on the test set.
    """
    done = out / METRICS_FILE
    if done.is_file():
        return json.loads(done.read_text()), predict(selected_model(out, settings), real.test)
    s = settings
    grid = s.selects_on_test  # the anomalydiffusion protocol reports the grid metrics too
    if s.selects_on_test:  # AnomalyDiffusion trains on every normal image and every pair; nothing held out
        train_normals, val = real.normals, None
    else:
        split_rng = np.random.default_rng([s.seed, 1])
        order = split_rng.permutation(len(real.normals))
        n_val = held_out_count(len(order), s.val_fraction)
        val_normals, train_normals = real.normals.take(order[:n_val]), real.normals.take(order[n_val:])
        train, held = train.split(s.val_fraction, split_rng)
        val = _validation(train, held, val_normals, s.seed)

    with torch.random.fork_rng():
        torch.manual_seed(s.seed)
        model = Detector(s.base_width, s.levels)
    optim = torch.optim.Adam(model.parameters(), lr=s.lr)
    file = out / STATE_FILE
    meta = {"step": 0, "history": [], "best": None}
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if file.is_file():
        meta, best = _load_state(file, model, optim)
        log.info("%s: resuming at step %d of %d", name, meta["step"], s.steps)
    bar = tqdm(total=s.steps, initial=meta["step"], desc=f"detector on {name}", disable=not progress, unit="step")
    for step in range(meta["step"], s.steps):
        model.train()
        x, m = _batch(train, train_normals, s.batch_size, np.random.default_rng([s.seed, step]), s.flips)
        loss = focal_loss(model(x), m)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"detector on '{name}': loss is {loss.item()} at step {step}; the last good state "
                f"(step {meta['step']}) is kept in {file}: rerun with --resume and a lower --lr"
            )
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % s.eval_every == 0 or step + 1 == s.steps:
            point = {"step": step + 1, "loss": loss.item()}
            if val is not None:
                point["validation"] = evaluate_on(model, val)["all"]
            point["test"] = evaluate_on(model, real.test, grid)["all"]
            score = _test_score(point["test"]) if val is None else _selection_score(point["validation"])
            if meta["best"] is None or score > meta["best"]["score"]:
                meta["best"] = {"step": step + 1, "score": score}
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            meta["history"].append(point)
            meta["step"] = step + 1
            _save_state(file, model, best, optim, meta)
    bar.close()
    model.load_state_dict(best)
    test = predict(model, real.test)
    history = meta["history"]
    on_test = max(history, key=lambda p: _test_score(p["test"]))
    record = {
        "set": name,
        "train_pairs": None if train.pairs is None else len(train.pairs),
        "validation_pairs": 0 if val is None else len(val),
        "selected_step": meta["best"]["step"],
        "selected_on": "test" if s.selects_on_test else "validation",
        "selection": TEST_SELECTION_NOTE if s.selects_on_test else VALIDATION_SELECTION_NOTE,
        "test": scored(real.test, *test, grid=grid),
        "best_on_test": {"step": on_test["step"], "metrics": on_test["test"], "note": "optimistic: picked on test"},
        "history": history,
    }
    atomic_write(done, json.dumps(record, indent=1))
    return record, test


def _check_out(out: Path, record: dict, resume: bool) -> None:
    file = out / SETTINGS_FILE
    if file.is_file():
        old = json.loads(file.read_text())
        if not resume:
            raise InputError("out", "a new directory, or --resume to continue the run in it", f"'{out}' with a run")
        if isinstance(old.get("settings"), dict):  # runs from before protocols had names ran acsdk's
            old["settings"] = {"protocol": "acsdk", **old["settings"]}
        diff = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        if "settings" in diff and isinstance(old.get("settings"), dict):  # name the fields: settings.protocol, ...
            a, b = old["settings"], record["settings"]
            diff.remove("settings")
            diff += sorted(f"settings.{k}" for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            raise InputError("resume", f"the settings of the run in {out}", f"different {', '.join(diff)}")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("out", "a new or empty directory (evaluate never deletes what is there)", f"'{out}'")


def evaluate_downstream(
    real: str | os.PathLike,
    category: str,
    out: str | os.PathLike,
    synthetic: str | os.PathLike | None = None,
    baselines: tuple[str, ...] = ("perlin", "cutpaste", "real-train"),
    settings: DownstreamSettings | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train and test one detector per training set; write the comparison report. Returns the report dict.

    `settings` decides the protocol too: `DownstreamSettings.preset("anomalydiffusion", ...)` for AnomalyDiffusion's
    (the default, `DownstreamSettings()`, is acsdk's validation-split protocol)."""
    s = settings or DownstreamSettings()
    s.check()
    unknown = [b for b in baselines if b not in TRAINING_SETS[1:]]
    if unknown:
        raise InputError("baseline", f"some of {list(TRAINING_SETS[1:])} or none", ", ".join(unknown))
    if synthetic is None and not baselines:
        raise InputError("synthetic", "a synthetic set or at least one baseline to evaluate", "neither")
    out = Path(out)
    cat = load_category(real, category)
    names = (["synthetic"] if synthetic is not None else []) + list(dict.fromkeys(baselines))
    record = {
        "real": str(Path(real).resolve()),
        "category": category,
        "synthetic": None if synthetic is None else str(Path(synthetic).resolve()),
        "sets": names,
        "settings": dataclasses.asdict(s),
        "protocol": PROTOCOL,
        "torch": torch.__version__,
    }
    _check_out(out, record, resume)
    require_sklearn()  # needed at the first evaluation point: refused now, not after its training steps
    real_split = RealSplit.read(cat, s.size)
    if not any(d == "good" for d in real_split.test.defects):
        raise InputError(
            "real", f"a test/good folder with normal images in {cat.root / cat.name} (image AUROC needs both kinds)",
            "none",
        )  # fmt: skip
    sets: dict[str, TrainingSet] = {}
    if synthetic is not None:
        found = read_synthetic(synthetic, category, sorted(cat.anomalies))
        files = [(image, mask, d) for d, pairs in found.items() for image, mask in pairs]
        sets["synthetic"] = TrainingSet("synthetic", read_pairs(files, s.size, "synthetic"))
    for b in names:
        if b == "real-train":
            sets[b] = TrainingSet("real-train", real_split.references)
        elif b != "synthetic":
            sets[b] = TrainingSet(b)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / SETTINGS_FILE, json.dumps(record, indent=1))
    results, predictions = {}, {}
    for name in names:
        results[name], predictions[name] = train_one(name, sets[name], real_split, s, out / name, progress)
    return write_report(out, record, results, real_split.test, predictions)


def selected_model(run: Path, settings: DownstreamSettings) -> Detector:
    """The selected model (on validation, or on test under the anomalydiffusion protocol), from a set's state file."""
    model = Detector(settings.base_width, settings.levels)
    _, _, tensors = read_state(run / STATE_FILE)
    model.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("best.")})
    return model.eval()
