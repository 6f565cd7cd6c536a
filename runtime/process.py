"""Resident memory: this process's peak per stage (what the build records per component and benchmarks report), a
process's own memory apart from its mapped files (MemorySampler), and handing freed heap back to the OS."""

from __future__ import annotations

import resource
import threading
from pathlib import Path


def peak_rss_mb() -> float:
    """The high-water mark of resident memory (VmHWM), in MiB. Unlike ru_maxrss it belongs to this address space
    only (ru_maxrss is inherited across fork+exec) and can be reset (`reset_peak_rss`)."""
    peak = memory_mib().get("hwm")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
    """Start a new high-water mark (Linux: `5` to /proc/self/clear_refs); False where the OS cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def return_freed_memory() -> None:
    """Hand memory freed inside the C heap back to the OS (glibc's malloc_trim), so that a released engine lowers
    the resident size and not only the heap's free lists; nothing where the C library has no malloc_trim."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def memory_mib(pid: int | str = "self") -> dict[str, float]:
    """A process's resident memory now, in MiB: `rss` (all of it), `anon` (its own heap and buffers, which must fit
    in RAM), `file` (pages of mapped files, e.g. OpenVINO's mmapped weights, which the kernel may drop and read
    again) and `hwm` (the high-water mark of `rss`). Empty where /proc is not there."""
    keys = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "hwm"}
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in keys:
                    out[keys[key]] = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return out


class MemorySampler:
    """The peaks of `memory_mib(pid)` while it runs, read every `interval` seconds on a thread: the kernel keeps a
    high-water mark of all resident memory only (VmHWM), which counts a mapped weight file's pages alike with
    the heap. A spike shorter than the interval can be missed; the allocations measured here last seconds."""

    def __init__(self, pid: int | str = "self", interval: float = 0.005):
        self.pid, self.interval = pid, interval
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            now = memory_mib(self.pid)
            for k, v in now.items():
                self.peak[k] = max(self.peak.get(k, 0.0), v)
            if not now or self._stop.wait(self.interval):
                return

    def reset(self) -> dict[str, float]:
        """The peaks so far, then start new ones."""
        peak, self.peak = self.peak, {}
        return peak

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def available_memory_mib() -> float | None:
    """Memory this process can still take, in MiB: the host's MemAvailable, or less where a cgroup (a container, a
    systemd slice, `benchmarks.memcap`) limits this process to less; None where neither can be read."""
    found: list[float] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) / 1024.0)
    except OSError:
        pass
    room = _cgroup_room_mib()
    if room is not None:
        found.append(room)
    return min(found) if found else None


def _cgroup_room_mib(proc: Path = Path("/proc/self/cgroup"), sys_fs: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The limit of this process's memory cgroup less what the cgroup uses now (v2 or v1); None without a limit."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            base, limit_file, usage_file = sys_fs / path.lstrip("/"), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base = sys_fs / "memory" / path.lstrip("/")
            limit_file, usage_file = "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        try:
            limit = (base / limit_file).read_text().strip()
            usage = int((base / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 1 << 60:  # no limit (v1 writes a huge number for none)
            continue
        return (int(limit) - usage + _reclaimable(base / "memory.stat")) / 2**20
    return None


def _reclaimable(stat: Path) -> int:
    """Bytes of page cache the cgroup's usage counts that the kernel drops before it runs out (inactive file pages):
    a cgroup that has read its engine files is not that much closer to its limit."""
    try:
        for line in stat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file"):
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
