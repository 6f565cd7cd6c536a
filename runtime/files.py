"""Files nobody can half-write: the one atomic-write mechanism every writer in acsdk uses, sha256, confined paths.

A file is written to a temporary name in its destination's directory, flushed and fsynced, renamed over the
destination, and the directory is fsynced, so after a crash the destination holds either the old bytes or the
new ones. A directory is built beside its destination and swapped in the same way (`atomic_dir`). Either ends with
the mode a plain open()/mkdir() would give (umask applied; a replaced file keeps its mode), so what one account
writes another can read where the umask allows; inside a directory, modes set on purpose are kept (`atomic_dir`).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (changing it races other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _plain_mode(dest: Path, directory: bool) -> int:
    """The mode a plain open()/mkdir() would leave at `dest`: an existing file's own mode, else 0666 (0777 for a
    directory) less the umask. mkstemp/mkdtemp create 0600/0700 whatever the umask, and a rename keeps that."""
    try:
        return dest.stat().st_mode & 0o7777
    except OSError:
        return (0o777 if directory else 0o666) & ~current_umask()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `dest` for any writer (PIL, safetensors, json...); on success the file is
    fsynced and renamed over `dest`, on failure it is removed and `dest` is untouched."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, _plain_mode(dest, directory=False))
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def atomic_write(dest: str | os.PathLike, data: bytes | str) -> Path:
    """Write bytes (or UTF-8 text) to `dest` atomically; return `dest`."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(dest) as tmp:
        tmp.write_bytes(payload)
    return Path(dest)


def is_temporary(path: Path) -> bool:
    """Whether `path` is a leftover of an interrupted atomic write (safe to delete)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    rename = getattr(_libc(), "renameat2", None)
    if rename is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return rename(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def replace_dir(new: Path, dest: Path) -> None:
    """Put directory `new` at `dest`; the old content is deleted only once the new one is in place.

    Where the OS can swap two paths atomically (Linux) `dest` never stops holding a complete directory. Elsewhere
    the old one is renamed aside, the new one renamed in (the old one is put back if that fails), then the old
    one removed; a crash between those two renames leaves the old one at `.<name>.old-*/<name>` beside `dest`.
    """
    if not dest.exists():
        os.replace(new, dest)
        fsync_dir(dest.parent)
        return
    if _exchange(new, dest):
        fsync_dir(dest.parent)
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old content
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.replace(dest, aside / dest.name)
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(aside / dest.name, dest)
        aside.rmdir()
        raise
    fsync_dir(dest.parent)
    shutil.rmtree(aside, ignore_errors=True)


def _widened(mode: int, umask: int) -> int:
    """An owner-only mode as a plain open()/mkdir() would have left it: the owner's bits given to the group and
    others too, less the umask (0600 -> 0666 & ~umask, 0700 -> 0777 & ~umask); set-id and sticky bits kept."""
    owner = mode & 0o700
    return (mode & 0o7000) | ((owner | owner >> 3 | owner >> 6) & ~umask)


@contextmanager
def atomic_dir(dest: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside `dest`; on success every file in it is fsynced, the modes below
    are settled, and it becomes `dest` (swapped in with `replace_dir` when `replace`); on failure it is removed and
    `dest` is untouched. The directory itself gets the mode a plain mkdir() would (an existing `dest`'s own).

    Modes inside: an entry whose mode gives its group and others nothing (owner-only: 0600, 0700, 0400) is taken
    for a writer's private temporary mode, which mkstemp/mkdtemp and savers such as ONNX's external-data writer
    leave whatever the umask (an engine dir another account could not read), and widened to what a plain
    open()/mkdir() would give: the owner's bits for everyone, less the umask (0600 -> 0666 & ~umask; an owner-only
    executable or directory, 0700 -> 0777 & ~umask). Every other mode was set on purpose (a plain open() under the
    umask, a chmod +x, a copy from the old `dest`) and is kept, and so is an owner-only mode that the same path
    already has in the old `dest` (a file copied from a private dir stays private). Symlinks are left alone."""
    dest = Path(dest)
    if dest.exists() and not replace:
        raise FileExistsError(f"{dest} exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{_owner()}~", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        umask = current_umask()
        for path in tmp.rglob("*"):
            if path.is_symlink():
                continue
            if path.is_file():
                _fsync_file(path)
            mode = path.stat().st_mode & 0o7777
            if mode & 0o077 or _old_mode(dest / path.relative_to(tmp)) == mode:
                continue
            os.chmod(path, _widened(mode, umask))
        os.chmod(tmp, _plain_mode(dest, directory=True))
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _owner() -> str:
    """This process as a temporary directory names it: host and pid (a shared folder may serve several hosts)."""
    return f"{socket.gethostname()}~{os.getpid()}"


def _remove_abandoned(dest: Path) -> None:
    """Delete the temporary directories a killed writer of `dest` on this host left beside it (a real-size engine
    dir's is ~10 GB, hidden): those whose process is gone. Another host's, and a live process's, are left alone."""
    host = socket.gethostname()
    for tmp in dest.parent.glob(f".{glob.escape(dest.name)}.*~*~*.tmp"):
        owner = tmp.name[len(dest.name) + 2 : -len(".tmp")].split("~")
        if len(owner) != 3 or owner[0] != host or not owner[1].isdigit() or _alive(int(owner[1])):
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _old_mode(path: Path) -> int | None:
    """The permission bits `path` has (the old content of a directory being replaced), None where it has none."""
    try:
        return path.lstat().st_mode & 0o7777
    except OSError:
        return None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def confined(root: Path, rel: str) -> Path | None:
    """`root / rel` when `rel` is a relative path that stays inside `root` (no `..`, no absolute path, no link
    leading out), else None."""
    if not rel or "\\" in rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        return None
    full = root / rel
    try:
        full.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return full


def cache_dir() -> Path:
    """Where acsdk keeps what it builds for the user (demo engines, OpenVINO's compiled models, benchmark models):
    $ACSDK_CACHE, else $XDG_CACHE_HOME/acsdk, else ~/.cache/acsdk."""
    if os.environ.get("ACSDK_CACHE"):
        return Path(os.environ["ACSDK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "acsdk"
