"""Where a command's time goes: when it started, and a clock of named phases.

``xvit predict`` reports its whole time from the start of its process, split into phases
(imports, checkpoint load, waiting for decoding, model forward, output). The phases are timed
on the thread that runs the command, one after another, so they never overlap and their sum is
at most the whole; what is left is ``other``.

The command's start: run as a program (``xvit ...``, ``python -m xvit ...``), it is the start of
the process, which Linux records in ``/proc/self/stat`` (field 22, ``starttime``, in clock ticks
of ``SC_CLK_TCK``, 1/100 s, since boot): the process's age is ``CLOCK_BOOTTIME`` now minus that,
so the interpreter's start-up and every import are inside it (resolution 10 ms). Without
``/proc`` (not Linux) the start is when this module was imported, the first thing the command
line does, which misses only the interpreter's own start-up. Called from Python
(``xvit.cli.main([...])``), the command starts when ``main`` is called. This module imports
neither torch nor anything else heavy: ``xvit.cli`` imports it before any command.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

_IMPORTED = time.perf_counter()
_command_start: float | None = None  # perf_counter() time the running command started
_start_method = "import"  # how it is known: process (/proc), import (this module's import), call (main([...]))


def process_age() -> float | None:
    """Seconds since this process started (``/proc/self/stat``), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22; the name (field 2) may hold spaces
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def mark_command_start(whole_process: bool) -> None:
    """Set the running command's start: the process's start (``whole_process``) or now."""
    global _command_start, _start_method
    now = time.perf_counter()
    age = process_age() if whole_process else None
    if not whole_process:
        _command_start, _start_method = now, "call"
    elif age is not None:
        _command_start, _start_method = now - age, "process"
    else:
        _command_start, _start_method = _IMPORTED, "import"


def start_method() -> str:
    """How the command's start is known: ``process`` (``/proc/self/stat``), ``import`` (this module's
    import: no ``/proc``, or no ``mark_command_start``) or ``call`` (``xvit.cli.main`` called from Python)."""
    return _start_method


def command_start() -> float:
    """``perf_counter()`` time the running command started (``mark_command_start``; else this module's import)."""
    return _IMPORTED if _command_start is None else _command_start


class PhaseClock:
    """Seconds per named phase of one command, from ``start`` (default: the command's start)."""

    def __init__(self, start: float | None = None) -> None:
        self.start = command_start() if start is None else start
        self.seconds: dict[str, float] = {}

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as (part of) phase ``name``."""
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - tick)

    def breakdown(self, names: tuple[str, ...]) -> dict[str, float]:
        """``{name}_seconds`` for each of ``names``, ``other_seconds`` (the rest) and ``command_seconds``."""
        whole = self.elapsed()
        parts = {f"{name}_seconds": self.seconds.get(name, 0.0) for name in names}
        return {**parts, "other_seconds": max(0.0, whole - sum(parts.values())), "command_seconds": whole}
