"""The engine-dir manifest: its schema, how it is written, and the checks made before a file is used.

engines/
  manifest.json      schema_version, versions, source checkpoint digest, settings, model geometry,
                     components (IO, profile, artifacts with sha256, verification), files (sha256)
  onnx/ plans/       component artifacts
  tokenizer/ qformer_tokenizer/ scheduler/ acsdk.json torch/    what the runtime needs beside them
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from .errors import EngineDirError, IntegrityError
from .files import atomic_write, confined, is_temporary, sha256_file

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
CACHE_PREFIX = "cache/"  # what backends compile at run time (OpenVINO's model cache); not part of the engine dir
# A file whose mtime or ctime lies this close to its check is re-hashed at its next use: timestamps are kept at the
# kernel's clock tick (milliseconds), so a rewrite within one tick of the check could leave them unchanged (git's
# "racily clean" entries).
RACY_NS = 2_000_000_000


def manifest_sha256(root: str | os.PathLike) -> str:
    """sha256 of an engine dir's manifest, which holds the sha256 of every engine file: the dir's identity."""
    return sha256_file(Path(root) / MANIFEST_NAME)


def write_manifest(root: Path, data: dict[str, Any]) -> Path:
    """Write manifest.json atomically; `data` must not carry its own schema_version."""
    body = {"schema_version": SCHEMA_VERSION, **data}
    return atomic_write(root / MANIFEST_NAME, json.dumps(body, indent=2, sort_keys=False))


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced (device, inode) or rewritten (size, mtime, ctime; ctime cannot be set
    back by a user)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Manifest:
    """A loaded manifest. `path(rel)` returns a file only after its sha256 matched.

    Backends open a file by path, and lazily loaded components (`low_memory`: per image) open it again after a
    release, so every `path()` call checks, not only the first: the file is hashed at its first use, and its
    identity (device, inode, size, mtime, ctime) recorded; a later call re-hashes only when that identity changed
    (the file was replaced or written since) or was taken within `RACY_NS` of the file's last change. Hashing GBs
    per image is avoided, and a file swapped or edited on disk after the check is refused (IntegrityError) at its
    next use. Not covered: a change between this check and the backend's own open, and a write into a file while a
    backend holds it memory-mapped (OpenVINO maps weights)."""

    REQUIRED = ("acsdk_version", "components", "files", "settings", "model")

    def __init__(self, root: Path, data: dict[str, Any]):
        self.root = root
        self.data = data
        self._verified: dict[str, tuple[int, ...]] = {}  # rel -> the file's identity when its sha256 matched
        self._lock = threading.Lock()

    @classmethod
    def load(cls, root: str | os.PathLike) -> Manifest:
        root = Path(root)
        if not root.is_dir():
            raise EngineDirError(f"engine dir '{root}' does not exist; build one with `python -m export.build`")
        file = root / MANIFEST_NAME
        if not file.is_file():
            raise EngineDirError(f"'{root}' has no {MANIFEST_NAME}: not an engine dir, or its build did not finish")
        try:
            data = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EngineDirError(f"{file} is not readable JSON ({exc})") from exc
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise EngineDirError(
                f"{file} has schema_version {version!r}; this acsdk reads {SCHEMA_VERSION}. "
                "Rebuild the engine dir with this version's `python -m export.build`."
            )
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise EngineDirError(f"{file} lacks {missing}; rebuild the engine dir")
        listed = list(data["files"]) + [
            rel
            for entry in data["components"].values()
            for art in entry.get("artifacts", [])
            for rel in [art["file"], *art.get("data_files", [])]
        ]
        escaping = [rel for rel in listed if confined(root, rel) is None]
        if escaping:
            raise EngineDirError(
                f"{file} names paths outside the engine dir ({escaping[:3]}): every path must be relative, without "
                "'..'; refusing to open it"
            )
        return cls(root, data)

    @property
    def components(self) -> dict[str, Any]:
        return self.data["components"]

    def path(self, rel: str, verify: bool = True) -> Path:
        """The absolute path of a manifest-listed file, its sha256 checked when `verify`."""
        expected = self.data["files"].get(rel)
        if expected is None:
            raise EngineDirError(f"'{rel}' is not listed in {self.root / MANIFEST_NAME}")
        full = confined(self.root, rel)
        if full is None:
            raise EngineDirError(f"'{rel}' leads outside the engine dir {self.root}; refusing to open it")
        if not full.is_file():
            raise EngineDirError(f"engine file '{rel}' is missing from {self.root}; rebuild the engine dir")
        if verify:
            with self._lock:
                st = full.stat()
                if self._verified.get(rel) != _identity(st):
                    self._verified.pop(rel, None)
                    actual = sha256_file(full)
                    if actual != expected:
                        raise IntegrityError(
                            f"engine file '{rel}' has sha256 {actual[:12]}..., the manifest recorded "
                            f"{expected[:12]}...: the file was changed or corrupted; rebuild the engine dir"
                        )
                    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
                        self._verified[rel] = _identity(st)  # taken before hashing: a write since changes it
        return full


def list_files(root: Path) -> dict[str, str]:
    """sha256 of every file below `root` except the manifest, keyed by POSIX relative path."""
    out = {}
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if rel != MANIFEST_NAME and not is_temporary(file) and not rel.startswith(CACHE_PREFIX):
            out[rel] = sha256_file(file)
    return out
