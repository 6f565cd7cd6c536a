"""Where acsdk keeps what it builds for the user (the demo checkpoint, later demo engines)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$ACSDK_CACHE, else $XDG_CACHE_HOME/acsdk, else ~/.cache/acsdk."""
    if os.environ.get("ACSDK_CACHE"):
        return Path(os.environ["ACSDK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "acsdk"
