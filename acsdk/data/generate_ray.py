"""`acsdk generate --ray`: a run's chunks spread over Ray actors, each holding one Synthesizer.

The driver lists the unfinished chunks from the records on disk, makes them a Ray Data dataset of
(defect, start, stop) rows and maps it over a fixed pool of actors. Each actor loads the Synthesizer once from the
shared engine dir (refused unless its manifest digest is the driver's), makes items with the same `ChunkRunner` as
a local run and writes them itself, so only chunk rows and small reports cross the object store, never pixels.
`data`, `engines` and `out` must name the same files on every node (a shared filesystem).

Faults: a dead actor process is restarted and its chunk retried (`max_retries` of each, set here rather than left
to Ray's defaults); a killed driver takes its actors with it and loses nothing finished; `--resume` redoes only
unfinished chunks. Chunks are fixed by index, so any partition over any number of workers writes the local bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import warnings
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import ACSDKError, InputError, check_int, check_real
from .mvtec import MVTecCategory
from .runs import (
    Chunk,
    ChunkReport,
    ChunkRunner,
    GenerateSummary,
    RunPlan,
    finish_run,
    manifest_digest,
    new_run_info,
    start_run,
    undone_unless_an_item_finished,
)

log = logging.getLogger(__name__)
RAY_HINT = 'pip install "acsdk[ray]"'
ADDRESS_HELP = "auto, or the HOST:PORT of a running cluster's head (`ray start --head` prints it)"


def import_ray():
    """Ray, or an InputError naming --ray that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray without its data extra lacks it)
    except ImportError as e:
        raise InputError("ray", f"Ray with Ray Data installed ({RAY_HINT})", f"no Ray here ({e})") from None
    return ray


def connect(ray, address: str) -> bool:
    """Attach to (or, for "auto" without RAY_ADDRESS, start) a Ray cluster; True when this call started Ray."""
    if ray.is_initialized():
        return False  # the caller's own session (a notebook, a test harness): use it as it is
    if not isinstance(address, str) or not address:
        raise InputError("ray", ADDRESS_HELP, repr(address))
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or "local"
    if address not in ("local",) and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise InputError("ray", ADDRESS_HELP, repr(address))
        try:  # Ray itself retries an unreachable head for a minute before failing
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as e:
            raise InputError("ray", f"a reachable Ray cluster ({ADDRESS_HELP})", f"'{address}': {e}") from None
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InputError("ray", f"a running Ray cluster ({ADDRESS_HELP})", f"'{address}': {e}") from None
    return True


@dataclasses.dataclass(frozen=True)
class Pool:
    workers: int
    cpus: int
    gpus: float


def size_pool(ray, workers: int | None, gpus_per_worker: float, cpus_per_worker: int | None) -> Pool:
    """Workers and their resources; refused when the cluster cannot hold them (Ray would wait forever)."""
    gpus_per_worker = check_real("gpus_per_worker", gpus_per_worker, 0.0, 1e3)
    workers = check_int("workers", workers, 1, optional=True)
    cpus_per_worker = check_int("cpus_per_worker", cpus_per_worker, 1, optional=True)
    total = ray.cluster_resources()
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [total.get("CPU", 1)]
    if gpus_per_worker > 0:
        have = total.get("GPU", 0)
        workers = workers or max(1, int(have // gpus_per_worker))
        if have < workers * gpus_per_worker:
            raise InputError(
                "gpus_per_worker",
                f"{workers} worker(s) x {gpus_per_worker:g} GPU in the cluster",
                f"a cluster with {have:g} GPU(s)",
            )
        return Pool(workers, cpus_per_worker or 1, gpus_per_worker)
    workers = workers or 1
    cpus = cpus_per_worker or max(1, min(int(max(node_cpus)), int(total.get("CPU", 1)) // workers))
    if workers * cpus > total.get("CPU", 0):
        raise InputError(
            "workers",
            f"at most {int(total.get('CPU', 0)) // cpus} worker(s) of {cpus} CPU(s) on this cluster",
            str(workers),
        )
    return Pool(workers, cpus, 0)


class ChunkWorker:
    """The Ray Data UDF: one actor, one Synthesizer, any number of chunks."""

    def __init__(self, plan: RunPlan, engines: str, digest: str, backend: str, openvino_device: str, pool: Pool):
        # Ray Data reports a constructor's exception only as text; raised from __call__ it arrives typed.
        self.error: ACSDKError | None = None
        try:
            self.runner = self._load(plan, engines, digest, backend, openvino_device, pool)
        except ACSDKError as e:
            self.error = e

    @staticmethod
    def _load(plan: RunPlan, engines: str, digest: str, backend: str, openvino_device: str, pool: Pool) -> ChunkRunner:
        import torch

        from ..inference.synthesizer import Synthesizer

        torch.set_num_threads(pool.cpus)  # the engines size their thread pools from it
        host = socket.gethostname()
        if pool.gpus > 0 and not torch.cuda.is_available():
            raise InputError("gpus_per_worker", "workers with a CUDA GPU", f"a worker on {host} where torch sees none")
        got = manifest_digest(engines)
        if got != digest:
            raise InputError(
                "engines",
                f"the same engine dir on every worker (manifest sha256 {digest[:16]}...)",
                f"{got[:16]}... on {host}",
            )
        synthesizer = Synthesizer(
            engines,
            backend=backend,
            device="cuda" if pool.gpus > 0 else "cpu",
            openvino_device=openvino_device,
            cache_size=64,
        )
        runner = ChunkRunner(plan, synthesizer)
        log.info("worker %s ready on %s", runner.worker, runner.device)
        return runner

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        if self.error is not None:
            raise self.error
        reports = [
            self.runner.run(_chunk(d, a, b))
            for d, a, b in zip(batch["defect"], batch["start"], batch["stop"], strict=True)
        ]
        return {f.name: [getattr(r, f.name) for r in reports] for f in dataclasses.fields(ChunkReport)}


def _chunk(defect: Any, start: Any, stop: Any) -> Chunk:
    return Chunk(str(defect), int(start), int(stop))


def _acsdk_cause(error: BaseException) -> ACSDKError | None:
    """The ACSDKError a worker raised, out of Ray's wrappers (RayTaskError.cause, __cause__ chains)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(e, ACSDKError) and not isinstance(cause, BaseException):
            return e
        todo += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]
    return None


def generate_on_ray(
    plan: RunPlan,
    cat: MVTecCategory,
    engines: str | os.PathLike | None,
    *,
    address: str,
    workers: int | None,
    gpus_per_worker: float,
    cpus_per_worker: int | None,
    max_retries: int,
    backend: str,
    openvino_device: str,
    progress: bool,
    started: float,
) -> GenerateSummary:
    """Run `plan` on Ray (see the module docstring); nothing is written until the cluster is reachable and sized."""
    if engines is None:
        raise InputError("engines", "an engine dir built by `python -m export.build` (each worker loads it)", "None")
    max_retries = check_int("max_retries", max_retries, 0)
    ray = import_ray()
    started_ray = connect(ray, address)
    try:
        pool = size_pool(ray, workers, gpus_per_worker, cpus_per_worker)
        run_info = new_run_info(
            "ray", address=address, workers_requested=pool.workers, cpus_per_worker=pool.cpus, gpus_per_worker=pool.gpus
        )
        with undone_unless_an_item_finished(plan):
            chunks, finished = start_run(plan, cat, run_info)
            reports = _run(
                ray, plan, str(engines), chunks, finished, pool, max_retries, backend, openvino_device, progress
            )
        return finish_run(plan, cat, reports, run_info, started)
    finally:
        if started_ray:
            ray.shutdown()


def _run(ray, plan, engines, chunks, finished, pool, max_retries, backend, openvino_device, progress):
    ctx = ray.data.DataContext.get_current()
    changes = {
        "enable_progress_bars": False,  # ours counts images, not blocks
        "print_on_execution_start": False,
        # a worker whose constructor fails (other engines, no GPU) would fail again: stop at the first
        "max_consecutive_actor_init_deaths": 0,
        "actor_init_retry_on_errors": False,
        "raise_original_map_exception": True,  # a worker's ACSDKError reaches us typed, not as UserCodeException
    }
    before = {k: getattr(ctx, k) for k in changes}
    for k, v in changes.items():
        setattr(ctx, k, v)
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(max(level, logging.WARNING))  # not its per-dataset INFO lines beside our bar
    try:
        return _stream(ray, plan, engines, chunks, finished, pool, max_retries, backend, openvino_device, progress)
    finally:
        for k, v in before.items():  # the caller's own Ray Data settings, as they were
            setattr(ctx, k, v)
        data_log.setLevel(level)


def _stream(ray, plan, engines, chunks, finished, pool, max_retries, backend, openvino_device, progress):
    reports: list[ChunkReport] = []
    total = plan.per_type * len(plan.defects)
    with tqdm(
        total=total, initial=finished, desc=f"generate {plan.category} (ray)", unit="img", disable=not progress
    ) as bar:
        if not chunks:
            return reports
        rows = [dataclasses.asdict(c) for c in chunks]
        with warnings.catch_warnings():
            # Ray 2.60 deprecates **ray_remote_args without a named replacement for the fault-tolerance settings
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                ChunkWorker,
                fn_constructor_kwargs={
                    "plan": plan,
                    "engines": engines,
                    "digest": plan.settings.engine_manifest_sha256,
                    "backend": backend,
                    "openvino_device": openvino_device,
                    "pool": pool,
                },
                batch_size=1,  # one chunk per call: progress and retries at chunk granularity
                compute=ray.data.ActorPoolStrategy(size=pool.workers),
                num_cpus=pool.cpus,
                num_gpus=pool.gpus or None,
                max_restarts=max_retries,
                max_task_retries=max_retries,
            )
        try:
            for row in ds.iter_rows():
                report = ChunkReport(**{f.name: _scalar(row[f.name]) for f in dataclasses.fields(ChunkReport)})
                reports.append(report)
                bar.update(report.written)
        except Exception as e:
            cause = _acsdk_cause(e)
            if cause is not None:
                raise cause from None
            raise
    return reports


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
