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
from xvit.engine.loop import train_one_epoch
from xvit.engine.prepare import cpu_threads, prepare
from xvit.engine.runtime import seed_everything
from xvit.engine.trainer import Trainer

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


def bench_training(cfg: Config, *, steps: int = 40, warmup: int = 5, repeats: int = 3) -> dict:
    """Measure ``compute``, ``loader`` and ``train`` clips/s for ``cfg`` (see the module docstring)."""
    dist = xdist.init_distributed(cfg.train.device)  # one process: no process group, just the device
    threads = cpu_threads(cfg, dist)
    seed_everything(cfg.seed, threads=threads)
    prep = prepare(cfg, dist)
    needed = warmup + steps
    if prep.steps_per_epoch < needed:
        raise ValueError(f"the training set gives {prep.steps_per_epoch} steps per epoch; ask for fewer")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(prep, dist, Path(tmp))
        trainer.logger.close()
        batch = next(iter(trainer.loader))
        rates: dict[str, list[float]] = {k: [] for k in KINDS}
        for _ in range(repeats):
            rates["compute"].append(_timed_steps(trainer, itertools.repeat(batch, needed), steps, warmup))
            rates["loader"].append(_loader_rate(trainer, steps, warmup))
            rates["train"].append(_timed_steps(trainer, trainer.loader, steps, warmup))
    results = [TrainBenchResult(k, v) for k, v in rates.items()]
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
        "train_over_compute": round(med["train"] / med["compute"], 3),
    }  # fmt: skip
