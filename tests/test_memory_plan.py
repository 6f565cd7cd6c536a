"""The default memory mode: every component held where the host has room for them, one at a time (`low_memory`)
where it has not, chosen by itself, logged and shown; the caller's choice always wins."""

from __future__ import annotations

import json
import logging
import sys

import pytest

import acsdk
import acsdk.inference.memory_plan as memory_plan
from runtime import process


def test_short_memory_chooses_low_memory_by_itself_and_says_why(engine_dir, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "cache"))  # a host where `auto` has not timed its backends
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    need = memory_plan.default_mode_mib(engine_dir, manifest, False, measuring=True)
    assert need > memory_plan.default_mode_mib(engine_dir, manifest, False), "timing ONNX Runtime's copy adds to it"
    monkeypatch.setattr(memory_plan, "available_memory_mib", lambda: need)  # short of the margin
    with caplog.at_level(logging.WARNING, logger="acsdk.inference.memory_plan"):
        synth = acsdk.Synthesizer(engine_dir, device="cpu")
    memory = synth.info()["memory"]
    assert synth.low_memory and synth.info()["low_memory"] is True
    assert memory["chosen_by"] == "auto" and "low_memory chosen" in memory["why"] and "timing" in memory["why"]
    assert memory["available_mib"] == round(need) and memory["default_mode_estimate_mib"] == round(need)
    assert any("low_memory chosen" in r.getMessage() for r in caplog.records), "logged"
    held = acsdk.Synthesizer(engine_dir, device="cpu", low_memory=False)
    assert not held.low_memory and held.info()["memory"]["chosen_by"] == "caller", "the caller's choice wins"


def test_room_enough_keeps_the_default_mode(engine_dir, monkeypatch):
    monkeypatch.setattr(memory_plan, "available_memory_mib", lambda: 1e9)  # room for everything
    synth = acsdk.Synthesizer(engine_dir, device="cpu")
    assert not synth.low_memory and synth.info()["memory"]["chosen_by"] == "auto"
    forced = acsdk.Synthesizer(engine_dir, device="cpu", low_memory=True)
    assert forced.low_memory and forced.info()["memory"]["chosen_by"] == "caller"


def test_the_estimate_counts_fp16_weights_as_fp32_where_the_cpu_widens_them(engine_dir_fp16):
    manifest = json.loads((engine_dir_fp16 / "manifest.json").read_text())
    bf16 = memory_plan.default_mode_mib(engine_dir_fp16, manifest, widen_fp16=False)
    widened = memory_plan.default_mode_mib(engine_dir_fp16, manifest, widen_fp16=True)
    f = memory_plan.WEIGHTS_FACTOR
    fp16_mib = sum(
        sum((engine_dir_fp16 / x).stat().st_size for x in [a["file"], *a["data_files"]]) / 2**20
        for e in manifest["components"].values()
        for a in e["artifacts"]
        if a["format"] == "onnx" and a["precision"] == "fp16" == e["precision"]
    )
    assert widened - bf16 == pytest.approx(fp16_mib * (2 * f["fp32"] - f["fp16"]), rel=1e-6)


@pytest.mark.parametrize("version", [1, 2])
def test_a_cgroup_limit_caps_the_available_memory(tmp_path, version):
    proc = tmp_path / "cgroup"
    if version == 1:
        proc.write_text("4:memory:/job\n1:cpu:/\n")
        base = tmp_path / "memory" / "job"
        base.mkdir(parents=True)
        (base / "memory.limit_in_bytes").write_text(str(8 << 30))
        (base / "memory.usage_in_bytes").write_text(str(3 << 30))
        (base / "memory.stat").write_text(f"cache 1\ninactive_file {1 << 30}\ntotal_inactive_file {2 << 30}\n")
    else:
        proc.write_text("0::/job\n")
        base = tmp_path / "job"
        base.mkdir()
        (base / "memory.max").write_text(str(8 << 30))
        (base / "memory.current").write_text(str(3 << 30))
        (base / "memory.stat").write_text(f"anon 5\ninactive_file {1 << 30}\n")
    assert process._cgroup_room_mib(proc, tmp_path) == 6 * 1024, "limit - usage + the reclaimable page cache"
    (base / ("memory.limit_in_bytes" if version == 1 else "memory.max")).write_text(
        "9223372036854771712" if version == 1 else "max"
    )
    assert process._cgroup_room_mib(proc, tmp_path) is None, "no limit"


def test_inside_a_real_memory_limit_the_process_sees_the_limit(tmp_path):
    from benchmarks.memcap import MemoryCap

    cap = MemoryCap(1024)
    why = cap.unavailable()
    if why:
        pytest.skip(why)
    target = tmp_path / "available.txt"
    code = "import sys; from runtime.process import available_memory_mib as a; open(sys.argv[1], 'w').write(str(a()))"
    assert cap.run([sys.executable, "-c", code, str(target)])["returncode"] == 0
    assert float(target.read_text()) <= 1024
