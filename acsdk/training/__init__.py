"""Training: the SGA adapter trainer (the paper's recipe) and the demo-model trainer (from scratch).

Layer contract: imports `acsdk.data`, `acsdk.inference`, `acsdk.models`, `acsdk.errors` and `runtime`; never
`acsdk.apps` or `export`. Entry points: `python -m acsdk.train`, `python -m acsdk.train_base`.
"""
