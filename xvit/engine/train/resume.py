"""Training state and resume (runs can be killed at any moment and continued).

A checkpoint is one unit, a step directory of ``checkpoints/`` (``xvit.engine.snapshot``):
``model.safetensors`` (weights + meta, ``xvit.engine.checkpoint.write_model``) and ``state.pt``:
everything else needed to continue exactly: optimizer, schedule, grad scaler, RNG states of every
rank (python, numpy, torch, cuda), epoch, global step, the position inside the epoch, best val
top-1, the skip ledger and how much of ``metrics.jsonl`` was written. Only tensors, numbers,
strings, lists and dicts, so it loads with ``torch.load(weights_only=True)``. Data-loader workers
hold no state to save: every item's randomness is seeded by (seed, epoch, index).

Older run directories (``last.safetensors`` + ``last.state.pt``, written one after the other)
still resume; their two files must be from the same step.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xvit.engine import snapshot
from xvit.engine.checkpoint import read_meta
from xvit.engine.snapshot import atomic_write
from xvit.errors import UserError

LAST_WEIGHTS = snapshot.LAST_WEIGHTS
LAST_STATE = "last.state.pt"  # the state file of run directories written before step directories
STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: legacy last.state.pt (no ledger, no metrics position)


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors/lists (``weights_only``-loadable)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(mt), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a half-written file (``atomic_write``)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def make_state(
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    epoch: int,
    step_in_epoch: int,
    global_step: int,
    best_top1: float | None,
    rng: list[dict],
    world_size: int,
    global_batch: int,
    finished: bool = False,
    elapsed_s: float = 0.0,
    train_acc: float | None = None,
    skipped: list[dict] | None = None,
    metrics_bytes: int = -1,
    epoch_sums: list[dict | None] | None = None,
    eval_pending: bool = False,
) -> dict[str, Any]:
    """The dict stored in ``last.state.pt``.

    ``epoch`` is the epoch in progress (0-based) and ``step_in_epoch`` the optimizer steps already done
    in it (0 at an epoch boundary); ``rng`` holds one ``rng_state()`` per rank; ``elapsed_s`` is the
    training time so far (seconds, over all sessions of the run); ``skipped`` the skip ledger's
    entries (``xvit.engine.train.ledger``); ``metrics_bytes`` the size of ``metrics.jsonl`` at this
    checkpoint (a resumed run cuts off what a killed one appended after it; -1: unknown);
    ``epoch_sums`` each rank's running loss / accuracy sums of the epoch in progress; ``eval_pending``:
    a stop signal cut short the evaluation due after this epoch, which a resumed run does first.
    """
    return {
        "version": STATE_VERSION,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": global_step,
        "best_top1": -1.0 if best_top1 is None else float(best_top1),
        "rng": rng,
        "world_size": world_size,
        "global_batch": global_batch,
        "finished": finished,
        "elapsed_s": float(elapsed_s),
        "train_acc": -1.0 if train_acc is None else float(train_acc),
        "skipped": list(skipped or []),
        "metrics_bytes": int(metrics_bytes),
        "epoch_sums": [dict(s) if s else {} for s in (epoch_sums or [])],
        "eval_pending": bool(eval_pending),
    }


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a ``last.state.pt`` with ``weights_only=True``; a bad file is a UserError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user problem
        raise UserError(f"cannot read training state {path}: {err}; delete it or set train.resume=never") from None
    if not isinstance(state, dict) or state.get("version") not in READABLE_VERSIONS:
        raise UserError(f"{path} is not an xvit training state (version {STATE_VERSION}); set train.resume=never")
    return state


def find_checkpoint(location: str | Path) -> tuple[Path, Path] | None:
    """``(weights, state)`` of the newest complete checkpoint under a run dir, its ``checkpoints/``
    folder, a step directory, or a file in one of them; legacy ``last.*`` pairs too."""
    location = Path(location).expanduser()
    if location.is_file():
        location = location.parent
    if (location / snapshot.MODEL_FILE).is_file() and (location / snapshot.STATE_FILE).is_file():
        return location / snapshot.MODEL_FILE, location / snapshot.STATE_FILE  # a step directory
    for folder in (location / "checkpoints", location):
        step = snapshot.newest(folder)
        if step is not None:
            return step / snapshot.MODEL_FILE, step / snapshot.STATE_FILE
        weights, state = folder / LAST_WEIGHTS, folder / LAST_STATE
        if weights.is_file() and state.is_file():
            return weights, state
    return None


def last_state(location: str | Path) -> dict[str, Any]:
    """The training state of the newest complete checkpoint under ``location`` (see ``find_checkpoint``)."""
    found = find_checkpoint(location)
    if found is None:
        raise UserError(f"{location} holds no complete checkpoint (a step_* directory); train it first")
    return load_state(found[1])


def find_resume(mode: str, run_dir: str | Path) -> tuple[Path, Path] | None:
    """The checkpoint to continue from according to ``train.resume`` (auto | never | PATH)."""
    here = find_checkpoint(Path(run_dir).expanduser())
    if mode == "never":
        if here is not None:
            raise UserError(
                f"run_dir={run_dir} already holds a checkpoint ({here[0].parent}) and train.resume=never; "
                "choose another run_dir, delete it, or set train.resume=auto to continue it"
            )
        return None
    if mode == "auto":
        return here
    found = find_checkpoint(mode)
    if found is None:
        raise UserError(
            f"train.resume={mode}: no complete checkpoint there (a step_* directory with {snapshot.MODEL_FILE} "
            f"and {snapshot.STATE_FILE}); point it at a run directory or its checkpoints/ folder, "
            "or use train.resume=auto"
        )
    return found


def check_resume(resume: tuple[Path, Path], cfg: Any, num_classes: int, global_batch: int) -> dict[str, Any]:
    """Check a checkpoint fits this run (model, classes, frames, size, global batch); return its state.

    ``cfg`` is the run's ``xvit.engine.config.Config``; every mismatch is a UserError saying what to set.
    """
    weights, state_path = resume
    meta = read_meta(weights)
    model, step = meta.model, meta.train.get("step")
    wanted = {
        "name": (cfg.model.name, "model.name"),
        "num_classes": (num_classes, "model.num_classes"),
        "num_frames": (cfg.data.num_frames, "data.num_frames"),
        "img_size": (cfg.data.crop_size, "data.crop_size"),
    }
    for key, (value, cfg_key) in wanted.items():
        if model.get(key) != value:
            what = "the data has" if key == "num_classes" else "this run has"
            raise UserError(
                f"resume checkpoint {weights} has {key}={model.get(key)} but {what} {value}; "
                f"set {cfg_key}={model.get(key)} (and matching data) to continue it, "
                "or train.resume=never with a new run_dir to start afresh"
            )
    state = load_state(state_path)
    if step is not None and int(step) != int(state["global_step"]):
        raise UserError(
            f"{weights} (step {step}) and {state_path} (step {state['global_step']}) are from different "
            "steps (a crash between the two writes of an older xvit); delete both to restart the run, or "
            "continue from another checkpoint with train.resume=PATH"
        )
    if int(state["global_batch"]) != global_batch:
        raise UserError(
            f"resume checkpoint {state_path} was trained with a global batch of {state['global_batch']} "
            f"but this run has {global_batch} (train.batch_size x processes x train.accum_steps); "
            "set train.batch_size / train.accum_steps to match, or train.resume=never with a new run_dir"
        )
    return state
