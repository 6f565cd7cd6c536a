"""Export: checkpoint -> verified engine dir (ONNX / TensorRT), one declarative spec per component.

Layer contract: imports `acsdk.models`, `acsdk.errors` and `runtime` (and, for INT8 calibration and its gate,
`acsdk.inference` and `acsdk.data`); library code never imports export (only `acsdk.apps`, benchmarks and
tests do).
"""
