"""What holding less costs per image: one engine dir, one process, seconds per image for the default Synthesizer
(components held once opened), `low_memory=True` (one component at a time) and runs from a bank, each after a warm-up;
on ONNX Runtime also its CPU allocation arena on and off (runtime.onnxruntime_engine.CPU_MEMORY).

    python -m benchmarks.lowmemory [--config small] [--steps 50] [--repeat 3] [--backend openvino|onnxruntime]

The reference is encoded once and cached, as `acsdk generate` reuses a defect type's reference: low_memory then
reopens the target side's components once per image (its cost here); `--alternate` makes every image encode a new
prompt (the text encoder reopens too).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .configs import PAPER, engines
from .measure import measure
from .report import PROMPT, _scene, environment


def run(config: str, steps: int, repeat: int, backend: str, alternate: bool) -> dict:
    import acsdk
    import runtime.onnxruntime_engine as ort_engine

    engine_dir = engines(config)
    settings = {**PAPER, "num_inference_steps": steps}
    out = {"config": config, "steps": steps, "backend": backend, "environment": environment()}
    prompts = iter(f"{PROMPT}, variant {i}" for i in range(10_000))
    default = ort_engine.CPU_MEMORY["arena"]
    variants = [("default", False, None), ("low_memory", True, None), ("default again", False, None)]
    if backend == "onnxruntime":
        variants += [(f"arena {'off' if default else 'on'}", False, not default), ("default last", False, None)]
    for label, low, arena in variants:
        ort_engine.CPU_MEMORY["arena"] = default if arena is None else arena
        synth = acsdk.Synthesizer(engine_dir, backend=backend, device="cpu", low_memory=low)
        image, mask, ref, ref_mask = _scene(synth.parts.config.height)
        reference = synth.encode_reference(ref, ref_mask, PROMPT)

        def one(synth=synth, image=image, mask=mask, reference=reference):
            prompt = next(prompts) if alternate else PROMPT
            return synth.run(image, mask, prompt, reference=reference, **settings)

        out[label] = measure(one, warmup=1, repeat=repeat).as_dict()
        if label == "default":
            bank = synth.prepare(PROMPT, ref, ref_mask)
            fresh = acsdk.Synthesizer(engine_dir, backend=backend, device="cpu")
            out["bank"] = measure(
                lambda fresh=fresh, image=image, mask=mask, bank=bank: fresh.run(image, mask, bank=bank, **settings),
                warmup=1,
                repeat=repeat,
            ).as_dict()
        logging.info("%s: %.3f s per image", label, out[label]["median"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lowmemory", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="small")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--backend", default="openvino")
    p.add_argument("--alternate", action="store_true", help="a new prompt per image")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(json.dumps(run(args.config, args.steps, args.repeat, args.backend, args.alternate), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
