"""Training throughput of a config: is the data pipeline or the model the bottleneck?

Three measurements of the same run set-up (model, batch, threads, optimizer, mixup, loader as
``xvit train`` builds them from the config), interleaved over repeats:

- ``compute``: forward + loss + backward + optimizer step on one batch already in memory, fed to
  the same ``train_one_epoch`` loop: the model's ceiling at these settings;
- ``loader``: the training data loader alone (decode or frame cache, sampling, augmentation,
  collation, workers);
- ``train``: the real loop, loader and model together (what ``xvit train`` achieves).

Each is the median over repeats of clips/s over the timed steps (after ``warmup`` steps). The
data loading is not the bottleneck when ``train / compute`` is close to 1.

With ``snapshots`` it also times what preemption safety costs (``xvit.engine.train.preempt``): the
check ``xvit train`` makes at every step boundary (``StepGate.poll``, one process), and a snapshot
of the run's state, ``Trainer.checkpoint`` (weights, optimizer, RNG states: written, fsynced and
renamed into place), with its size.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from xvit.engine import distributed as xdist
from xvit.engine.config import Config
from xvit.engine.runtime import seed_everything
from xvit.engine.snapshot import newest
from xvit.engine.train.loop import train_one_epoch
from xvit.engine.train.prepare import cpu_threads, prepare
from xvit.engine.train.trainer import Trainer

KINDS = ("compute", "loader", "train")


@dataclass(frozen=True)
class TrainBenchResult:
    kind: str
    clips_per_s: list[float]  # one per repeat

    @property
    def median(self) -> float:
        return statistics.median(self.clips_per_s)


def _timed_steps(trainer: Trainer, loader, steps: int, warmup: int) -> float:
    """Clips/s of ``train_one_epoch`` over ``loader``, timing the steps after ``warmup``."""
    stamps: list[float] = []
    train_one_epoch(
        trainer.net, loader, trainer.optimizer, trainer.scheduler, mixer=trainer.mixer, device=trainer.dist.device,
        epoch=0, steps=warmup + steps, accum_steps=1, clip_grad=trainer.cfg.optim.clip_grad,
        amp_dtype=trainer.prep.amp_dtype, scaler=trainer.scaler, progress=False,
        on_step=lambda info: stamps.append(time.perf_counter()) and False,
    )  # fmt: skip
    batch = trainer.cfg.train.batch_size
    return batch * steps / (stamps[-1] - stamps[warmup - 1]) if warmup else batch * steps / (stamps[-1] - stamps[0])


def _loader_rate(trainer: Trainer, steps: int, warmup: int) -> float:
    batch = trainer.cfg.train.batch_size
    it = iter(trainer.loader)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    return batch * steps / (time.perf_counter() - start)


def _snapshot_costs(trainer: Trainer, batch, count: int) -> dict:
    """Seconds per step-boundary check and per snapshot (median of ``count``), and a snapshot's bytes."""
    if not trainer.optimizer.state:  # the optimizer's buffers exist after its first step
        _timed_steps(trainer, itertools.repeat(batch, 2), 1, 1)
    polls = 10_000
    start = time.perf_counter()
    for _ in range(polls):
        trainer.gate.poll()
    poll_s = (time.perf_counter() - start) / polls
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        trainer.checkpoint(0, 1)
        seconds.append(time.perf_counter() - start)
    step = newest(trainer.run_dir / "checkpoints")  # under torchrun only rank 0 writes
    return {
        "check_us": round(poll_s * 1e6, 3),
        "snapshot_s": [round(x, 3) for x in seconds],
        "snapshot_median_s": round(statistics.median(seconds), 3),
        "snapshot_mb": round(sum(p.stat().st_size for p in step.iterdir()) / 2**20, 1) if step else 0.0,
    }


def bench_training(cfg: Config, *, steps: int = 40, warmup: int = 5, repeats: int = 3, snapshots: int = 0) -> dict:
    """Measure ``compute``, ``loader`` and ``train`` clips/s for ``cfg`` (see the module docstring);
    with ``snapshots``, the cost of the step-boundary check and of that many snapshots (``snapshot``)."""
    dist = xdist.init_distributed(cfg.train.device)  # one process: no process group, just the device
    threads = cpu_threads(cfg, dist)
    seed_everything(cfg.seed, threads=threads)
    prep = prepare(cfg, dist)
    needed = warmup + steps
    if prep.steps_per_epoch < needed:
        raise ValueError(f"the training set gives {prep.steps_per_epoch} steps per epoch; ask for fewer")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(prep, dist, Path(tmp))
        batch = next(iter(trainer.loader))
        rates: dict[str, list[float]] = {k: [] for k in KINDS}
        for _ in range(repeats):
            rates["compute"].append(_timed_steps(trainer, itertools.repeat(batch, needed), steps, warmup))
            rates["loader"].append(_loader_rate(trainer, steps, warmup))
            rates["train"].append(_timed_steps(trainer, trainer.loader, steps, warmup))
        costs = _snapshot_costs(trainer, batch, snapshots) if snapshots else None
        trainer.logger.close()
    results = [TrainBenchResult(k, v) for k, v in rates.items() if v]
    med = {r.kind: r.median for r in results}
    return {
        "settings": {
            "model": cfg.model.name, "options": cfg.model.options, "batch_size": cfg.train.batch_size,
            "num_frames": cfg.data.num_frames, "crop_size": cfg.data.crop_size,
            "torch_threads": torch.get_num_threads(),
            "num_workers": cfg.data.num_workers, "cache": cfg.data.cache, "device": str(dist.device),
            "amp": str(prep.amp_dtype), "steps": steps, "warmup": warmup, "repeats": repeats,
        },
        "clips_per_s": {r.kind: [round(x, 1) for x in r.clips_per_s] for r in results},
        "median": {k: round(v, 1) for k, v in med.items()},
        "train_over_compute": round(med["train"] / med["compute"], 3) if med else None,
        "snapshot": costs,
    }  # fmt: skip
