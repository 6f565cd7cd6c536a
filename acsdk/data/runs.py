"""The pieces of an `acsdk generate` run, shared by the local loop (`generate`) and the Ray workers
(`generate_ray`): settings and plan, chunks of indices, the item planner, the writer of pairs and records, and the
run's start and finish. The output layout is described in `acsdk.data.generate`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.files import atomic_path, atomic_write, is_temporary
from runtime.manifest import MANIFEST_NAME, manifest_sha256

from ..errors import EngineDirError, InputError, check_int, check_real
from ..inference.imaging import read_mask, read_rgb8
from ..inference.settings import FIELDS as SAMPLING_FIELDS
from ..inference.settings import SamplingSettings, check_seed
from .contact_sheet import contact_sheet
from .masks import estimate_foreground, sample_target_mask
from .mvtec import MVTecCategory, Sample, load_category
from .prompts import PromptSource

log = logging.getLogger(__name__)
SETTINGS_FILE = "generate.json"
SKIPPED_FILE = "skipped.json"
RECORDS = "records"


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
    sampler: str = "ddim"  # a run recorded before samplers existed lacks these two: resuming it is refused, since
    cfg_cutoff: float | None = None  # its step counts other than 50 started elsewhere (schedules.py)

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(**{f: getattr(self, f) for f in SAMPLING_FIELDS})

    def run_kwargs(self) -> dict:
        """The Synthesizer settings these generate settings imply."""
        return {"sampling": self.sampling, "roi": self.roi, "roi_padding": self.roi_padding}


@dataclass(frozen=True)
class RunPlan:
    """What any worker needs to make any item: paths and settings, never pixels (it travels to Ray actors)."""

    data: Path
    category: str
    defects: tuple[str, ...]
    per_type: int
    root: Path  # OUT/<category>
    settings: GenerateSettings
    captions: Path | None


@dataclass(frozen=True)
class Chunk:
    """Indices [start, stop) of one defect type: they go through the Synthesizer together, wherever they run."""

    defect: str
    start: int
    stop: int


@dataclass(frozen=True)
class ChunkReport:
    worker: str  # host:pid
    device: str
    defect: str
    written: int
    seconds: float


@dataclass
class GenerateSummary:
    out_dir: Path
    written: dict[str, int]  # defect -> pairs written in this run
    total: dict[str, int]  # defect -> pairs present
    seconds: float
    skipped: list[dict]
    contact_sheets: list[Path]
    workers: list[dict]  # per worker: device, items, seconds, images_per_hour


def manifest_digest(engines: str | os.PathLike) -> str:
    """`runtime.manifest.manifest_sha256`, with a typed error naming `engines` when there is no manifest."""
    if not (Path(engines) / MANIFEST_NAME).is_file():
        raise InputError(
            "engines", "an engine dir built by `python -m export.build`", f"'{engines}' (no {MANIFEST_NAME})"
        )
    return manifest_sha256(engines)


def engine_max_batch(engines: str | os.PathLike) -> int:
    """The engine dir's batch profile (`export.build --max-batch`), read without loading an engine."""
    path = Path(engines) / MANIFEST_NAME
    try:
        value = json.loads(path.read_text()).get("settings", {}).get("max_batch", 1)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise EngineDirError(f"engine dir '{engines}': its {MANIFEST_NAME} cannot be read ({exc}); rebuild it") from exc
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:  # a file's field, not an argument
        raise EngineDirError(f"engine dir '{engines}': settings.max_batch in {MANIFEST_NAME} is {value!r}, not >= 1")
    return value


SCHEDULER_CONFIG = "scheduler/scheduler_config.json"


def engine_scheduler_config(engines: str | os.PathLike) -> dict:
    """The engine dir's noise schedule (what its sampler steps over), read without loading an engine, so that the
    sampling settings can be checked against it before anything loads or is written (its sha256 is checked when
    the Synthesizer opens the dir)."""
    manifest_digest(engines)  # a typed error naming `engines` when it is not an engine dir at all
    path = Path(engines) / SCHEDULER_CONFIG
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            raise ValueError(f"a JSON {type(config).__name__}, not an object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EngineDirError(
            f"engine dir '{engines}': its {SCHEDULER_CONFIG} cannot be read ({exc}); rebuild it"
        ) from exc
    return config


def new_run_info(mode: str, **extra) -> dict:
    """generate.json's entry for one run (`id` tells a run's final entry from its starting one)."""
    return {"id": os.urandom(6).hex(), "mode": mode, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def synthesizer_device(synthesizer) -> str:
    """e.g. 'cpu, 2 threads (openvino)' or 'cuda:0 NVIDIA H100 (tensorrt)': what a worker ran on."""
    import torch

    dev = str(synthesizer.device)
    if dev.startswith("cuda"):
        dev += f" {torch.cuda.get_device_name(synthesizer.device)}"
    else:
        dev += f", {torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}"
    return f"{dev} ({synthesizer.parts.engines['unet'].backend})"


def _index_rng(seed: int, defect: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(defect.encode()), index])


def _name(index: int) -> str:
    return f"{index:04d}"


def _is_recorded(ddir: Path, index: int) -> bool:
    n = _name(index)
    return all(
        p.is_file() for p in (ddir / RECORDS / f"{n}.json", ddir / "image" / f"{n}.png", ddir / "mask" / f"{n}.png")
    )


def read_records(ddir: Path, adopt: bool = True) -> dict[int, dict]:
    """Index -> record of the finished items of one defect type (a record whose pair is missing does not count).

    A metadata.jsonl line without a record file (a set written before records existed) is adopted as one (written
    as a record file) when `adopt`. A record acsdk did not write is an InputError naming the file.
    """
    records: dict[int, dict] = {}
    rdir = ddir / RECORDS
    for f in sorted(rdir.glob("[0-9]*.json")) if rdir.is_dir() else []:
        rec = _record(f.read_bytes(), f)
        if _is_recorded(ddir, rec["index"]):
            records[rec["index"]] = rec
    meta = ddir / "metadata.jsonl"
    for i, line in enumerate(meta.read_bytes().splitlines() if meta.is_file() else [], 1):
        if not line.strip():
            continue
        rec = _record(line, meta, i)
        n = _name(rec["index"])
        if (
            adopt
            and rec["index"] not in records
            and (ddir / "image" / f"{n}.png").is_file()
            and (ddir / "mask" / f"{n}.png").is_file()
        ):
            (ddir / RECORDS).mkdir(exist_ok=True)
            atomic_write(ddir / RECORDS / f"{n}.json", json.dumps(rec))
            records[rec["index"]] = rec
    return records


RECORD_KEYS = ("index", "image", "mask", "normal")


def _record(raw: bytes, source: Path, line: int | None = None) -> dict:
    """One item's record as `acsdk generate` writes it; anything else (hand-edited, another tool's, cut short) is a
    typed error naming the file, raised before the run writes anything."""
    where = f"'{source}'" + (f" line {line}" if line else "")
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError("out", "records written by acsdk generate (JSON)", f"{where}: {exc}") from exc
    missing = [k for k in RECORD_KEYS if not isinstance(rec, dict) or k not in rec]
    index = rec.get("index") if isinstance(rec, dict) else None
    if missing or isinstance(index, bool) or not isinstance(index, int) or index < 0:
        got = f"missing {missing}" if missing else f"index {index!r}"
        raise InputError("out", f"records written by acsdk generate (keys {', '.join(RECORD_KEYS)})", f"{where}: {got}")
    return rec


def _check_out(root: Path, settings: GenerateSettings, resume: bool) -> None:
    file = root / SETTINGS_FILE
    if file.is_file():
        try:
            stored = json.loads(file.read_bytes())
            if not isinstance(stored, dict):
                raise ValueError(f"a JSON {type(stored).__name__}, not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError("out", f"a {SETTINGS_FILE} written by acsdk generate", f"'{file}': {exc}") from exc
        if not resume:
            raise InputError(
                "out", f"a new directory, or --resume to continue the run in {root}", "a directory holding results"
            )
        diff = {k: (stored.get(k), v) for k, v in dataclasses.asdict(settings).items() if stored.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
            raise InputError("out", "results made with the same settings to resume", f"other settings ({detail})")
        for ddir in sorted(p for p in root.iterdir() if p.is_dir()):
            read_records(ddir, adopt=False)  # a foreign or hand-edited record is refused now, not mid-run
    elif root.is_dir() and any(root.iterdir()):
        raise InputError("out", "a new or empty directory", f"'{root}', which holds other files")


def plan_run(
    engines: str | os.PathLike | None,
    data: str | os.PathLike,
    category: str,
    per_type: int,
    out: str | os.PathLike,
    *,
    defects: list[str] | None,
    seed: int,
    sampling: SamplingSettings,
    max_mask_fraction: float,
    foreground: bool,
    template: str,
    captions: str | os.PathLike | None,
    roi: str,
    roi_padding: int,
    batch_size: int,
    resume: bool,
    max_batch: int | None,
    scheduler_config: Mapping | None = None,
) -> tuple[RunPlan, MVTecCategory]:
    """Validate the arguments and the output dir and fix the settings; writes nothing. The sampling settings are
    checked against `scheduler_config` (default: the engine dir's), so a step count the sampler would refuse at the
    first item is refused here."""
    from ..inference.synthesizer import ROI_MODES

    per_type = check_int("per_type", per_type, 1)
    if roi not in ROI_MODES:
        raise InputError("roi", f"one of {', '.join(ROI_MODES)}", repr(roi))
    roi_padding = check_int("roi_padding", roi_padding, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    max_mask_fraction = check_real("max_mask_fraction", max_mask_fraction, 0.0, 1.0, lo_open=True)
    # What every item's run would refuse, refused here, before generate.json or any item is written.
    seed = check_seed("seed", seed)
    sampling = SamplingSettings.of(sampling)
    cat: MVTecCategory = load_category(data, category, defects)
    for defect in cat.anomalies:
        if not cat.references(defect):
            n = len(cat.anomalies[defect])
            raise InputError(
                "defects",
                "defect types with at least 3 anomaly images (the first third are references)",
                f"'{defect}' with {n}",
            )
    PromptSource(template, captions)  # validates the template and the captions file
    digest = None if engines is None else manifest_digest(engines)
    if scheduler_config is None and engines is not None:
        scheduler_config = engine_scheduler_config(engines)
    if scheduler_config is not None:
        sampling.check_schedule(scheduler_config)
    if engines is not None and max_batch is None:
        max_batch = engine_max_batch(engines)
    if max_batch is not None and batch_size > max_batch:
        raise InputError(
            "batch_size",
            f"at most {max_batch}, the engine dir's batch profile (rebuild with --max-batch {batch_size})",
            str(batch_size),
        )
    settings = GenerateSettings(
        seed=seed,
        **sampling.as_dict(),
        max_mask_fraction=float(max_mask_fraction),
        foreground=bool(foreground),
        template=template,
        captions_sha=None if captions is None else zlib.crc32(Path(captions).read_bytes()).__format__("08x"),
        engine_manifest_sha256=digest,
        roi=roi,
        roi_padding=int(roi_padding),
        batch_size=int(batch_size),
    )
    root = Path(out) / category
    _check_out(root, settings, resume)
    plan = RunPlan(
        data=Path(data),
        category=category,
        defects=tuple(cat.anomalies),
        per_type=per_type,
        root=root,
        settings=settings,
        captions=None if captions is None else Path(captions),
    )
    return plan, cat


def start_run(plan: RunPlan, cat: MVTecCategory, run_info: dict) -> tuple[list[Chunk], int]:
    """Create the output dirs, record the settings, and list the chunks with an unfinished item (and the count of
    finished items); stale temporaries of a killed run are removed."""
    root = plan.root
    root.mkdir(parents=True, exist_ok=True)
    _write_settings(plan, [run_info])
    atomic_write(root / SKIPPED_FILE, json.dumps(cat.skipped, indent=2))
    chunks: list[Chunk] = []
    finished = 0
    step = plan.settings.batch_size
    for defect in plan.defects:
        ddir = root / defect
        for sub in ("image", "mask", RECORDS):
            (ddir / sub).mkdir(parents=True, exist_ok=True)
            for stale in (ddir / sub).iterdir():
                if is_temporary(stale):
                    stale.unlink()
        done = read_records(ddir)
        finished += sum(1 for i in done if i < plan.per_type)
        for start in range(0, plan.per_type, step):
            stop = min(start + step, plan.per_type)
            if any(i not in done for i in range(start, stop)):
                chunks.append(Chunk(defect, start, stop))
    return chunks, finished


@contextmanager
def undone_unless_an_item_finished(plan: RunPlan) -> Iterator[None]:
    """Around `start_run` and the work: a new run that fails (or is interrupted) before it finishes any item removes
    what it wrote (`undo_start`), so the same command can be run again as it was; a resumed run (its generate.json
    was there) keeps everything, for the next --resume."""
    created = next((p for p in reversed([plan.root, *plan.root.parents]) if not p.exists()), None)
    resumed = (plan.root / SETTINGS_FILE).is_file()
    try:
        yield
    except BaseException:
        if not resumed:
            undo_start(plan, created)
        raise


def undo_start(plan: RunPlan, created: Path | None) -> None:
    """A new run that failed before finishing any item removes what it created and still owns.

    `created` is the first directory on the way to the category dir that did not exist before the run (None when
    the category dir did). When the run created its category dir, that dir goes, then each parent it created, only
    while empty: another run may have started in the same new `--out` (another category, at the same moment) and
    its files are never touched. When the category dir was there (empty: plan_run refuses one holding anything
    else), only what the run wrote inside it goes."""
    root = plan.root
    if not root.is_dir() or any(root.glob("*/records/*.json")):
        return
    if created is None:
        for name in (SETTINGS_FILE, SKIPPED_FILE):
            (root / name).unlink(missing_ok=True)
        for defect in plan.defects:
            shutil.rmtree(root / defect, ignore_errors=True)
        log.info("emptied %s again: the run failed before any item was finished", root)
        return
    shutil.rmtree(root, ignore_errors=True)
    removed = [root]
    for parent in root.parents:
        if parent == created.parent:
            break
        try:
            parent.rmdir()  # only an empty directory: one another run wrote into stays
        except OSError:
            break
        removed.append(parent)
    log.info("removed %s: the run failed before any item was finished", ", ".join(map(str, removed)))


def _write_settings(plan: RunPlan, runs: list[dict]) -> None:
    """generate.json: the settings, plus this run's mode and workers appended to the earlier runs'."""
    file = plan.root / SETTINGS_FILE
    earlier = json.loads(file.read_text()).get("runs", []) if file.is_file() else []
    if earlier and runs and earlier[-1].get("id") == runs[0].get("id"):
        earlier = earlier[:-1]  # the same run, finished: replace its entry
    body = {**dataclasses.asdict(plan.settings), "runs": earlier + runs}
    atomic_write(file, json.dumps(body, indent=2))


def worker_summary(reports: list[ChunkReport]) -> list[dict]:
    """Per worker: where it ran, how many items it wrote, and its throughput."""
    workers: dict[str, dict] = {}
    for r in reports:
        w = workers.setdefault(r.worker, {"worker": r.worker, "device": r.device, "items": 0, "seconds": 0.0})
        w["items"] += r.written
        w["seconds"] += r.seconds
    for w in workers.values():
        w["seconds"] = round(w["seconds"], 2)
        w["images_per_hour"] = round(3600 * w["items"] / w["seconds"], 1) if w["seconds"] > 0 else None
    return sorted(workers.values(), key=lambda w: w["worker"])


def finish_run(
    plan: RunPlan, cat: MVTecCategory, reports: list[ChunkReport], run_info: dict, started: float
) -> GenerateSummary:
    """metadata.jsonl and the contact sheet of every defect type, and the run's workers into generate.json."""
    written = {d: 0 for d in plan.defects}
    for r in reports:
        written[r.defect] += r.written
    total: dict[str, int] = {}
    sheets: list[Path] = []
    for defect in plan.defects:
        ddir = plan.root / defect
        records = read_records(ddir)
        atomic_write(ddir / "metadata.jsonl", "".join(json.dumps(records[i]) + "\n" for i in sorted(records)))
        total[defect] = len(records)
        sheets.append(_sheet(cat.root, ddir, records))
    seconds = time.perf_counter() - started
    workers = worker_summary(reports)
    _write_settings(plan, [{**run_info, "seconds": round(seconds, 1), "workers": workers}])
    return GenerateSummary(plan.root, written, total, seconds, cat.skipped, sheets, workers)


class ChunkRunner:
    """Makes the items of chunks on one Synthesizer and writes the missing ones: the same code locally and in a
    Ray actor."""

    def __init__(self, plan: RunPlan, synthesizer, cat: MVTecCategory | None = None):
        self.plan, self.synthesizer = plan, synthesizer
        self.worker = worker_name()
        self.device = synthesizer_device(synthesizer)
        # a Ray worker scans the category itself; the local run hands over the scan plan_run made
        self.cat = cat if cat is not None else load_category(plan.data, plan.category, list(plan.defects))
        self.prompts = PromptSource(plan.settings.template, plan.captions)
        self._planners: dict[str, ItemPlanner] = {}

    def run(self, chunk: Chunk) -> ChunkReport:
        t0 = time.perf_counter()
        ddir = self.plan.root / chunk.defect
        todo = [i for i in range(chunk.start, chunk.stop) if not _is_recorded(ddir, i)]
        if todo:
            if chunk.defect not in self._planners:
                self._planners[chunk.defect] = ItemPlanner(self.cat, chunk.defect, self.plan.settings, self.prompts)
            planner = self._planners[chunk.defect]
            # the whole chunk goes through the Synthesizer, finished items too: batch members round together
            items = [planner.item(i) for i in range(chunk.start, chunk.stop)]
            results = self.synthesizer.run_batch(
                [item.job for item in items], batch_size=len(items), **self.plan.settings.run_kwargs()
            )
            for item, res in zip(items, results, strict=True):
                if item.index in todo:
                    write_item(ddir, item, res, self.plan.settings, self.cat.root, self.worker)
        return ChunkReport(self.worker, self.device, chunk.defect, len(todo), time.perf_counter() - t0)


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
        self.ref_masks = [read_mask(r.mask) for r in self.refs]

    def item(self, index: int) -> Item:
        s, cat = self.settings, self.cat
        rng = _index_rng(s.seed, self.defect, index)
        normal_path = cat.normals[int(rng.integers(len(cat.normals)))]
        ref = self.refs[int(rng.integers(len(self.refs)))]
        normal = read_rgb8(normal_path)
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


def write_item(ddir: Path, item: Item, res, settings: GenerateSettings, data_root: Path, worker: str) -> None:
    """The pair, then its record (each atomically): the record says the pair is complete.

    Everything but `run` is decided by the settings and the index; `run` says how this copy was made.
    """
    n = _name(item.index)
    for im, path in ((res.mask, ddir / "mask" / f"{n}.png"), (res.image, ddir / "image" / f"{n}.png")):
        with atomic_path(path) as tmp:
            im.save(tmp, format="PNG")
    record = {
        "index": item.index,
        "image": f"image/{n}.png",
        "mask": f"mask/{n}.png",
        "normal": str(item.normal.relative_to(data_root)),
        "reference": str(item.reference.image.relative_to(data_root)),
        "reference_mask": str(item.reference.mask.relative_to(data_root)),
        "prompt": item.prompt,
        "reference_prompt": item.reference_prompt,
        "seed": item.seed,
        "settings": dataclasses.asdict(settings),
        "windows": res.windows,
        "asea": res.asea,
        "notes": res.notes,
        "run": {
            "worker": worker,
            "timings": {k: round(v, 4) for k, v in res.timings.items()},
            "reference_cached": res.cache_hits.get("reference", False),
        },
    }
    atomic_write(ddir / RECORDS / f"{n}.json", json.dumps(record))


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
