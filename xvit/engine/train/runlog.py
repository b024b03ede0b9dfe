"""A run's metrics log: ``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars in
``tb/``, written by rank 0. A resumed run cuts ``metrics.jsonl`` back to what its checkpoint had
seen, so every step appears once however often the run was killed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np


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
