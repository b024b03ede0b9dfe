"""A training checkpoint as one unit: the weights and the training state of one step, committed
atomically, so that a run killed at any moment (``kill -9`` included, inside a save included)
resumes from its newest complete checkpoint.

A run's ``checkpoints/`` folder::

    step_000000012/        one complete checkpoint (a directory exists under this name only when complete)
      model.safetensors    weights + CheckpointMeta (what eval / predict / xvit.load_model read)
      state.pt             optimizer, schedule, scaler, RNG states of every rank, position, skip ledger
    latest                 the name of the newest complete step directory (one line)
    last.safetensors       a hard link to latest's model.safetensors (a copy where links are unsupported)
    best.safetensors       best val top-1 (written by the trainer, atomically)

``commit`` writes a checkpoint in this order, each part durable (fsynced, the directory too)
before the next begins:

1. ``model.safetensors`` and ``state.pt`` into a temporary directory ``.step_000000012.tmp-<pid>``;
2. that directory renamed to ``step_000000012`` (a rename is atomic: the checkpoint now exists);
3. ``last.safetensors`` re-pointed to its weights (a link under a temporary name, renamed over);
4. ``latest`` rewritten (a temporary file, renamed over);
5. the older step directories deleted.

Until 2 is done the previous checkpoint is untouched, after it the new one is complete, so a kill
at any moment leaves at least one. ``remove_leftovers`` (at the start of a run) deletes what
interrupted saves left (temporary files and directories). ``newest`` is what resume reads: the
complete step directory with the highest step (``latest`` is not trusted on its own: a kill
between 2 and 4 leaves it one step behind). Files get the permissions of the process's umask.

A save that fails (a full disk, a permission, an I/O error) raises ``SaveError``, a one-line
``UserError`` naming the path, the error and the free space: the temporary directory is removed
first, so the previous checkpoint and the folder are as they were (after 2, the new checkpoint
is complete and the message says so). The run stops there rather than retrying: a full disk or a
read-only folder stays so, and a retry would only repeat the write.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from xvit.errors import UserError

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
LATEST = "latest"
LAST_WEIGHTS = "last.safetensors"
_STEP_RE = re.compile(r"^step_(\d{9})(?:_(\d+))?$")


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() gives a new file (some writers create theirs 0600)


def fsync_file(path: Path) -> None:
    """Give the file the umask's permissions and make its content durable."""
    os.chmod(path, FILE_MODE)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def temp_name(path: Path) -> Path:
    """A unique hidden name next to ``path`` that ``remove_leftovers`` recognises."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync the file, rename it onto ``path`` and fsync the folder.

    The file gets the umask's permissions (not mkstemp's or safetensors' 0600); the temporary
    file is removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(str(tmp))
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def step_dirs(folder: Path) -> list[Path]:
    """The complete step directories of ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / MODEL_FILE).is_file() and (p / STATE_FILE).is_file():
            found.append(((int(m.group(1)), int(m.group(2) or 0)), p))
    return [p for _, p in sorted(found)]


def newest(folder: Path) -> Path | None:
    """The complete step directory with the highest step, or None."""
    dirs = step_dirs(folder)
    return dirs[-1] if dirs else None


def _free_name(folder: Path, step: int) -> str:
    name, n = f"step_{step:09d}", 0
    while (folder / name).exists():  # the same step saved again: never overwrite a complete checkpoint
        n += 1
        name = f"step_{step:09d}_{n}"
    return name


def remove_leftovers(folder: Path) -> list[str]:
    """Delete the temporary files and directories of interrupted saves; return their names."""
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if p.name.startswith(".") and (p.name.endswith(".tmp") or ".tmp-" in p.name):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p.name)
    return removed


class SaveError(UserError):
    """A checkpoint or another file of a run could not be written (see the module docstring)."""


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown space"
    return f"{free / 2**30:.1f} GiB" if free >= 2**30 else f"{free / 2**20:.0f} MiB"


def save_failed(path: Path, err: OSError, folder: Path) -> SaveError:
    """The one-line error of a failed write of ``path`` (a file or step directory in ``folder``)."""
    kept = newest(folder)
    what = f"the newest complete checkpoint, {kept}, is intact" if kept else "no earlier checkpoint exists"
    return SaveError(
        f"could not write {path}: {err.strerror or err} (errno {err.errno}), {_free_space(folder)} free in {folder}; "
        f"{what} and the run directory is consistent. The run stops: free space (or fix the permissions), "
        "then run the same command again to continue from that checkpoint"
    )


@contextlib.contextmanager
def saving(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` inside the block (writing ``path``) into a ``SaveError``."""
    path = Path(path)
    try:
        yield
    except OSError as err:
        raise save_failed(path, err, path.parent) from None


def _write_model(path: Path, write_model: Callable[[Path], None]) -> None:
    write_model(path)
    fsync_file(path)


def _write_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path)
    fsync_file(path)


def _publish(tmp: Path, final: Path) -> None:
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(final.parent)


def _link_last(weights: Path, last: Path) -> None:
    """Point ``last`` at ``weights``: a hard link (a copy where links are unsupported), swapped atomically."""
    tmp = temp_name(last)
    try:
        os.link(weights, tmp)
    except OSError:
        shutil.copyfile(weights, tmp)
        fsync_file(tmp)
    os.replace(tmp, last)
    fsync_dir(last.parent)


def _set_latest(folder: Path, name: str) -> None:
    atomic_write(folder / LATEST, lambda tmp: Path(tmp).write_text(name + "\n"))


def _prune(folder: Path, keep: Path) -> None:
    """Delete the step directories older than ``keep`` (and a legacy ``last.state.pt``)."""
    for p in step_dirs(folder):
        if p != keep:
            shutil.rmtree(p)
    legacy = folder / "last.state.pt"
    if legacy.exists():
        legacy.unlink()


def commit(folder: str | Path, step: int, write_model: Callable[[Path], None], state: dict[str, Any]) -> Path:
    """Write one checkpoint of global step ``step`` (see the module docstring); return its directory.

    ``write_model(path)`` writes the weights file (``xvit.engine.checkpoint.save_model``);
    ``state`` is the training state (``xvit.engine.train.resume.make_state``), saved with ``torch.save``.
    A failed write raises ``SaveError`` and leaves no temporary directory behind.
    """
    folder = Path(folder)
    with saving(folder):
        folder.mkdir(parents=True, exist_ok=True)
    final = folder / _free_name(folder, step)
    tmp = folder / f".{final.name}.tmp-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        _write_model(tmp / MODEL_FILE, write_model)
        _write_state(tmp / STATE_FILE, state)
        _publish(tmp, final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise save_failed(final, err, folder) from None
    with saving(folder / LATEST):  # the checkpoint is complete; only what points at it may be stale
        _link_last(final / MODEL_FILE, folder / LAST_WEIGHTS)
        _set_latest(folder, final.name)
        _prune(folder, keep=final)
    return final
