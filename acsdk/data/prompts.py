"""Sentences for images: a template per (category, defect), overridable per file by a captions JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError

DEFAULT_TEMPLATE = "a photo of a {category} with a {defect}"


class PromptSource:
    def __init__(self, template: str = DEFAULT_TEMPLATE, captions: str | os.PathLike | None = None):
        self.template = template
        self.captions: dict[str, str] = {}
        if captions is not None:
            path = Path(captions)
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError("captions", "a JSON file mapping image file -> sentence", f"'{path}' ({exc})") from exc
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise InputError("captions", "a JSON object of file -> sentence", f"'{path}' of another shape")
            self.captions = data

    def __call__(self, category: str, defect: str, file: Path | None = None) -> str:
        """Caption by the longest matching path suffix (root-relative path ... file name), else the template."""
        if file is not None:
            for start in range(len(file.parts)):
                key = "/".join(file.parts[start:])
                if key in self.captions:
                    return self.captions[key]
        return self.template.format(category=category.replace("_", " "), defect=defect.replace("_", " "))
