"""Run a command inside a memory limit: a cgroup of its own whose limit is the RAM a target machine has. A peak RSS
counts the pages of mapped weight files, which the kernel drops and reads again under pressure; whether a run
*fits* in N MiB is shown by running it with N MiB and no more (and comparing its speed with an unlimited run).

Needs a writable memory cgroup (cgroup v1's memory controller, or v2 with the memory controller delegated); where
there is none, `MemoryCap.unavailable()` says why and the benchmark records that instead of a result.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


def _own_cgroup(controller: str) -> str | None:
    """This process's cgroup path in the hierarchy of `controller` ("" for cgroup v2's unified one)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if (controller == "" and names == "") or controller in names.split(","):
                return path
    except OSError:
        pass
    return None


class MemoryCap:
    """A fresh cgroup limited to `mib` MiB; `run(cmd)` runs a command in it and reports how it went."""

    def __init__(self, mib: int):
        self.mib = mib
        self.dir: Path | None = None
        self.version = 0
        v1 = _own_cgroup("memory")
        v2 = _own_cgroup("")
        if v1 is not None and (V1 / "memory.limit_in_bytes").exists():
            self.dir, self.version = V1 / v1.lstrip("/") / f"acsdk-{uuid.uuid4().hex[:8]}", 1
        elif v2 is not None and "memory" in _read(V2 / v2.lstrip("/") / "cgroup.subtree_control"):
            self.dir, self.version = V2 / v2.lstrip("/") / f"acsdk-{uuid.uuid4().hex[:8]}", 2

    def unavailable(self) -> str:
        """Why no limit can be set here ("" where it can)."""
        if self.dir is None:
            return "no writable memory cgroup here (cgroup v1 memory controller or a delegated v2 one)"
        try:
            self.dir.mkdir()
            self.dir.rmdir()
        except OSError as exc:
            return f"cannot make a memory cgroup under {self.dir.parent} ({exc.strerror})"
        return ""

    def run(self, cmd: Sequence[str]) -> dict:
        """Run `cmd` limited to the cap: {"returncode", "oom_kills", "max_usage_mib"}. Files the command reads are
        best evicted from the page cache first (`evict`): pages already cached were charged to another cgroup."""
        assert self.dir is not None
        self.dir.mkdir()
        limit = str(self.mib * 1024 * 1024)
        try:
            if self.version == 1:
                (self.dir / "memory.limit_in_bytes").write_text(limit)
                _try_write(self.dir / "memory.memsw.limit_in_bytes", limit)  # no swap beyond it, where swap is
            else:
                (self.dir / "memory.max").write_text(limit)
                _try_write(self.dir / "memory.swap.max", "0")
            procs = self.dir / "cgroup.procs"
            try:
                proc = subprocess.run(list(cmd), preexec_fn=lambda: procs.write_text(str(os.getpid())))
            except subprocess.SubprocessError as exc:  # the child could not join the cgroup
                raise OSError(f"cannot run a process in {self.dir}: {exc}") from exc
            return {"returncode": proc.returncode, "oom_kills": self._oom_kills(), "max_usage_mib": self._max_usage()}
        finally:
            try:
                self.dir.rmdir()
            except OSError:
                pass

    def _oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in _read(self.dir / name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def _max_usage(self) -> int | None:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        text = _read(self.dir / name).strip()
        return round(int(text) / 2**20) if text.isdigit() else None


def evict(paths: Iterable[Path]) -> None:
    """Drop the files' pages from the page cache (posix_fadvise DONTNEED; pages mapped elsewhere stay)."""
    for root in paths:
        for path in [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _try_write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError:
        pass
