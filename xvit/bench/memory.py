"""Peak memory of one phase on the CPU (supplement Table 1's memory column): the kernel's
resident-set high-water mark ``VmHWM``, reset to the current RSS (``/proc/self/clear_refs`` = 5)
after ``malloc_trim`` has returned freed heap to the OS. Exact (no sampling gaps) and per phase."""

from __future__ import annotations

import ctypes
import gc


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
        return "torch.cuda.max_memory_allocated, reset per phase"
    if proc_status_kb("VmHWM") is None:
        return "unavailable (no /proc/self/status)"
    if reset_rss_peak():
        return "RSS high-water mark (VmHWM) reset per phase after malloc_trim, minus RSS before the model was built"
    return "RSS high-water mark (VmHWM) since process start (cannot reset here: an upper bound)"
