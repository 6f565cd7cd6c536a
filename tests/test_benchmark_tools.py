"""The benchmark's own arithmetic: stats and the per-component ledger behind the overhead fraction."""

import time

from conftest import FAST

from benchmarks.measure import instrument, measure


def test_measure_counts_and_orders_stats():
    calls = []
    stats = measure(lambda: (calls.append(1), time.sleep(0.001)), warmup=2, repeat=5)
    assert len(calls) == 7 and stats.n == 5
    assert stats.min <= stats.p25 <= stats.median <= stats.p75 <= stats.max


def test_ledger_sees_every_engine_call(tiny_ckpt, scene):
    import acsdk

    synth = acsdk.Synthesizer.from_checkpoint(tiny_ckpt)
    ledger = instrument(synth.parts.engines)
    res = synth.run(scene["image"], scene["mask"], "a hole", scene["reference_image"], scene["reference_mask"], **FAST)
    assert len(ledger["unet"]) == res.timings["denoise_steps"]
    assert len(ledger["vae_encoder"]) == 1 and len(ledger["vae_decoder"]) == 1
    assert len(ledger["csm_vision"]) == 1 and len(ledger["csm_qformer"]) == 1 and len(ledger["text_encoder"]) == 1
    in_engines = sum(sum(v) for v in ledger.values())
    assert in_engines > 0 and set(ledger) <= set(synth.parts.engines)


def test_memory_sampler_tells_a_process_own_memory_from_mapped_files(tmp_path):
    """What decides whether a run fits in RAM is its own memory; a mapped weight file's pages count in its RSS but
    the kernel may drop them (issue 25). The sampler must tell the two apart."""
    import mmap
    import os

    import pytest

    from runtime.process import MemorySampler, memory_mib

    if not memory_mib():
        pytest.skip("no /proc/self/status on this OS: nothing to sample")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(64 << 20))
    before = memory_mib()
    with MemorySampler(interval=0.001) as sampler, weights.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        assert sum(mapped[::4096]) >= 0  # read one byte per page: all 64 MiB resident, as file pages
        time.sleep(0.05)
        reading = sampler.reset()
        heap = bytearray(96 << 20)
        heap[::4096] = b"\x01" * len(range(0, len(heap), 4096))  # write one byte per page: 96 MiB of its own
        time.sleep(0.05)
        mapped.close()
    assert reading["file"] - before["file"] >= 48, (before, reading)
    assert reading["anon"] - before["anon"] < 32, (before, reading)
    assert sampler.peak["anon"] - before["anon"] >= 72, (before, sampler.peak)
    del heap


def test_memory_cap_stops_what_does_not_fit():
    """benchmarks.memcap runs a command inside a memory limit and says whether it fitted."""
    import sys

    import pytest

    from benchmarks.memcap import MemoryCap

    cap = MemoryCap(160)
    why = cap.unavailable()
    if why:
        pytest.skip(f"no memory limit can be set here: {why}")
    grow = "b = bytearray({} << 20); b[::4096] = b'\\x01' * len(range(0, len(b), 4096))"
    small = cap.run([sys.executable, "-c", grow.format(32)])
    big = MemoryCap(160).run([sys.executable, "-c", grow.format(400)])
    assert small["returncode"] == 0 and small["oom_kills"] == 0
    assert big["returncode"] != 0 and big["oom_kills"] >= 1
    assert small["max_usage_mib"] is None or small["max_usage_mib"] <= 160
