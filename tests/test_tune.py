"""`acsdk tune` measures what it says (issue 38): timed runs only after a warm-up, the recommendation by the fewest
UNet rows over every scene (and the table says so), a help text, and a grid the scheduler cannot take refused before
anything runs or is written."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from acsdk.apps import tune as tune_mod
from acsdk.apps.cli import main
from acsdk.errors import InputError


@pytest.fixture
def data(tmp_path):
    from acsdk.data.procedural import make_mvtec_like

    return make_mvtec_like(tmp_path / "data", size=64, defects=("hole",), n_good=2, n_per_defect=3)


def test_help_says_what_tune_does(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Measure on your own engines and data how few UNet calls keep the picture" in out
    assert "fewest UNet rows per image (calls x CFG batch" in out and "untimed warm-up" in out
    assert "writes --out/tune.md" in out and "acsdk tune --engines engines/ --data mvtec/" in out


def _row(sampler, calls, cutoff, rows, seconds, passes):
    return {"sampler": sampler, "calls": calls, "cfg_cutoff": cutoff, "unet_rows": rows, "steps": 0,
            "seconds_per_image": seconds, "passes": passes}  # fmt: skip


def test_the_recommendation_is_the_fewest_unet_rows_over_every_scene_and_the_table_says_so():
    # By calls the 10-call row wins; by UNet rows (calls x CFG batch) the 14-call row with a cut-off at 0 does.
    rows = [_row("ddim", 35, None, 70.0, 1.0, True), _row("ddim", 10, None, 20.0, 0.30, True),
            _row("dpmpp-2m", 14, 0.0, 14.0, 0.35, True), _row("ddim", 7, 0.0, 7.0, 0.1, False)]  # fmt: skip
    assert min((r for r in rows if r["passes"]), key=lambda r: r["calls"])["calls"] == 10
    best = tune_mod.recommend(rows)
    assert (best["sampler"], best["calls"], best["cfg_cutoff"]) == ("dpmpp-2m", 14, 0.0)
    tie = [_row("ddim", 14, 0.0, 14.0, 0.40, True), _row("dpmpp-2m", 14, 0.0, 14.0, 0.35, True)]
    assert tune_mod.recommend(tie)["sampler"] == "dpmpp-2m", "ties by seconds"
    assert tune_mod.recommend([_row("ddim", 7, None, 14.0, 0.1, False)]) is None
    # Rows per image over every scene, not scene 0's: a scene with two windows runs twice the rows.
    results = [SimpleNamespace(timings={"unet_rows": 14.0}), SimpleNamespace(timings={"unet_rows": 28.0})]
    assert tune_mod.unet_rows(results) == 21.0

    agree = {"mean": 1.0, "p99": 4.0, "psnr_db": 40.0}
    report = {
        "default": {"num_inference_steps": 50, "strength": 0.7, "seconds_per_image": 1.0, "unet_rows": 70.0,
                    "vs_fine": agree},
        "fine_calls": 350, "rows": [{**r, "vs_default": agree, "vs_fine": agree} for r in rows],
        "recommended_by": tune_mod.RECOMMENDED_BY, "recommendation": {**best, "command": "acsdk generate ..."},
    }  # fmt: skip
    md = tune_mod.table(report)
    assert "| UNet rows / image |" in md
    assert "Recommended by the fewest UNet rows per image (calls x CFG batch" in md and "mean over all scenes" in md
    assert "Recommendation: dpmpp-2m, 14 calls, CFG cut-off 0: 14 UNet rows" in md


def test_calls_the_scheduler_cannot_take_are_refused_before_any_image_or_write(engine_dir, data, tmp_path,
                                                                               monkeypatch, capsys):  # fmt: skip
    from acsdk.inference.synthesizer import Synthesizer

    def refuse(*args, **kwargs):
        raise AssertionError("a model ran before the grid was checked")

    for name in ("run", "run_batch", "encode_reference"):
        monkeypatch.setattr(Synthesizer, name, refuse)
    out = tmp_path / "tune"
    argv = ["tune", "--engines", str(engine_dir), "--backend", "onnxruntime", "--device", "cpu", "--data", str(data),
            "--category", "plate", "--calls", "7,700", "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    want = "acsdk tune: error: --calls: expected UNet calls per image the engine dir's scheduler can take, at most 681"
    assert err.startswith(want), err
    assert err.rstrip().endswith("got 700"), err
    assert not out.exists(), "nothing written"

    synth = Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
    with pytest.raises(InputError, match="^fine_calls: expected UNet calls per image .* can take, at most 681"):
        tune_mod.tune(synth, data, "plate", out, calls=(7,), fine_calls=1000, progress=False)
    with pytest.raises(InputError, match="^calls: expected an integer >= 1"):
        tune_mod.tune(synth, data, "plate", out, calls=(7, 0), progress=False)
    assert not out.exists()


def test_every_engine_opens_and_every_unet_batch_runs_before_the_first_timed_image(engine_dir, data, tmp_path,
                                                                                    monkeypatch):  # fmt: skip
    """Events in order: an engine opened ("open"), the UNet run at a batch it had not run before ("shape": where
    OpenVINO compiles, and `auto` times both backends at the open), and a timed image's clock ("clock")."""
    from acsdk.inference.synthesizer import Synthesizer

    events: list[tuple] = []
    synth = Synthesizer(engine_dir, backend="onnxruntime", device="cpu")

    class Recorded:
        def __init__(self, engine):
            self.engine, self.seen = engine, set()

        def run(self, inputs):
            batch = next(iter(inputs.values())).shape[0]
            if batch not in self.seen:
                self.seen.add(batch)
                events.append(("shape", batch))
            return self.engine.run(inputs)

        def __getattr__(self, name):
            return getattr(self.engine, name)

    for name, lazy in synth.parts.engines._items.items():

        def load(load=lazy._load, name=name):
            events.append(("open", name))
            engine = load()
            return Recorded(engine) if name == "unet" else engine

        lazy._load = load

    def clock() -> float:
        events.append(("clock",))
        return time.perf_counter()

    monkeypatch.setattr(tune_mod, "time", SimpleNamespace(perf_counter=clock))
    report = tune_mod.tune(synth, data, "plate", tmp_path / "tune", defects=1, seeds=2, calls=(7,), fine_calls=14,
                           progress=False)  # fmt: skip
    first = events.index(("clock",))
    late = [e for e in events[first:] if e[0] != "clock"]
    assert not late, f"opened or compiled while timing: {late} (events {events[: first + 3]} ...)"
    assert {e for e in events[:first] if e[0] == "shape"} == {("shape", 2), ("shape", 1)}, "CFG batch 2 and 1"
    assert ("open", "unet") in events[:first]
    assert len(report["rows"]) == 4 and report["default"]["seconds_per_image"] > 0
