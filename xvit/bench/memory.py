"""Peak memory of one phase on the CPU (supplement Table 1's memory column): the kernel's
resident-set high-water mark ``VmHWM``, reset to the current RSS (``/proc/self/clear_refs`` = 5)
after ``malloc_trim`` has returned freed heap to the OS. Exact (no sampling gaps) and per phase."""

from __future__ import annotations

import ctypes
import gc
import resource


def proc_status_kb(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def available_fraction() -> float:
    """``MemAvailable / MemTotal`` from ``/proc/meminfo`` (1.0 where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f}
        return info["MemAvailable"] / info["MemTotal"]
    except (OSError, KeyError, ValueError, IndexError):
        return 1.0


def page_faults() -> int:
    """Minor page faults of this process so far (a first touch of memory the heap got back)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def keep_freed_memory() -> bool:
    """Make glibc keep what is freed: no ``mmap`` for large blocks (each would be unmapped when
    freed and faulted in again when reallocated) and no automatic trim of the heap's top, so a
    repeated step reuses the same resident pages. Only ``trim_heap`` returns memory then. False
    where this is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def trim_heap() -> None:
    """Give freed heap memory back to the OS, so the next phase's peak is its own."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_method(device: str) -> str:
    """How peak memory is measured on ``device`` here, in words (for the report)."""
    if device == "cuda":
        return "torch.cuda.max_memory_allocated in the first pass of each phase"
    if proc_status_kb("VmHWM") is None:
        return "unavailable (no /proc/self/status)"
    if reset_rss_peak():
        return (
            "RSS high-water mark (VmHWM) in the first pass of each phase, reset after malloc_trim, minus RSS "
            "before the model was built"
        )
    return "RSS high-water mark (VmHWM) since process start (cannot reset here: an upper bound)"
