"""Inference: the sampler, the Synthesizer, engine-dir loading, images and masks, features and caches.

Layer contract: imports `acsdk.models`, `acsdk.errors` and `runtime`; never `acsdk.data`, `acsdk.training`,
`acsdk.apps` or `export`.
"""
