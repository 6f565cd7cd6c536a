"""Batched generation: N targets through one UNet call, each equal to its single run within one grey level."""

import numpy as np
import pytest
from conftest import pixels

import acsdk
from acsdk import InputError
from acsdk.testing import make_box_mask, make_defect_pair, make_texture

SETTINGS = {"num_inference_steps": 8, "asea_steps": 2}


def _jobs():
    ref, ref_mask = make_defect_pair(64, seed=3)
    features = None
    jobs = []
    for i, size in enumerate((64, 96, 64, 128)):  # mixed sizes: windows are resized to the model's size
        jobs.append(
            {
                "image": make_texture(size, seed=10 + i),
                "mask": make_box_mask(size, size // 4, size // 3, 12 + i, 10),
                "prompt": "a photo of a surface with a hole" if i % 2 else "a scratch",
                "reference_image": ref,
                "reference_mask": ref_mask,
                "seed": 100 + i,
            }
        )
    del features
    return jobs


def _single(synth, job):
    return synth.run(**job, **SETTINGS)


@pytest.fixture(scope="module")
def batch_engines(tiny_ckpt, tmp_path_factory):
    from export.build import build_engine_dir

    path = tmp_path_factory.mktemp("batch") / "e"
    return build_engine_dir(tiny_ckpt, path, backend="onnxruntime", max_batch=4, progress=False)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_batch_of_four_equals_four_single_runs(backend, synth, batch_engines):
    if backend == "openvino":
        pytest.importorskip("openvino")
    s = synth if backend == "torch" else acsdk.Synthesizer(batch_engines, backend=backend, device="cpu")
    jobs = _jobs()
    batched = s.run_batch(jobs, batch_size=4, **SETTINGS)
    for job, res in zip(jobs, batched, strict=True):
        single = _single(s, job)
        diff = np.abs(pixels(res.image).astype(int) - pixels(single.image).astype(int))
        assert res.image.size == single.image.size and diff.max() <= 1, diff.max()
        assert res.windows == single.windows and res.asea == single.asea
    assert batched[0].timings["batch_size"] == 4.0


def test_batch_larger_than_the_engine_profile_names_max_batch(engine_dir):
    s = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")  # built with --max-batch 1
    with pytest.raises(InputError, match="--max-batch") as err:
        s.run_batch(_jobs(), batch_size=2, **SETTINGS)
    assert err.value.argument == "batch_size"
    with pytest.raises(InputError) as err:
        s.run_batch([{"image": np.zeros((8, 8, 3), np.uint8), "mask": None}], **SETTINGS)
    assert err.value.argument == "jobs"
    out = s.run_batch(_jobs()[:2], **SETTINGS)  # default: as many as the profile allows, here one at a time
    assert len(out) == 2


def test_generate_batch_size_writes_the_same_set(tmp_path, batch_engines):
    import json

    from acsdk.data import make_mvtec_like
    from acsdk.data.generate import generate

    data = make_mvtec_like(tmp_path / "data", "plate", n_good=2, n_per_defect=3, defects=("hole",))
    synth = acsdk.Synthesizer(batch_engines, backend="onnxruntime", device="cpu")
    runs = {}
    for n in (1, 3):
        out = tmp_path / f"b{n}"
        generate(None, data, "plate", 4, out, synthesizer=synth, batch_size=n, progress=False, **SETTINGS)
        runs[n] = out / "plate" / "hole"
    from PIL import Image

    for i in range(4):
        a, b = (pixels(Image.open(runs[n] / "image" / f"{i:04d}.png")).astype(int) for n in (1, 3))
        assert np.abs(a - b).max() <= 1
    recs = {n: [json.loads(x) for x in (runs[n] / "metadata.jsonl").read_text().splitlines()] for n in (1, 3)}
    strip = lambda r: {k: v for k, v in r.items() if k not in ("run", "settings")}  # noqa: E731
    assert [strip(r) for r in recs[1]] == [strip(r) for r in recs[3]]
    assert recs[3][0]["settings"]["batch_size"] == 3
    # a chunk with one item lost runs whole again on --resume, so the redone item is byte-identical
    hole = runs[3]
    lost = {p: p.read_bytes() for p in (hole / "image" / "0001.png", hole / "mask" / "0001.png")}
    for p in [*lost, hole / "records" / "0001.json"]:
        p.unlink()
    s = generate(None, data, "plate", 4, tmp_path / "b3", synthesizer=synth, batch_size=3, resume=True, progress=False,
                 **SETTINGS)  # fmt: skip
    assert s.written == {"hole": 1} and all(p.read_bytes() == b for p, b in lost.items())
