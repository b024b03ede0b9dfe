"""Training-state checkpoints and resume (runs can be killed at any moment and continued).

A run directory's ``checkpoints/`` holds, written atomically (``xvit.engine.checkpoint.atomic_write``):

- ``last.safetensors``: model weights + meta (``xvit.engine.checkpoint.save_model``), read by eval/predict;
- ``last.state.pt``: everything else needed to continue exactly: optimizer, schedule, grad scaler,
  RNG states of every rank (python, numpy, torch, cuda), epoch, global step, the position inside
  the epoch, best val top-1. Only tensors, numbers, strings, lists and dicts, so it loads with
  ``torch.load(weights_only=True)``;
- ``best.safetensors`` (best val top-1) and, if configured, ``epoch_NNN.safetensors``.

The state file is written after the weights and records their step; resume checks both agree.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xvit.engine.checkpoint import atomic_write, read_meta
from xvit.errors import UserError

LAST_WEIGHTS = "last.safetensors"
LAST_STATE = "last.state.pt"
STATE_VERSION = 1


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
) -> dict[str, Any]:
    """The dict stored in ``last.state.pt``.

    ``epoch`` is the epoch in progress (0-based) and ``step_in_epoch`` the optimizer steps already done
    in it (0 at an epoch boundary); ``rng`` holds one ``rng_state()`` per rank; ``elapsed_s`` is the
    training time so far (seconds, over all sessions of the run).
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
    }


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a ``last.state.pt`` with ``weights_only=True``; a bad file is a UserError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user problem
        raise UserError(f"cannot read training state {path}: {err}; delete it or set train.resume=never") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise UserError(f"{path} is not an xvit training state (version {STATE_VERSION}); set train.resume=never")
    return state


def find_checkpoint(location: str | Path) -> tuple[Path, Path] | None:
    """``(weights, state)`` of the last checkpoint under a run dir, its ``checkpoints/`` dir or a file in it."""
    location = Path(location).expanduser()
    if location.is_file():
        location = location.parent
    for folder in (location / "checkpoints", location):
        weights, state = folder / LAST_WEIGHTS, folder / LAST_STATE
        if weights.is_file() and state.is_file():
            return weights, state
    return None


def find_resume(mode: str, run_dir: str | Path) -> tuple[Path, Path] | None:
    """The checkpoint to continue from according to ``train.resume`` (auto | never | PATH)."""
    here = find_checkpoint(Path(run_dir).expanduser())
    if mode == "never":
        if here is not None:
            raise UserError(
                f"run_dir={run_dir} already holds a checkpoint ({here[0]}) and train.resume=never; "
                "choose another run_dir, delete it, or set train.resume=auto to continue it"
            )
        return None
    if mode == "auto":
        return here
    found = find_checkpoint(mode)
    if found is None:
        raise UserError(
            f"train.resume={mode}: no {LAST_WEIGHTS} + {LAST_STATE} there; point it at a run "
            "directory or its checkpoints/ folder, or use train.resume=auto"
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
            "steps (a crash between the two writes?); delete both to restart the run"
        )
    if int(state["global_batch"]) != global_batch:
        raise UserError(
            f"resume checkpoint {state_path} was trained with a global batch of {state['global_batch']} "
            f"but this run has {global_batch} (train.batch_size x processes x train.accum_steps); "
            "set train.batch_size / train.accum_steps to match, or train.resume=never with a new run_dir"
        )
    return state
