"""Apps: the `acsdk` command and the demo. The top layer: may import every other layer and `export`."""
