"""A run's metrics log: ``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars in
``tb/``, written by rank 0. A resumed run cuts ``metrics.jsonl`` back to what its checkpoint had
seen, so every step appears once however often the run was killed. Also the lines a run writes to
the ``xvit.train`` log: its start, each epoch, each evaluation, each skipped video."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from xvit.engine.distributed import DistInfo
    from xvit.engine.train.ledger import SkipLedger
    from xvit.engine.train.prepare import Prepared

log = logging.getLogger("xvit.train")


class RunLogger:
    """``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars in ``tb/``; rank 0 only."""

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool,
        tensorboard: bool,
        purge_step: int | None = None,
        truncate_to: int | None = None,
    ):
        """``truncate_to``: cut ``metrics.jsonl`` to this many bytes first (what a resumed checkpoint had seen)."""
        self.enabled = enabled
        path = run_dir / "metrics.jsonl"
        if enabled and truncate_to is not None and path.is_file() and path.stat().st_size > truncate_to:
            with open(path, "r+b") as f:
                f.truncate(truncate_to)
        self.file = open(path, "a") if enabled else None
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow to import: only when logging to TensorBoard

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)

    def log(self, kind: str, step: int, values: dict) -> None:
        """Append ``{"kind": kind, "global_step": step, **values}``; scalars go to TensorBoard as ``kind/key``."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}
        self.file.write(json.dumps({"kind": kind, "global_step": step, "time": round(time.time(), 3), **clean}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in clean.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def tell(self) -> int:
        """Bytes of ``metrics.jsonl`` written so far (durable: flushed and fsynced); -1 when not logging."""
        if self.file is None:
            return -1
        self.file.flush()
        os.fsync(self.file.fileno())
        return self.file.tell()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def log_skips(logger: RunLogger, ledger: SkipLedger, step: int, *, main: bool) -> int:
    """Write the ledger's new entries to metrics.jsonl (kind ``skip``) and the log; return how many."""
    new = ledger.take_unlogged()
    for entry in new:
        logger.log("skip", step, entry)
        if main:
            log.warning(
                "skipped %s video %s (epoch %d): %s", entry["split"], entry["path"], entry["epoch"], entry["reason"]
            )
    return len(new)


def log_start(prep: Prepared, dist: DistInfo, *, params: float, global_batch: int, lr: float, run_dir: Path) -> None:
    """The two lines a run starts with: what it trains on what, and the recipe (``params`` in millions)."""
    cfg = prep.cfg
    scaled = f" (optim.lr={cfg.optim.lr} x {global_batch}/{cfg.optim.lr_base_batch})" if cfg.optim.lr_base_batch else ""
    log.info(
        "training %s (%.2fM params) on %d train / %s val videos, %d classes -> %s",
        cfg.model.name,
        params,
        len(prep.train_set),
        len(prep.val_set) if prep.val_set is not None else "no",
        prep.num_classes,
        run_dir,
    )
    log.info(
        "%d epochs x %d steps, global batch %d (%d x %d processes x %d accum), %s lr %.3g%s, "
        "warm-up %g epochs + cosine, device %s, amp %s",
        cfg.train.epochs,
        prep.steps_per_epoch,
        global_batch,
        cfg.train.batch_size,
        dist.world_size,
        cfg.train.accum_steps,
        cfg.optim.name,
        lr,
        scaled,
        cfg.optim.warmup_epochs,
        dist.device,
        prep.amp_dtype or "off (float32)",
    )


def log_epoch(epoch: int, epochs: int, stats: dict, *, skipped: int, new: int) -> None:
    """The line after an epoch (``epoch`` 1-based): its ``train_one_epoch`` figures and the skips."""
    log.info(
        "epoch %d/%d: loss %.4f, train acc %.1f%%, lr %.2e, %.1f clips/s, %.0f s, "
        "%d unreadable training videos skipped (%d new)",
        epoch,
        epochs,
        stats["loss"],
        stats["acc"],
        stats["lr"],
        stats["clips_per_s"],
        stats["time_s"],
        skipped,
        new,
    )


def log_val(views: str, epoch: int, res: dict, order: float | None = None) -> None:
    """The line after an evaluation on the val split (``order``: its pair order accuracy, if the data has pairs)."""
    log.info(
        "val (%s views) after epoch %d: top-1 %.2f%%, top-5 %.2f%%, mean class acc %.2f%%%s on %d videos "
        "(%d unreadable), %.0f s",
        views,
        epoch,
        res["top1"],
        res["top5"],
        res["mean_class_acc"],
        "" if order is None else f", pair order {order:.1f}%",
        res["num_videos"],
        res["num_missing"],
        res["time_s"],
    )
