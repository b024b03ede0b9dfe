"""Where a training run is, and the checkpoints that save and restore it.

``RunState`` is the part of a run's state that is the run's own: epochs done, the position in the
epoch in progress, best val top-1, training time, the skip ledger, ... . ``Checkpointer`` writes
it, with the weights (and their ``CheckpointMeta``), optimizer, schedule, grad scaler and every
rank's RNG states, as one checkpoint unit (``xvit.engine.snapshot.commit``; the files:
``xvit.engine.train.resume``), keeps ``best.safetensors``, and reads a checkpoint back into the
model, the optimizer and a ``RunState``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from xvit.engine import distributed as xdist
from xvit.engine import snapshot
from xvit.engine.checkpoint import CheckpointMeta, save_model, write_model
from xvit.engine.runtime import seed_everything
from xvit.engine.train.ledger import SkipLedger
from xvit.engine.train.optim import WarmupCosine
from xvit.engine.train.prepare import Prepared
from xvit.engine.train.resume import load_state, make_state, set_rng_state
from xvit.errors import UserError

log = logging.getLogger("xvit.train")


@dataclass
class RunState:
    """A run's own progress: what its checkpoint holds besides weights, optimizer, schedule and RNG."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # optimizer steps done in the epoch in progress
    best_top1: float | None = None  # best val top-1 so far (%)
    elapsed_before: float = 0.0  # training seconds of the run's earlier sessions
    train_acc: float | None = None  # train top-1 of the last finished epoch
    finished: bool = False  # all train.epochs trained
    metrics_bytes: int | None = 0  # metrics.jsonl as the resumed checkpoint saw it (0: a fresh start)
    epoch_sums: dict | None = None  # this rank's running loss / acc sums of the epoch in progress
    eval_pending: bool = False  # a stop cut short the evaluation after the last epoch: run it first
    ledger: SkipLedger = field(default_factory=SkipLedger)  # the videos the run could not read

    @classmethod
    def from_saved(cls, state: dict, rank: int, world_size: int, epochs: int) -> RunState:
        """The ``RunState`` of a loaded training state (``resume.load_state``), for process ``rank``."""
        sums = state.get("epoch_sums") or []
        epoch = int(state["epoch"])
        return cls(
            epoch=epoch,
            step_in_epoch=int(state["step_in_epoch"]),
            best_top1=None if state["best_top1"] < 0 else float(state["best_top1"]),
            elapsed_before=float(state.get("elapsed_s", 0.0)),
            train_acc=None if state.get("train_acc", -1.0) < 0 else float(state["train_acc"]),
            finished=epoch >= epochs,  # train.epochs may have been raised since
            metrics_bytes=None if state.get("metrics_bytes", -1) < 0 else int(state["metrics_bytes"]),
            epoch_sums=dict(sums[rank]) if len(sums) == world_size else None,
            eval_pending=bool(state.get("eval_pending", False)),
            ledger=SkipLedger(state.get("skipped")),
        )


class Checkpointer:
    """Writes and reads the checkpoints of one run: its model, optimizer, schedule and scaler."""

    def __init__(
        self,
        prep: Prepared,
        dist: xdist.DistInfo,
        run_dir: Path,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: WarmupCosine,
        scaler: torch.amp.GradScaler | None,
        global_batch: int,
        lr: float,
    ):
        self.prep, self.cfg, self.dist, self.run_dir = prep, prep.cfg, dist, run_dir
        self.folder = run_dir / "checkpoints"
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.global_batch, self.lr = global_batch, lr

    def meta(self, epoch: int) -> CheckpointMeta:
        """What the weights file of a checkpoint after ``epoch`` epochs says about itself."""
        data, cfg = self.prep.data, self.cfg
        return CheckpointMeta(
            model=self.model.model_config,
            clip=cfg.clip_spec(self.prep.class_names),
            data={"format": data["format"], "root": data["root"], "val_annotations": data["val_annotations"]},
            train={
                "epoch": epoch,
                "step": self.scheduler.last_step,
                "run_dir": str(self.run_dir),
                "global_batch": self.global_batch,
                "lr": self.lr,
                "config": cfg.to_dict(),
            },
        )

    def write(
        self,
        epoch: int,
        step_in_epoch: int,
        state: RunState,
        *,
        gathered: list[dict],
        elapsed_s: float,
        metrics_bytes: int,
    ) -> None:
        """Commit one checkpoint unit at step ``step_in_epoch`` of epoch ``epoch`` (rank 0);
        ``gathered``: every rank's ``{"rng", "sums"}``; ``metrics_bytes``: how much of
        ``metrics.jsonl`` is written."""
        meta = self.meta(epoch)
        saved = make_state(
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            epoch=epoch,
            step_in_epoch=step_in_epoch,
            global_step=self.scheduler.last_step,
            best_top1=state.best_top1,
            rng=[g["rng"] for g in gathered],
            world_size=self.dist.world_size,
            global_batch=self.global_batch,
            finished=state.finished,
            elapsed_s=elapsed_s,
            train_acc=state.train_acc,
            skipped=state.ledger.to_list(),
            metrics_bytes=metrics_bytes,
            epoch_sums=[g["sums"] for g in gathered],
            eval_pending=state.eval_pending,
        )
        snapshot.commit(self.folder, self.scheduler.last_step, lambda p: write_model(p, self.model, meta), saved)
        if self.cfg.train.keep_epoch_ckpts and step_in_epoch == 0:
            with snapshot.saving(path := self.folder / f"epoch_{epoch:03d}.safetensors"):
                save_model(path, self.model, meta)

    def save_best(self, epoch: int) -> None:
        """``checkpoints/best.safetensors``: the weights after ``epoch`` epochs (rank 0)."""
        path = self.folder / "best.safetensors"
        with snapshot.saving(path):
            save_model(path, self.model, self.meta(epoch))

    def restore(self, weights: Path, state_path: Path) -> RunState:
        """Load weights, optimizer, schedule, scaler and RNG states from a checkpoint; its ``RunState``."""
        try:
            self.model.load_state_dict(load_file(str(weights), device=str(self.dist.device)), strict=True)
        except (RuntimeError, OSError) as err:
            first = str(err).strip().splitlines()[0]
            raise UserError(
                f"resume checkpoint {weights}: its weights do not fit the model its metadata describes "
                f"({first[:160]}); the file was changed after xvit wrote it: delete {weights.parent} to resume "
                "from an older checkpoint, or start afresh with train.resume=never and a new run_dir"
            ) from None
        saved = load_state(state_path)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and saved["scaler"]:
            self.scaler.load_state_dict(saved["scaler"])
        state = RunState.from_saved(saved, self.dist.rank, self.dist.world_size, self.cfg.train.epochs)
        if len(saved["rng"]) == self.dist.world_size:
            set_rng_state(saved["rng"][self.dist.rank])
        else:
            log.warning(
                "checkpoint from %d processes, now %d: random streams re-seeded (not bit-exact)",
                len(saved["rng"]),
                self.dist.world_size,
            )
            seed_everything(self.cfg.seed + self.dist.rank + 1000 * self.scheduler.last_step)
        if self.dist.rank == 0:
            log.info(
                "resumed %s at epoch %d, step %d of the epoch (global step %d)",
                weights,
                state.epoch,
                state.step_in_epoch,
                self.scheduler.last_step,
            )
        return state
