"""ONNX export of one component spec with torch's dynamo exporter, and the fp16 conversion."""

from __future__ import annotations

import ast
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from torch import nn

from .errors import BuildError
from .specs import BATCH, ComponentSpec, Dims

log = logging.getLogger(__name__)

# Protobuf caps a single file at 2 GiB; above this much weight we write external data.
EXTERNAL_DATA_THRESHOLD = 1 << 30


@contextmanager
def export_context() -> Iterator[None]:
    """Export-time settings, undone on exit; the models themselves are never modified.

    The exporter warns about every torchvision op it cannot register (torchvision is not a dependency)
    and about dynamo internals; those warnings say nothing about our graphs.
    """
    quiet = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration", "torch._dynamo")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)


def weight_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def export_onnx(spec: ComponentSpec, module: nn.Module, dims: Dims, max_batch: int, path: Path, opset: int) -> Path:
    """Trace `module` at a batch of 2 (torch.export specialises size-1 dims) with a dynamic batch axis."""
    lo, _, hi = spec.batch_range(max_batch)
    trace_batch = 2
    batch = torch.export.Dim(BATCH, min=lo, max=max(hi, trace_batch))
    sample = spec.sample_inputs(dims, batch=trace_batch)
    dynamic = {t.name: ({0: batch} if t.shape and t.shape[0] == BATCH else None) for t in spec.inputs}
    with export_context():
        program = torch.onnx.export(
            module.eval(),
            (),
            kwargs=sample,
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=dynamic,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            optimize=True,
            verbose=False,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=weight_bytes(module) > EXTERNAL_DATA_THRESHOLD)
    onnx.checker.check_model(str(path), full_check=True)  # by path: works above 2 GiB
    return path


def convert_fp16(src: Path, dst: Path, fp32_scopes: tuple[str, ...] = ()) -> Path:
    """fp16 weights and activations with fp32 IO (the runtime feeds every engine fp32 / int64).

    Nodes exported from a module under one of `fp32_scopes` (the exporter records each node's module path)
    stay fp32, with casts around them. The converter gets the file path, not a loaded model, so its shape
    inference also runs on graphs above protobuf's 2 GiB limit.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    large = sum(f.stat().st_size for f in artifact_files(src)) > EXTERNAL_DATA_THRESHOLD
    blocked = nodes_in_scopes(onnx.load(str(src), load_external_data=False), fp32_scopes)
    half = convert_float_to_float16(str(src), keep_io_types=True, node_block_list=blocked)
    _topological_sort(half.graph)  # the converter appends its input casts at the end of the graph
    # Its intermediate type annotations still say float32 where tensors became float16; stricter parsers than
    # ORT's (and onnx's full check) refuse that. They are optional: drop them, consumers infer their own.
    del half.graph.value_info[:]
    if large:
        onnx.save_model(
            half, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=dst.name + ".data"
        )
    else:
        onnx.save_model(half, str(dst))
    onnx.checker.check_model(str(dst), full_check=True)
    return dst


SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def nodes_in_scopes(model: onnx.ModelProto, scopes: tuple[str, ...]) -> list[str]:
    """Names of the nodes torch exported from a module under one of `scopes` (e.g. "unet.time_proj")."""
    if not scopes:
        return []
    out = []
    for node in model.graph.node:
        meta = next((p.value for p in node.metadata_props if p.key == SCOPES_KEY), "[]")
        path = ast.literal_eval(meta)  # the module path, e.g. ['', 'unet', 'unet.time_proj', 'sin']
        if any(p == scope or str(p).startswith(scope + ".") for p in path for scope in scopes):
            out.append(node.name)
    return out


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so every input is produced before it is used (onnx.checker requires it)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise BuildError(f"graph has a cycle or an undefined input near node '{rest[0].name}'")
        pending = rest
    graph.ClearField("node")
    graph.node.extend(ordered)


def artifact_files(path: Path) -> list[Path]:
    """The .onnx file and its external-data files, if any."""
    model = onnx.load(str(path), load_external_data=False)
    extra = {
        e.value
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for e in t.external_data
        if e.key == "location"
    }
    return [path, *(path.parent / x for x in sorted(extra))]
