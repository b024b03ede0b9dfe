"""Kill points for the crash-consistency test: run ``xvit train`` in a child process that
SIGKILLs itself at the N-th *event* of its run, an event being the start or the end of one of the
steps a run takes to train and to commit a checkpoint, or the moment a file has been half
written (the file is cut to half its size first, as a kill in the middle of a write leaves it).

The production code has no test switch: this module wraps, in the child process only, the
module-level functions that ``xvit.engine.train.loop`` and ``xvit.engine.snapshot`` /
``xvit.engine.checkpoint`` call by name. Events, in the order a step takes them:

- ``_optimizer_step`` (before / after): a kill between two checkpoints;
- ``snapshot._write_model``, ``snapshot._write_state`` (before / half-written / after);
- ``snapshot._publish``, ``_link_last``, ``_set_latest``, ``_prune`` (before / after);
- ``checkpoint.atomic_write`` (best.safetensors; before / half-written / after).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

EVENTS: list[str] = []  # what happened so far in this process, for the log


def _kill(where: str) -> None:
    print(f"killpoints: SIGKILL at event {len(EVENTS)} ({where})", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def install(kill_at: int) -> None:
    """Make this process SIGKILL itself at event number ``kill_at`` (1-based)."""
    from xvit.engine import checkpoint, snapshot
    from xvit.engine.train import loop

    def event(name: str, path: str | os.PathLike | None = None) -> None:
        EVENTS.append(name)
        if len(EVENTS) == kill_at:
            if path is not None and Path(path).is_file():  # a write interrupted half-way
                os.truncate(path, Path(path).stat().st_size // 2)
            _kill(name)

    def wrap(module, name: str, *, writes: bool = False) -> None:
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            event(f"before {name}")
            out = real(*args, **kwargs)
            event(f"after {name}")
            return out

        def wrapped_writer(path, *args, **kwargs):
            event(f"before {name}")
            if name == "atomic_write":  # atomic_write(path, write): the half-written file is the temporary one
                write = args[0]
                out = real(path, lambda tmp: (write(tmp), event(f"half-written {name}", tmp))[0])
            else:
                out = real(path, *args, **kwargs)
                event(f"half-written {name}", path)  # written, not yet renamed into place: cut it
            event(f"after {name}")
            return out

        setattr(module, name, wrapped_writer if writes else wrapped)

    wrap(loop, "_optimizer_step")
    wrap(snapshot, "_write_model", writes=True)
    wrap(snapshot, "_write_state", writes=True)
    for name in ("_publish", "_link_last", "_set_latest", "_prune"):
        wrap(snapshot, name)
    wrap(checkpoint, "atomic_write", writes=True)


def run_train(argv: list[str], kill_at: int | None, log_path: str) -> None:
    """Child process body: ``xvit train argv`` with its output in ``log_path``; exits with its status."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    if kill_at is not None:
        install(kill_at)
    from xvit.cli import main

    rc = main(["train", *argv])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
