"""OpenVINO's compiled-model cache, bounded: a size cap with least-recently-used eviction by entry.

The cache root (`~/.cache/acsdk/openvino/`) holds one folder per entry (the caller names them; acsdk: one per engine
dir and host), each OpenVINO's CACHE_DIR for the engines opened on it. Every rebuild of an engine dir and every
temporary manifest (an INT8 gate's) gives a fresh entry that nothing reuses, so without a bound the root grows by
GBs per real-size build. Beside OpenVINO's blobs an entry holds:

  acsdk-entry.json   what made it (the engine dir's path), written when the entry is created
  .acsdk-used        touched at every use: its mtime is the entry's last use
  .acsdk-lock        flock'ed shared by every process using the entry, for as long as it uses it (`CacheLease`)

Opening an entry (`use`) evicts the least recently used others while the root is over its cap
(ACSDK_OPENVINO_CACHE_MAX_GB, default 20 GiB). An entry is evicted only when an exclusive lock on it can be taken,
that is when no process (this one included: flock locks belong to open files, not processes) holds a lease on it:
OpenVINO writes a blob by path and fails a compile when the folder vanishes under it ("cannot set permissions: No
such file or directory"), so a folder in use is never removed. An evicted entry is renamed to `.evicting-*` under
the lock (a process waiting to use it then makes a fresh one), then deleted. Where flock does not exist (Windows),
only the entries this process holds are protected.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path

from .errors import ACSDKError
from .files import atomic_write, cache_dir

try:
    import fcntl
except ImportError:  # Windows: in-process protection only
    fcntl = None

log = logging.getLogger(__name__)

MAX_GB_ENV = "ACSDK_OPENVINO_CACHE_MAX_GB"
DEFAULT_MAX_GB = 20.0
GIB = 1 << 30
ENTRY_FILE = "acsdk-entry.json"
USED_FILE = ".acsdk-used"
LOCK_FILE = ".acsdk-lock"
EVICTING = ".evicting-"

_held: dict[str, int] = {}  # entry path -> leases this process holds on it
_held_lock = threading.Lock()


class CacheSizeError(ACSDKError, ValueError):
    """A cache size limit that is not a number of GiB >= 0 (from the environment or an argument)."""

    exit_code = 2

    def __init__(self, argument: str, got: str):
        self.argument = argument
        self.expected = "a number of GiB >= 0"
        self.got = got
        super().__init__(f"{argument}: expected {self.expected}, got {got}")


def openvino_cache_root() -> Path:
    """Where the entries live: the `openvino` folder of this user's acsdk cache (runtime.files.cache_dir)."""
    return cache_dir() / "openvino"


def gib_to_bytes(gib: float | str, argument: str) -> int:
    """`gib` GiB in bytes; CacheSizeError naming `argument` unless a finite number >= 0."""
    try:
        value = float(gib)
    except (TypeError, ValueError):
        raise CacheSizeError(argument, repr(gib)) from None
    if not math.isfinite(value) or value < 0:
        raise CacheSizeError(argument, repr(gib))
    return int(value * GIB)


def max_bytes() -> int:
    """The cap: $ACSDK_OPENVINO_CACHE_MAX_GB GiB, else DEFAULT_MAX_GB (0 keeps only the entries in use)."""
    raw = os.environ.get(MAX_GB_ENV, "").strip()
    return gib_to_bytes(raw, MAX_GB_ENV) if raw else int(DEFAULT_MAX_GB * GIB)


@dataclass(frozen=True)
class Entry:
    """One cache entry as listed: its folder, size in bytes, last use (seconds since the epoch) and what made it
    (the engine dir, where recorded)."""

    path: Path
    bytes: int
    last_used: float
    source: str | None

    @property
    def name(self) -> str:
        return self.path.name


class CacheLease:
    """A process's hold on an entry: while it lives (until `close()` or garbage collection) no process evicts the
    entry. Keep it as long as the compiled models may write into the entry."""

    def __init__(self, path: Path, lock_file):
        self.path = path
        self._key = str(path)
        self._closer = weakref.finalize(self, _let_go, self._key, lock_file)

    def close(self) -> None:
        self._closer()


def _let_go(key: str, lock_file) -> None:
    with _held_lock:
        _held[key] -= 1
        if not _held[key]:
            del _held[key]
    if lock_file is not None:
        lock_file.close()  # closing the file drops its flock


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def use(entry: str | os.PathLike, source: str | os.PathLike | None = None, cap: int | None = None) -> CacheLease:
    """Create or reuse `entry` (a folder under the cache root), mark it used now and hold it (the lease); record
    `source` (the engine dir it caches) when the entry is new; then evict the least recently used other entries
    while the root holds more than `cap` bytes (default: `max_bytes()`)."""
    entry = Path(entry)
    cap = max_bytes() if cap is None else cap
    lock_file = None
    for _ in range(20):  # an evictor renamed it away between our mkdir and our lock: make it again
        entry.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            break
        try:
            lock_file = open(entry / LOCK_FILE, "a+b")  # noqa: SIM115 - held by the lease
        except FileNotFoundError:
            continue
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_SH)  # waits only while an evictor renames the entry
        if _same_file(lock_file.fileno(), entry / LOCK_FILE):
            break
        lock_file.close()
        lock_file = None
    with _held_lock:
        _held[str(entry)] = _held.get(str(entry), 0) + 1
    lease = CacheLease(entry, lock_file)
    try:
        (entry / USED_FILE).touch()
        os.utime(entry / USED_FILE)  # touch() leaves an existing file's mtime on some platforms
    except OSError as exc:  # a read-only cache, or a folder deleted by hand: OpenVINO then compiles uncached
        log.warning("OpenVINO cache: could not mark %s used (%s)", entry, exc)
    if source is not None and not (entry / ENTRY_FILE).exists():
        body = {"engine_dir": str(Path(source).resolve()), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            atomic_write(entry / ENTRY_FILE, json.dumps(body, indent=2))
        except OSError as exc:
            log.warning("OpenVINO cache: could not record what %s caches (%s)", entry, exc)
    over = prune(entry.parent, cap)
    if over:
        log.info("OpenVINO cache: evicted %d least recently used entries (cap %.1f GiB)", len(over), cap / GIB)
    return lease


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass  # removed while we walked
    return total


def _last_used(path: Path) -> float:
    for candidate in (path / USED_FILE, path):
        try:
            return candidate.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _source(path: Path) -> str | None:
    try:
        return json.loads((path / ENTRY_FILE).read_text()).get("engine_dir")
    except (OSError, ValueError, AttributeError):
        return None


def entries(root: str | os.PathLike | None = None) -> list[Entry]:
    """The entries under `root` (default: the cache root), least recently used first."""
    root = Path(root) if root is not None else openvino_cache_root()
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except FileNotFoundError:
        return []
    out = [Entry(p, _size(p), _last_used(p), _source(p)) for p in folders]
    return sorted(out, key=lambda e: (e.last_used, e.name))


def in_use(path: Path) -> bool:
    """Whether a lease is held on the entry, by this process or (where flock exists) another."""
    with _held_lock:
        if _held.get(str(path)):
            return True
    if fcntl is None:
        return False
    try:
        with open(path / LOCK_FILE, "a+b") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except OSError:
        return False
    return False


def remove(path: str | os.PathLike) -> bool:
    """Delete an entry unless it is in use (then False): renamed aside under an exclusive lock, then removed."""
    path = Path(path)
    with _held_lock:
        if _held.get(str(path)):
            return False
    aside = path.parent / f"{EVICTING}{path.name}-{uuid.uuid4().hex[:8]}"
    lock_file = None
    try:
        if fcntl is not None:
            lock_file = open(path / LOCK_FILE, "a+b")  # noqa: SIM115 - closed below, after the rename
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if not _same_file(lock_file.fileno(), path / LOCK_FILE):
                return False  # another evictor renamed it away since we opened the lock; `path` is a new entry
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # another process removed it first
    finally:
        if lock_file is not None:
            lock_file.close()
    shutil.rmtree(aside, ignore_errors=True)
    return True


def _clear_leftovers(root: Path) -> None:
    """Remove what an eviction interrupted after its rename left behind (`.evicting-*`)."""
    try:
        for p in root.iterdir():
            if p.name.startswith(EVICTING) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
    except FileNotFoundError:
        pass


def prune(root: str | os.PathLike | None = None, cap: int | None = None) -> list[Entry]:
    """Evict the least recently used entries under `root` until it holds at most `cap` bytes (default: the
    configured cap; 0: every entry not in use). Entries in use are skipped. Returns those removed."""
    root = Path(root) if root is not None else openvino_cache_root()
    cap = max_bytes() if cap is None else cap
    _clear_leftovers(root)
    listed = entries(root)
    total = sum(e.bytes for e in listed)
    removed = []
    for e in listed:
        if total <= cap and cap > 0:  # cap 0 removes empty entries too
            break
        if remove(e.path):
            removed.append(e)
            total -= e.bytes
    if total > cap and cap > 0:
        held, limit = total / GIB, cap / GIB
        log.warning("OpenVINO cache %s holds %.2f GiB, over its cap of %.2f GiB, in entries in use", root, held, limit)
    return removed


def remove_entries_for(source: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Entry]:
    """Remove every entry recorded as made for the engine dir `source` (e.g. by an INT8 gate's temporary manifests
    in a build dir), except those in use. Returns those removed."""
    wanted = str(Path(source).resolve())
    return [e for e in entries(root) if e.source == wanted and remove(e.path)]
