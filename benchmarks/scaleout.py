"""Images per hour of `acsdk generate` in one process and on Ray with 1 and 2 workers, on this machine:

    python -m benchmarks.scaleout --work runs/scaleout [--per-type 24] [--backend openvino]

The demo model's engines (cached by `acsdk demo`) on procedural MVTec-style data. Each configuration writes its
own set; the Ray sets are checked byte-identical to the single-process set made at their threads per worker.
Two rates per configuration: end to end (wall clock, Ray's start and the workers' model loading included) and
steady state (images over the seconds workers spent generating). Results: WORK/scaleout.json and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

DEFECTS = ("hole", "scratch")


def _pairs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("plate/*/*/*.png"))}


def run(work: Path, per_type: int, backend: str, steps: int) -> dict:
    import torch

    from acsdk.apps.demo import demo_engines
    from acsdk.data import make_mvtec_like
    from acsdk.data.generate import generate

    engines = demo_engines()
    data = work / "data"
    if not (data / "plate").is_dir():
        make_mvtec_like(data, "plate", size=64, n_good=20, n_per_defect=9, defects=DEFECTS, seed=0)
    cores = os.cpu_count() or 1
    configs = [
        ("local", {"threads": cores}),
        ("local-1-thread", {"threads": 1}),
        ("ray-1-worker", {"ray": "auto", "workers": 1, "cpus_per_worker": cores}),
        ("ray-2-workers", {"ray": "auto", "workers": 2, "cpus_per_worker": max(1, cores // 2)}),
    ]
    rows = []
    for name, cfg in configs:
        out = work / name
        if out.exists():
            raise SystemExit(f"{out} exists: give a new --work dir (results are never overwritten)")
        threads = cfg.pop("threads", None)
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        try:
            s = generate(
                engines, data, "plate", per_type, out, seed=0, num_inference_steps=steps, backend=backend,
                progress=False, **cfg,
            )  # fmt: skip
        finally:
            torch.set_num_threads(before)
        wall = time.perf_counter() - t0
        images = sum(s.written.values())
        busy = max(w["seconds"] for w in s.workers)  # the workers run side by side: the slowest bounds the run
        rows.append(
            {
                "config": name,
                "workers": s.workers,
                "images": images,
                "wall_s": round(wall, 1),
                "images_per_hour_end_to_end": round(3600 * images / wall),
                "images_per_hour_steady": round(3600 * images / busy),
            }
        )
        logging.info("%s: %s", name, rows[-1])
    same = _pairs(work / "local-1-thread") == _pairs(work / "ray-2-workers")
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores",
        "cpu": _cpu_name(),
        "backend": backend,
        "per_type": per_type,
        "steps": steps,
        "ray_2_workers_equal_local_1_thread": same,
        "rows": rows,
    }
    (work / "scaleout.json").write_text(json.dumps(result, indent=2))
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def table(result: dict) -> str:
    lines = [
        f"{result['cpu']} ({result['machine']}), backend {result['backend']}, {result['per_type']} per type x "
        f"{len(DEFECTS)} types, {result['steps']} steps",
        "",
        "| configuration | workers (threads each) | images | wall s | images/h end to end | images/h steady |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        devices = ", ".join(w["device"].split(" (")[0] for w in r["workers"])
        lines.append(
            f"| {r['config']} | {len(r['workers'])}: {devices} | {r['images']} | {r['wall_s']} | "
            f"{r['images_per_hour_end_to_end']} | {r['images_per_hour_steady']} |"
        )
    lines.append("")
    lines.append(f"Ray 2 workers byte-identical to local at 1 thread: {result['ray_2_workers_equal_local_1_thread']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--per-type", type=int, default=24)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    result = run(args.work, args.per_type, args.backend, args.steps)
    sys.stdout.write(table(result) + "\n")
    return 0 if result["ray_2_workers_equal_local_1_thread"] else 1


if __name__ == "__main__":
    sys.exit(main())
