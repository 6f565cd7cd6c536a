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
