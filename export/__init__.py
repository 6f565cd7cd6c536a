"""Export: checkpoint -> verified engine dir (ONNX / TensorRT), one declarative spec per component.

Layer contract: imports `acsdk.models`, `acsdk.errors` and `runtime`; library code never imports export (only
`acsdk.apps`, benchmarks and tests do).
"""
