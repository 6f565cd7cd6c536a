"""Packaging promises: the lowest versions CI tests are the lower bounds pyproject.toml states."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_tests_exactly_the_stated_lower_bounds():
    bounds = dict(re.findall(r'^\s+"([\w\-]+)>=([\w.]+)",', (ROOT / "pyproject.toml").read_text(), re.M))
    pins = dict(line.split("==") for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines() if "==" in line)
    assert pins, ".ci/lowest.txt pins nothing"
    for name, version in pins.items():
        assert bounds.get(name) in (version, ".".join(version.split(".")[:2])), (name, version, bounds.get(name))
    assert {"transformers", "diffusers"} <= set(pins)
