"""This process's resident memory: the peak per stage (what the build records per component and benchmarks
report), and handing freed heap back to the OS."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """The high-water mark of resident memory (VmHWM), in MiB. Unlike ru_maxrss it belongs to this address space
    only (ru_maxrss is inherited across fork+exec) and can be reset (`reset_peak_rss`)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
