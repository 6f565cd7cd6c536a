"""`acsdk tune`: the cheapest sampling setting that keeps the picture, measured on your own engines, images and
references.

Whether fewer calls keep the picture depends on the model and the scenes (docs/benchmarks.md: on the demo model no
setting cheaper than the default passes, on a random 256 px one DPM-Solver++ at 14 calls does), so it is measured,
not assumed: a grid of (sampler, calls, CFG cut-off) runs on a few defect types x seeds from the user's data; every
image is compared with the default's (DDIM, 50 steps x 0.7 = 35 calls) and with a fine solution (DDIM, 350 calls
from the same start and noise; every sampler ends where DDIM ends) by the INT8 gate's numbers, and timed on the
engines' backend after an untimed warm-up (engines opened, `auto`'s backend measurement and OpenVINO's compile at
each UNet batch done). The recommendation is the setting with the fewest UNet rows per image (calls x CFG batch: 2
with guidance, 1 after a cut-off; the mean over all scenes) whose images pass the gate against the default, ties
broken by the time, with the `acsdk generate` line that uses it. Every setting of the grid is checked against the
engine dir's scheduler before the first image, so a count it cannot take is refused before anything runs or is
written.
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
WARM_UP_CALLS = 2  # the warm-up's calls per scene: one with guidance (batch 2) and, with a cut-off, one without
RECOMMENDED_BY = (
    "the fewest UNet rows per image (calls x CFG batch: 2 per call with guidance, 1 after a cut-off; mean over all "
    "scenes) that pass the gate against the default; ties by seconds per image"
)


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


def warm_up(synth, scenes: list[Scene], cutoff: bool) -> None:
    """One short untimed run per scene before anything is timed: the engines open (under `auto`, timing both
    backends), and OpenVINO compiles the UNet at each batch the timed runs use (2 rows per window with guidance,
    then 1 after a cut-off) and the VAEs at each scene's windows. Without it the first timed image pays all of
    that, which inflates the default's seconds (timed first) and so the speedup. With low_memory every image opens
    its engines again: that cost is then the setting's own and stays in the times."""
    sampling = SamplingSettings(num_inference_steps=steps_for(WARM_UP_CALLS, SamplingSettings().strength),
                                cfg_cutoff=0.5 if cutoff else None)  # fmt: skip
    for s in scenes:
        synth.run(s.image, s.mask, s.prompt, reference=s.reference, seed=s.seed, sampling=sampling)


def plan(
    scheduler_config: dict,
    calls: tuple[int, ...],
    samplers: tuple[str, ...],
    cutoffs: tuple[float | None, ...],
    fine_calls: int,
) -> tuple[SamplingSettings, list[tuple[str, int, float | None, SamplingSettings]]]:
    """The fine solution's settings and the grid's, each checked against the engine dir's scheduler (the timesteps
    it visits, the sampler it builds) before anything runs: InputError naming `calls` (or `fine_calls`) for a count
    the scheduler cannot take, so a bad grid is refused before the first image and before anything is written."""
    for n in calls:
        check_int("calls", n, 1)
    check_int("fine_calls", fine_calls, 2)
    strength = SamplingSettings().strength

    def checked(argument: str, n: int, **fields) -> SamplingSettings:
        sampling = SamplingSettings(num_inference_steps=steps_for(n, strength), **fields)
        try:
            sampling.check_schedule(scheduler_config)
        except InputError as exc:
            if exc.argument != "num_inference_steps":
                raise
            expected = f"UNet calls per image the engine dir's scheduler can take, {exc.expected}"
            raise InputError(argument, expected, str(n)) from exc
        return sampling

    fine = checked("fine_calls", fine_calls)
    grid = [(sampler, n, cutoff, checked("calls", n, sampler=sampler, cfg_cutoff=cutoff))
            for sampler in samplers for n in sorted(set(calls)) for cutoff in cutoffs]  # fmt: skip
    return fine, grid


def unet_rows(results: list) -> float:
    """UNet rows per image, the mean over all scenes (a scene with two windows runs twice the rows)."""
    return float(np.mean([r.timings["unet_rows"] for r in results]))


def recommend(rows: list[dict]) -> dict | None:
    """Of the rows that pass the gate, the one with the fewest UNet rows per image (what an image costs: calls x
    CFG batch, so a cut-off counts), ties by seconds per image; None when none passes."""
    passing = [r for r in rows if r["passes"]]
    return min(passing, key=lambda r: (r["unet_rows"], r["seconds_per_image"])) if passing else None


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
    """Run the grid, write tune.json, tune.md and tune.png into `out`, and return the report. Every setting is
    checked first (`plan`), the engines warmed up (`warm_up`), then the default, the fine solution and the grid run."""
    check_int("defects", defects, 1)
    check_int("seeds", seeds, 1)
    fine_settings, grid = plan(synth.parts.scheduler_config, tuple(calls), tuple(samplers), tuple(cutoffs), fine_calls)
    default = SamplingSettings()
    model_size = (synth.parts.config.height, synth.parts.config.width)
    scenes = make_scenes(synth, Path(data), category, defects, seeds)
    warm_up(synth, scenes, cutoff=any(c is not None for _, _, c, _ in grid))
    base, base_s = _generate(synth, scenes, default)
    fine, _ = _generate(synth, scenes, fine_settings)
    gate = Gate()
    rows = []
    for sampler, n, cutoff, sampling in tqdm(grid, desc="tune", unit="setting", disable=not progress):
        results, seconds = _generate(synth, scenes, sampling)
        vs_default = agreement(list(zip(results, base, strict=True)), model_size)
        vs_fine = agreement(list(zip(results, fine, strict=True)), model_size)
        rows.append({
            "sampler": sampler, "calls": n, "steps": sampling.num_inference_steps, "cfg_cutoff": cutoff,
            "unet_rows": unet_rows(results), "seconds_per_image": seconds,
            "vs_default": vs_default, "vs_fine": vs_fine, "passes": gate.check(vs_default),
        })  # fmt: skip
        log.info("%s %d calls cut-off %s: %s", sampler, n, cutoff, rows[-1]["vs_default"])
    best = recommend(rows)
    base_fine = agreement(list(zip(base, fine, strict=True)), model_size)
    report = {
        "engines": str(engines) if engines is not None else None,
        "data": str(data), "category": category, "scenes": [{"defect": s.defect, "seed": s.seed} for s in scenes],
        "default": {**default.as_dict(), "seconds_per_image": base_s, "unet_rows": unet_rows(base),
                    "vs_fine": base_fine},
        "fine_calls": fine_calls, "gate": gate.__dict__, "rows": rows, "recommended_by": RECOMMENDED_BY,
        "recommendation": None if best is None else {**best, "command": _command(best, engines, data, category)},
    }  # fmt: skip
    _write(Path(out), report)
    return report


def _command(row: dict, engines, data, category: str) -> str:
    line = f"acsdk generate --engines {engines} --data {data} --category {category} --per-type N --out OUT"
    line += f" --steps {row['steps']} --sampler {row['sampler']}"
    return line + (f" --cfg-cutoff {row['cfg_cutoff']}" if row["cfg_cutoff"] is not None else "")


def table(report: dict) -> str:
    """The grid as a markdown table, then the recommendation and what it was chosen by."""
    d = report["default"]
    lines = [
        f"Default (DDIM, {d['num_inference_steps']} steps x {d['strength']}): {d['unet_rows']:g} UNet rows, "
        f"{d['seconds_per_image']:.3f} s per image; against the {report['fine_calls']}-call solution mean "
        f"{d['vs_fine']['mean']:.2f} / p99 {d['vs_fine']['p99']:.1f} grey levels.",
        "",
        "| sampler | calls | cfg cut-off | UNet rows / image | s / image | vs default mean / p99 / PSNR | "
        "vs fine mean / p99 | passes |",
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
    lines += ["", f"Recommended by {report['recommended_by']}.", "", "Recommendation: " + (
        f"{rec['sampler']}, {rec['calls']} calls" + (f", CFG cut-off {rec['cfg_cutoff']:g}" if rec["cfg_cutoff"]
                                                      is not None else "")
        + f": {rec['unet_rows']:g} UNet rows, {rec['seconds_per_image']:.3f} s per image against "
        f"{d['unet_rows']:g} and {d['seconds_per_image']:.3f}.\n\n    {rec['command']}"
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
