"""Checkpoint -> verified engine dir (ONNX / TensorRT). The component specs and the builder live here."""
