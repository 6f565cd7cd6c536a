import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from acsdk import InputError
from acsdk.data import make_mvtec_like
from acsdk.data.generate import generate

FAST = {"num_inference_steps": 10, "asea_steps": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    make_mvtec_like(root, "plate", n_good=4, n_per_defect=6, defects=("hole", "scratch"))
    return root


@pytest.fixture(scope="module")
def gen_synth(engine_dir):
    import acsdk

    return acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")


def _files(root):
    out = {}
    for p in sorted(root.rglob("*.png")):
        if p.name != "contact_sheet.png":
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _records(root, defect):
    recs = [json.loads(x) for x in (root / "plate" / defect / "metadata.jsonl").read_text().splitlines()]
    for r in recs:
        assert set(r.pop("run")) == {"worker", "timings", "reference_cached"}
    return recs


@pytest.fixture(scope="module")
def first_run(gen_synth, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "out"
    summary = generate(None, data, "plate", 3, out, synthesizer=gen_synth, seed=7, progress=False, **FAST)
    return out, summary


def test_layout_counts_and_metadata(first_run, data):
    out, summary = first_run
    assert summary.total == {"hole": 3, "scratch": 3} and summary.written == summary.total
    for defect in ("hole", "scratch"):
        d = out / "plate" / defect
        assert sorted(p.name for p in (d / "image").iterdir()) == ["0000.png", "0001.png", "0002.png"]
        assert sorted(p.name for p in (d / "mask").iterdir()) == ["0000.png", "0001.png", "0002.png"]
        assert (d / "contact_sheet.png").is_file()
        recs = _records(out, defect)
        assert [r["index"] for r in recs] == [0, 1, 2]
        for r in recs:
            mask = np.asarray(Image.open(d / r["mask"]))
            assert mask.any() and set(np.unique(mask)) <= {0, 255}
            normal = Image.open(data / r["normal"])
            assert Image.open(d / r["image"]).size == normal.size
            assert r["reference"].startswith(f"plate/test/{defect}/")
            assert r["reference"].split("/")[-1] in ("000.png", "001.png")  # the reference split only
            assert r["prompt"] == f"a photo of a plate with a {defect}"
            assert len(r["settings"]["engine_manifest_sha256"]) == 64
            assert r["settings"]["roi"] == "auto" and r["windows"], "the windows used are recorded"
            covered = np.zeros(mask.shape, bool)
            for w in r["windows"]:
                covered[max(w["top"], 0) : w["top"] + w["height"], max(w["left"], 0) : w["left"] + w["width"]] = True
            assert covered[mask > 0].all(), "every label pixel lies in a recorded window"
    assert json.loads((out / "plate" / "generate.json").read_text())["seed"] == 7


def test_same_seed_same_files_other_seed_differs(first_run, gen_synth, data, tmp_path):
    out, _ = first_run
    generate(None, data, "plate", 3, tmp_path / "again", synthesizer=gen_synth, seed=7, progress=False, **FAST)
    assert _files(tmp_path / "again") == _files(out)
    generate(None, data, "plate", 3, tmp_path / "other", synthesizer=gen_synth, seed=8, progress=False, **FAST)
    assert _files(tmp_path / "other") != _files(out)


def test_resume_extends_without_touching_finished_pairs(first_run, gen_synth, data, tmp_path):
    import shutil

    out, _ = first_run
    work = shutil.copytree(out, tmp_path / "w")
    before = _files(work)
    s = generate(None, data, "plate", 4, work, synthesizer=gen_synth, seed=7, resume=True, progress=False, **FAST)
    assert s.written == {"hole": 1, "scratch": 1} and s.total == {"hole": 4, "scratch": 4}
    after = _files(work)
    assert all(after[k] == v for k, v in before.items())
    assert [r["index"] for r in _records(work, "hole")] == [0, 1, 2, 3]


def test_kill_and_resume_equals_uninterrupted(gen_synth, data, tmp_path, engine_dir):
    per_type = 8
    args = [
        sys.executable,
        "-m",
        "acsdk",
        "generate",
        "--engines",
        str(engine_dir),
        "--backend",
        "onnxruntime",
        "--device",
        "cpu",
        "--data",
        str(data),
        "--category",
        "plate",
        "--per-type",
        str(per_type),
        "--out",
        str(tmp_path / "killed"),
        "--seed",
        "3",
        "--steps",
        "10",
        "--asea-steps",
        "2",
        "-q",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = tmp_path / "killed" / "plate" / "hole" / "records"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if records.is_dir() and len(list(records.glob("*.json"))) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list(records.glob("*.json")))
    assert 3 <= partial < per_type
    resumed = generate(
        None,
        data,
        "plate",
        per_type,
        tmp_path / "killed",
        synthesizer=gen_synth,
        seed=3,
        resume=True,
        progress=False,
        **FAST,
    )
    assert resumed.written["hole"] == per_type - partial and resumed.total == {"hole": per_type, "scratch": per_type}
    whole = generate(
        None, data, "plate", per_type, tmp_path / "whole", synthesizer=gen_synth, seed=3, progress=False, **FAST
    )
    assert whole.total == resumed.total
    assert _files(tmp_path / "killed") == _files(tmp_path / "whole")
    for defect in ("hole", "scratch"):
        assert _records(tmp_path / "killed", defect) == _records(tmp_path / "whole", defect)
    assert not list((tmp_path / "killed").rglob("*.tmp"))


def test_bad_inputs(first_run, gen_synth, data, tmp_path):
    out, _ = first_run
    with pytest.raises(InputError) as err:
        generate(None, data, "plate", 0, tmp_path / "x", synthesizer=gen_synth)
    assert err.value.argument == "per_type"
    with pytest.raises(InputError, match="--resume") as err:
        generate(None, data, "plate", 3, out, synthesizer=gen_synth, seed=7, progress=False, **FAST)
    assert err.value.argument == "out"
    with pytest.raises(InputError, match="other settings") as err:
        generate(None, data, "plate", 3, out, synthesizer=gen_synth, seed=8, resume=True, progress=False, **FAST)
    assert "seed" in str(err.value)
    for other in ({"sampler": "dpmpp-2m"}, {"cfg_cutoff": 0.5}):  # recorded in generate.json, compared on resume
        with pytest.raises(InputError, match="other settings") as err:
            generate(None, data, "plate", 3, out, synthesizer=gen_synth, seed=7, resume=True, progress=False,
                     **FAST, **other)  # fmt: skip
        assert next(iter(other)) in str(err.value)
    (tmp_path / "busy" / "plate").mkdir(parents=True)
    (tmp_path / "busy" / "plate" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="holds other files"):
        generate(None, data, "plate", 1, tmp_path / "busy", synthesizer=gen_synth, progress=False, **FAST)
    with pytest.raises(InputError) as err:
        generate(None, data, "plate", 1, tmp_path / "y", defects=["dent"], synthesizer=gen_synth)
    assert err.value.argument == "defects"
    with pytest.raises(InputError) as err:
        generate(None, tmp_path / "nowhere", "plate", 1, tmp_path / "z", synthesizer=gen_synth)
    assert err.value.argument == "data"


def test_defect_without_references_is_refused(gen_synth, tmp_path):
    make_mvtec_like(tmp_path / "d", "plate", n_good=2, n_per_defect=2, defects=("hole",))
    with pytest.raises(InputError, match="'hole' with 2"):
        generate(None, tmp_path / "d", "plate", 1, tmp_path / "o", synthesizer=gen_synth)


def test_corrupt_normal_is_skipped_and_run_continues(gen_synth, tmp_path):
    make_mvtec_like(tmp_path / "d", "plate", n_good=3, n_per_defect=3, defects=("hole",))
    (tmp_path / "d/plate/train/good/000.png").write_bytes(b"\x89PNG broken")
    s = generate(None, tmp_path / "d", "plate", 2, tmp_path / "o", synthesizer=gen_synth, progress=False, **FAST)
    assert s.total == {"hole": 2}
    skipped = json.loads((tmp_path / "o" / "plate" / "skipped.json").read_text())
    assert [x["file"].split("/")[-1] for x in skipped] == ["000.png"]
    assert all(r["normal"] != "plate/train/good/000.png" for r in _records(tmp_path / "o", "hole"))


def test_a_set_from_before_records_existed_resumes_from_its_metadata(first_run, gen_synth, data, tmp_path):
    import shutil

    work = shutil.copytree(first_run[0], tmp_path / "w")
    for defect in ("hole", "scratch"):
        shutil.rmtree(work / "plate" / defect / "records")  # the 0.x layout: metadata.jsonl only
    s = generate(None, data, "plate", 3, work, synthesizer=gen_synth, seed=7, resume=True, progress=False, **FAST)
    assert s.written == {"hole": 0, "scratch": 0} and s.total == {"hole": 3, "scratch": 3}
    assert len(list((work / "plate" / "hole" / "records").glob("*.json"))) == 3
    assert _records(work, "hole") == _records(first_run[0], "hole")


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m"])
def test_a_step_count_the_schedule_cannot_hold_is_refused_before_anything_is_written(
    first_run, gen_synth, data, tmp_path, sampler
):
    """At strength 0.7 a run visits at most the 681 timesteps from DDIM-50's start (681) to the schedule's end (1):
    974 steps (681 calls) fit, 975 (682) do not. The sampler would refuse them at the first item, after generate.json
    and the folders were written; they are refused first, and nothing is written."""
    from acsdk.inference.settings import SamplingSettings

    schedule = gen_synth.parts.scheduler_config
    SamplingSettings(num_inference_steps=974, sampler=sampler).check_schedule(schedule)  # the largest that fits
    out, _ = first_run
    before = _tree(out)
    (tmp_path / "empty" / "plate").mkdir(parents=True)
    for steps in (975, 1000):
        for dest, resume in ((tmp_path / "new", False), (tmp_path / "empty", False), (out, True)):
            with pytest.raises(InputError) as err:
                generate(None, data, "plate", 3, dest, synthesizer=gen_synth, seed=7, resume=resume, progress=False,
                         num_inference_steps=steps, sampler=sampler, asea_steps=2)  # fmt: skip
            assert err.value.argument == "num_inference_steps" and "at most 681 UNet calls" in str(err.value)
    assert not (tmp_path / "new").exists()
    assert list((tmp_path / "empty").rglob("*")) == [tmp_path / "empty" / "plate"]
    assert _tree(out) == before


def test_a_new_run_whose_first_item_fails_leaves_nothing_behind(first_run, gen_synth, data, tmp_path, monkeypatch):
    """As a Ray run does: what the failed run wrote goes, so the same command can be run again (not refused with
    "use --resume"); a resumed run keeps everything for the next --resume."""
    import shutil

    def fail(*args, **kwargs):
        raise RuntimeError("the first item failed")

    monkeypatch.setattr(gen_synth, "run_batch", fail)
    (tmp_path / "empty" / "plate").mkdir(parents=True)
    for _ in range(2):  # the second time is the same command again: refused neither as a non-empty dir nor --resume
        with pytest.raises(RuntimeError, match="first item"):
            generate(None, data, "plate", 2, tmp_path / "new" / "out", synthesizer=gen_synth, progress=False, **FAST)
        assert not (tmp_path / "new").exists()
        with pytest.raises(RuntimeError, match="first item"):
            generate(None, data, "plate", 2, tmp_path / "empty", synthesizer=gen_synth, progress=False, **FAST)
        assert list((tmp_path / "empty").rglob("*")) == [tmp_path / "empty" / "plate"]
    work = shutil.copytree(first_run[0], tmp_path / "resumed")
    pairs = _files(work)
    with pytest.raises(RuntimeError, match="first item"):
        generate(None, data, "plate", 4, work, synthesizer=gen_synth, seed=7, resume=True, progress=False, **FAST)
    assert _files(work) == pairs and len(list((work / "plate" / "hole" / "records").glob("*.json"))) == 3
