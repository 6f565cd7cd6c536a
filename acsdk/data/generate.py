"""`acsdk generate`: a synthetic training set from MVTec-shaped data, deterministic and resumable.

    OUT/<category>/generate.json                    the settings (a resume must match them) and each run's workers
    OUT/<category>/<defect>/image/<i>.png           synthetic anomaly
    OUT/<category>/<defect>/mask/<i>.png            its label mask
    OUT/<category>/<defect>/records/<i>.json        written last, after the pair: the record that item i is complete
    OUT/<category>/<defect>/metadata.jsonl          the records in index order (rewritten when a defect type finishes)
    OUT/<category>/<defect>/contact_sheet.png       normal | mask | result
    OUT/<category>/skipped.json                     unreadable inputs, skipped with a warning

Index i of a defect type depends only on (seed, defect, i), and indices go through the Synthesizer in fixed
chunks [k*B, (k+1)*B) of the batch size B, so re-running, resuming, or spreading the chunks over Ray workers
(`generate_ray`) gives the same bytes. Every write is temp-then-rename and a record is written after its pair,
so a run killed anywhere leaves complete, recorded items and nothing a resume will not redo.
"""

from __future__ import annotations

import os
import time

from tqdm.auto import tqdm

from ..errors import InputError
from ..inference.settings import SamplingSettings
from .prompts import DEFAULT_TEMPLATE
from .runs import (
    ChunkRunner,
    GenerateSummary,
    finish_run,
    new_run_info,
    plan_run,
    start_run,
    undone_unless_an_item_finished,
)


def generate(
    engines: str | os.PathLike | None,
    data: str | os.PathLike,
    category: str,
    per_type: int,
    out: str | os.PathLike,
    *,
    defects: list[str] | None = None,
    seed: int = 0,
    sampling: SamplingSettings | None = None,
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
    low_memory: bool | None = None,
    synthesizer=None,
    progress: bool = True,
    ray: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0,
    cpus_per_worker: int | None = None,
    max_retries: int = 3,
    **overrides,
) -> GenerateSummary:
    """Write `per_type` synthetic pairs for each defect type of `category`; see the module docstring.

    ray=None runs here, in this process (no Ray import). ray="auto" starts a Ray instance on this machine,
    ray="HOST:PORT" attaches to a running cluster; `workers` actors, each with its own Synthesizer on
    `gpus_per_worker` GPUs (or `cpus_per_worker` CPUs), share the chunks (`acsdk.data.generate_ray`).
    `sampling` (default: the paper's settings) with keyword `overrides` of its fields, as `Synthesizer.run` takes.
    `low_memory` (local runs) holds one component of the model at a time: references are encoded once per defect
    type.
    """
    started = time.perf_counter()
    if ray is not None and synthesizer is not None:
        raise InputError("synthesizer", "None with ray (each Ray worker loads its own from engines)", "a Synthesizer")
    if ray is not None and low_memory:
        raise InputError("low_memory", "False with ray (each Ray worker holds its Synthesizer whole)", "True")
    plan, cat = plan_run(
        synthesizer.engine_dir if synthesizer is not None else engines,
        data,
        category,
        per_type,
        out,
        defects=defects,
        seed=seed,
        sampling=SamplingSettings.of(sampling, **overrides),
        max_mask_fraction=max_mask_fraction,
        foreground=foreground,
        template=template,
        captions=captions,
        roi=roi,
        roi_padding=roi_padding,
        batch_size=batch_size,
        resume=resume,
        max_batch=synthesizer.max_batch if synthesizer is not None else None,
        scheduler_config=synthesizer.parts.scheduler_config if synthesizer is not None else None,
    )
    if ray is not None:
        from .generate_ray import generate_on_ray

        return generate_on_ray(
            plan,
            cat,
            engines,
            address=ray,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
            max_retries=max_retries,
            backend=backend,
            openvino_device=openvino_device,
            progress=progress,
            started=started,
        )
    if synthesizer is None:
        if engines is None:
            raise InputError("engines", "an engine dir built by `python -m export.build`", "None")
        from ..inference.synthesizer import Synthesizer

        n_refs = sum(len(cat.references(d)) for d in cat.anomalies)
        synthesizer = Synthesizer(
            engines,
            backend=backend,
            device=device,
            cache_size=max(64, n_refs + 8),
            openvino_device=openvino_device,
            low_memory=low_memory,
        )
    run_info = new_run_info("local")
    reports = []
    with undone_unless_an_item_finished(plan):  # as on Ray: a new run that fails before its first item leaves nothing
        chunks, finished = start_run(plan, cat, run_info)
        runner = ChunkRunner(plan, synthesizer, cat)
        with tqdm(
            total=per_type * len(plan.defects),
            initial=finished,
            desc=f"generate {category}",
            unit="img",
            disable=not progress,
        ) as bar:
            for chunk in chunks:
                reports.append(runner.run(chunk))
                bar.update(reports[-1].written)
    return finish_run(plan, cat, reports, run_info, started)
