"""ONNX Runtime backend: explicit providers, checked after session creation, IO binding of torch tensors on CUDA."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .dtypes import NUMPY_DTYPES, TORCH_DTYPES
from .engine import Engine
from .errors import BackendUnavailableError, EngineRunError

log = logging.getLogger(__name__)


def providers_for(device: torch.device) -> list:
    """CPU: the CPU provider. CUDA: the CUDA provider on that device's index, running on torch's current stream of
    that device (so ONNX Runtime's kernels queue behind torch's and no host synchronisation is needed), then CPU."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    index = torch.cuda.current_device() if device.index is None else device.index
    stream = torch.cuda.current_stream(torch.device("cuda", index)).cuda_stream
    options = {"device_id": str(index), "has_user_compute_stream": "1", "user_compute_stream": str(stream)}
    return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]


# ONNX Runtime's CPU memory options, measured (benchmarks.realsize, benchmarks.lowmemory; docs/real-size.md): its
# allocation arena keeps every activation buffer it ever grew (SD-1.5 UNet then VAE decode at 512 px: peak 13.2 GB,
# without it 7.3 GB) but without it a 256-px image is 38 % slower, so it stays on unless an engine is opened with
# arena=False (Synthesizer(low_memory=True)); pre-packed weight copies cost 1 GB at load, not the peak: kept.
CPU_MEMORY = {"arena": True, "prepacking": True}


def check_providers(name: str, device: torch.device, names: Sequence[str] | None = None) -> list[str]:
    """The providers `device` needs (or `names`); BackendUnavailableError, saying what to install, where this ONNX
    Runtime lacks one (a check before any session opens)."""
    import onnxruntime as ort

    names = names or (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    )
    missing = [p for p in names if p not in ort.get_available_providers()]
    if missing:
        raise BackendUnavailableError(
            f"{name}: ONNX Runtime here has no {', '.join(missing)} "
            f"(it has {', '.join(ort.get_available_providers())}); "
            "install onnxruntime-gpu (`pip install acsdk[gpu]`, never beside onnxruntime) or use device='cpu'"
        )
    return list(names)


class OrtEngine(Engine):
    """One ONNX file on one InferenceSession. `session.run` is thread-safe; bindings are made per call.

    On CUDA, inputs and outputs are torch tensors bound by address on the session's device, ONNX Runtime runs on
    torch's stream and is told not to synchronise the host after each run: the next torch kernel simply queues
    behind it.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        name: str,
        path: Path,
        inputs: Sequence[Mapping],
        outputs: Sequence[Mapping],
        device: torch.device,
        providers: Sequence | None = None,
        threads: int | None = None,
        arena: bool | None = None,
    ):
        import onnxruntime as ort

        self.name = name
        self.path = path
        self.device = device
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.input_names = tuple(i["name"] for i in inputs)
        self.output_names = tuple(o["name"] for o in outputs)
        names = [p[0] if isinstance(p, tuple) else p for p in providers] if providers else None
        names = check_providers(name, device, names)
        if device.type == "cuda" and device.index is None:
            device = self.device = torch.device("cuda", torch.cuda.current_device())
        requested = list(providers or providers_for(device))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # ORT's pool threads spin after each run by default; between engine calls torch runs the scheduler and
        # ASEA on the same cores, and spinning threads starve it (measured: ASEA 2.4x slower beside them).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if device.type == "cpu":
            opts.enable_cpu_mem_arena = CPU_MEMORY["arena"] if arena is None else arena
            opts.add_session_config_entry("session.disable_prepacking", "0" if CPU_MEMORY["prepacking"] else "1")
        if threads is None and device.type == "cpu":
            threads = torch.get_num_threads()  # ORT would take every core; torch's count is the process's share
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(os.fspath(path), opts, providers=requested)
        except Exception as exc:  # ONNX Runtime's own pybind errors: typed and one line, so `auto` falls back
            raise BackendUnavailableError(f"{name}: ONNX Runtime cannot load '{path}': {_brief(exc)}") from exc
        self.providers = self.session.get_providers()
        if self.providers[0] != names[0]:
            # ORT falls back to the next provider silently; a factory line must not run on CPU by accident.
            raise BackendUnavailableError(
                f"{name}: ONNX Runtime asked for {names[0]} but runs on {self.providers[0]}; check the CUDA/cuDNN "
                "installation that onnxruntime-gpu needs"
            )
        self._cuda = self.providers[0] == "CUDAExecutionProvider"
        self._run_options = ort.RunOptions()
        if self._cuda:
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def _output_shape(self, spec: Mapping, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == "batch" else int(d) for d in spec["shape"])

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = next(iter(inputs[n] for n in self.input_names)).shape[0]
        if self._cuda:
            return self._run_bound(inputs, batch)
        feeds = {}
        for spec in self.inputs:
            t = inputs[spec["name"]]
            feeds[spec["name"]] = t.detach().to("cpu", TORCH_DTYPES[spec["dtype"]]).contiguous().numpy()
        try:
            outs = self.session.run(list(self.output_names), feeds)
        except Exception as exc:
            raise EngineRunError(f"{self.name}: ONNX Runtime failed to run it: {_brief(exc)}") from exc
        return {n: torch.from_numpy(o) for n, o in zip(self.output_names, outs, strict=True)}

    def _run_bound(self, inputs: Mapping[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
        """Bind torch CUDA memory directly: no host round trip, no host synchronisation, outputs made by torch."""
        binding = self.session.io_binding()
        dev_id = self.device.index
        keep = []
        for spec in self.inputs:
            t = inputs[spec["name"]].detach().to(self.device, TORCH_DTYPES[spec["dtype"]]).contiguous()
            keep.append(t)
            binding.bind_input(spec["name"], "cuda", dev_id, NUMPY_DTYPES[spec["dtype"]], tuple(t.shape), t.data_ptr())
        outs = {}
        for spec in self.outputs:
            o = torch.empty(self._output_shape(spec, batch), dtype=TORCH_DTYPES[spec["dtype"]], device=self.device)
            binding.bind_output(spec["name"], "cuda", dev_id, NUMPY_DTYPES[spec["dtype"]], tuple(o.shape), o.data_ptr())
            outs[spec["name"]] = o
        try:
            self.session.run_with_iobinding(binding, self._run_options)
        except Exception as exc:
            raise EngineRunError(f"{self.name}: ONNX Runtime failed to run it: {_brief(exc)}") from exc
        return outs


def _brief(exc: BaseException) -> str:
    """ONNX Runtime's message on one line, without its "[ONNXRuntimeError] : 1 : FAIL :" prefix."""
    text = " ".join(str(exc).split())
    return text.split(" : ", 3)[-1] if text.startswith("[ONNXRuntimeError]") else text
