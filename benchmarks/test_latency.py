"""pytest-benchmark suites: component calls and whole images per backend (not part of the default tests).

pytest benchmarks/ --benchmark-only                  # tiny config
ACSDK_BENCH_CONFIG=small pytest benchmarks/ --benchmark-only --benchmark-columns=median,iqr
"""

import pytest
import torch

from benchmarks.configs import PAPER
from benchmarks.report import PROMPT, _scene
from export.specs import SPECS

BACKENDS = ["torch", "onnxruntime-cpu"]


@pytest.fixture(scope="module")
def scene(synthesizers):
    size = next(iter(synthesizers.values())).parts.config.height
    return _scene(size)


@pytest.mark.parametrize("component", list(SPECS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_component(benchmark, synthesizers, bench_paths, backend, component):
    from acsdk.models import AnomalyControlModel
    from export.specs import Dims

    synth = synthesizers[backend]
    engine = synth.parts.engines[component]
    model = AnomalyControlModel.from_pretrained(bench_paths[0])
    cfg = synth.parts.config
    inputs = SPECS[component].sample_inputs(Dims.from_configs(model.configs, cfg.height, cfg.width))
    benchmark.group = f"component {component}"
    with torch.no_grad():
        benchmark.pedantic(engine.run, args=(inputs,), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_cached_reference(benchmark, synthesizers, scene, backend):
    synth = synthesizers[backend]
    image, mask, ref, ref_mask = scene
    features = synth.encode_reference(ref, ref_mask, PROMPT)
    settings = {k: v for k, v in PAPER.items() if k != "asea_steps"}
    benchmark.group = "image, paper settings, cached reference"
    result = benchmark.pedantic(
        lambda: synth.run(image, mask, PROMPT, reference=features, **settings), rounds=3, warmup_rounds=1
    )
    assert result.image.size == (image.shape[1], image.shape[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_reference_encoding(benchmark, synthesizers, scene, backend):
    synth = synthesizers[backend]
    _, _, ref, ref_mask = scene

    def encode():
        synth.clear_caches()
        return synth.encode_reference(ref, ref_mask, PROMPT, asea_steps=PAPER["asea_steps"])

    benchmark.group = "reference encoding (CSM + ASEA 5 steps)"
    features = benchmark.pedantic(encode, rounds=5, warmup_rounds=1)
    assert features.asea["r_after"] >= features.asea["r_before"]
