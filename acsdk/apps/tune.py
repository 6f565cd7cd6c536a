"""`acsdk tune`: the fewest UNet calls that keep the picture, measured on your own engines, images and references.

Whether fewer calls keep the picture depends on the model (measured: on the shipped demo model DDIM beats
DPM-Solver++ at 7 and 35 calls, on a random tiny model the other way round), so it is measured, not assumed: a grid
of (sampler, calls, CFG cut-off) runs on a few defect types x seeds from the user's data; every image is compared
with the default's (DDIM, 50 steps x 0.7 = 35 calls) and with a fine solution (DDIM, 350 calls from the same start
and noise) by the INT8 gate's numbers, and timed on the engines' backend. The recommendation is the fewest calls
whose images pass the gate against the default, with the `acsdk generate` line that uses it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.masks import estimate_foreground, sample_target_mask
from ..data.mvtec import load_category
from ..data.prompts import PromptSource
from ..errors import InputError, check_int
from ..inference.agreement import Gate, agreement
from ..inference.imaging import read_mask, read_rgb8
from ..inference.schedules import SAMPLERS
from ..inference.settings import SamplingSettings

log = logging.getLogger(__name__)

CALLS = (7, 10, 14, 20, 35)  # UNet calls per image tried (the default makes 35)
CUTOFFS = (None, 0.5)  # CFG on every call, or on the first half
FINE_CALLS = 350


@dataclass(frozen=True)
class Scene:
    image: np.ndarray
    mask: np.ndarray
    prompt: str
    reference: object  # the defect type's SemanticFeatures, encoded once
    seed: int
    defect: str


def steps_for(calls: int, strength: float) -> int:
    """The fewest steps whose `int(steps x strength)` is `calls` (the sampler's count of UNet calls)."""
    steps = math.ceil(calls / strength)
    while int(steps * strength) < calls:
        steps += 1
    return steps


def make_scenes(synth, data: Path, category: str, defects: int, seeds: int) -> list[Scene]:
    """`seeds` targets for each of the first `defects` defect types with references: a good image, a target mask
    drawn from the reference's mask on the object, the reference encoded once (CSM + ASEA)."""
    cat = load_category(data, category)
    kinds = [d for d in sorted(cat.anomalies) if cat.references(d)][:defects]
    if not kinds:
        raise InputError("data", f"defect types with references under {data}/{category}/test", "none")
    prompts = PromptSource()
    out = []
    for d in kinds:
        ref = cat.references(d)[0]
        prompt = prompts(category, d)
        features = synth.encode_reference(ref.image, ref.mask, prompt)
        ref_mask = read_mask(ref.mask)
        for seed in range(seeds):
            image = read_rgb8(cat.normals[seed % len(cat.normals)])
            rng = np.random.default_rng(seed)
            target = sample_target_mask([ref_mask], image.shape[:2], rng, foreground=estimate_foreground(image))
            out.append(Scene(image, (target * 255).astype(np.uint8), prompt, features, seed, d))
    return out


def _generate(synth, scenes: list[Scene], sampling: SamplingSettings) -> tuple[list, float]:
    """Every scene at `sampling`; the median seconds per image."""
    results, seconds = [], []
    for s in scenes:
        t0 = time.perf_counter()
        results.append(synth.run(s.image, s.mask, s.prompt, reference=s.reference, seed=s.seed, sampling=sampling))
        seconds.append(time.perf_counter() - t0)
    return results, float(np.median(seconds))


def tune(
    synth,
    data: str | Path,
    category: str,
    out: str | Path,
    *,
    defects: int = 2,
    seeds: int = 2,
    calls: tuple[int, ...] = CALLS,
    samplers: tuple[str, ...] = SAMPLERS,
    cutoffs: tuple[float | None, ...] = CUTOFFS,
    fine_calls: int = FINE_CALLS,
    engines: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Run the grid, write tune.json, tune.md and tune.png into `out`, and return the report."""
    check_int("defects", defects, 1)
    check_int("seeds", seeds, 1)
    for n in calls:
        check_int("calls", n, 1)
    default = SamplingSettings()
    model_size = (synth.parts.config.height, synth.parts.config.width)
    scenes = make_scenes(synth, Path(data), category, defects, seeds)
    base, base_s = _generate(synth, scenes, default)
    fine_settings = SamplingSettings(num_inference_steps=steps_for(fine_calls, default.strength))
    fine, _ = _generate(synth, scenes, fine_settings)
    gate = Gate()
    grid = [(s, n, c) for s in samplers for n in sorted(set(calls)) for c in cutoffs]
    rows = []
    for sampler, n, cutoff in tqdm(grid, desc="tune", unit="setting", disable=not progress):
        sampling = SamplingSettings(
            sampler=sampler, num_inference_steps=steps_for(n, default.strength), cfg_cutoff=cutoff
        )
        results, seconds = _generate(synth, scenes, sampling)
        vs_default = agreement(list(zip(results, base, strict=True)), model_size)
        vs_fine = agreement(list(zip(results, fine, strict=True)), model_size)
        rows.append({
            "sampler": sampler, "calls": n, "steps": sampling.num_inference_steps, "cfg_cutoff": cutoff,
            "unet_rows": results[0].timings.get("unet_rows"), "seconds_per_image": seconds,
            "vs_default": vs_default, "vs_fine": vs_fine, "passes": gate.check(vs_default),
        })  # fmt: skip
        log.info("%s %d calls cut-off %s: %s", sampler, n, cutoff, rows[-1]["vs_default"])
    passing = [r for r in rows if r["passes"]]
    best = min(passing, key=lambda r: (r["unet_rows"] or r["calls"], r["seconds_per_image"])) if passing else None
    base_fine = agreement(list(zip(base, fine, strict=True)), model_size)
    report = {
        "engines": str(engines) if engines is not None else None,
        "data": str(data), "category": category, "scenes": [{"defect": s.defect, "seed": s.seed} for s in scenes],
        "default": {**default.as_dict(), "seconds_per_image": base_s, "vs_fine": base_fine},
        "fine_calls": fine_calls, "gate": gate.__dict__, "rows": rows,
        "recommendation": None if best is None else {**best, "command": _command(best, engines, data, category)},
    }  # fmt: skip
    _write(Path(out), report)
    return report


def _command(row: dict, engines, data, category: str) -> str:
    line = f"acsdk generate --engines {engines} --data {data} --category {category} --per-type N --out OUT"
    line += f" --steps {row['steps']} --sampler {row['sampler']}"
    return line + (f" --cfg-cutoff {row['cfg_cutoff']}" if row["cfg_cutoff"] is not None else "")


def table(report: dict) -> str:
    """The grid as a markdown table, then the recommendation."""
    d = report["default"]
    lines = [
        f"Default (DDIM, {d['num_inference_steps']} steps x {d['strength']}): {d['seconds_per_image']:.3f} s per "
        f"image; against the {report['fine_calls']}-call solution mean {d['vs_fine']['mean']:.2f} / p99 "
        f"{d['vs_fine']['p99']:.1f} grey levels.",
        "",
        "| sampler | calls | cfg cut-off | UNet rows | s / image | vs default mean / p99 / PSNR | vs fine mean / p99 | "
        "passes |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for r in report["rows"]:
        a, f = r["vs_default"], r["vs_fine"]
        cut = "-" if r["cfg_cutoff"] is None else f"{r['cfg_cutoff']:g}"
        lines.append(
            f"| {r['sampler']} | {r['calls']} | {cut} | {r['unet_rows']:g} | {r['seconds_per_image']:.3f} | "
            f"{a['mean']:.2f} / {a['p99']:.1f} / {a['psnr_db']:.1f} dB | {f['mean']:.2f} / {f['p99']:.1f} | "
            f"{'yes' if r['passes'] else 'no'} |"
        )
    rec = report["recommendation"]
    lines += ["", "Recommendation: " + (
        f"{rec['sampler']}, {rec['calls']} calls" + (f", CFG cut-off {rec['cfg_cutoff']:g}" if rec["cfg_cutoff"]
                                                      is not None else "")
        + f": {rec['seconds_per_image']:.3f} s per image against {d['seconds_per_image']:.3f}.\n\n    {rec['command']}"
        if rec else "none of the settings passes the gate against the default: keep the default."
    )]  # fmt: skip
    return "\n".join(lines) + "\n"


def _write(out: Path, report: dict) -> None:
    from runtime.files import atomic_path, atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "tune.json", json.dumps(report, indent=2))
    atomic_write(out / "tune.md", table(report))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no chart (pip install 'acsdk[eval]')")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for (sampler, cutoff), style in zip(
        [(s, c) for s in dict.fromkeys(r["sampler"] for r in report["rows"]) for c in
         dict.fromkeys(r["cfg_cutoff"] for r in report["rows"])], ["-o", "--o", "-s", "--s", "-^", "--^"], strict=False
    ):  # fmt: skip
        rows = [r for r in report["rows"] if r["sampler"] == sampler and r["cfg_cutoff"] == cutoff]
        label = sampler + ("" if cutoff is None else f", cut-off {cutoff:g}")
        ax.plot([r["calls"] for r in rows], [r["vs_fine"]["mean"] for r in rows], style, label=label)
    ax.set_xlabel("UNet calls per image")
    ax.set_ylabel(f"mean |diff| to the {report['fine_calls']}-call solution (grey levels)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "tune.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
