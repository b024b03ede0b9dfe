"""The data loaders of a training run: shuffled per rank and resumable mid-epoch, with every
item's augmentation seeded by (seed, epoch, index), and the multi-view validation loader.

Training items also carry the ``(path, reason)`` of the unreadable videos skipped to produce
them, whichever worker process loaded them: ``SkipReporting`` hands those to the run's skip
ledger and yields ``(clips, labels)`` as any loader does."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from xvit.data.datasets import collate_views
from xvit.engine import distributed as xdist
from xvit.engine.train.preempt import worker_init
from xvit.engine.train.prepare import Prepared


class EpochSeeded(Dataset):
    """Wraps a training set so that item ``i`` of epoch ``e`` draws its augmentation from a seed of (seed, e, i).

    The transforms use the global torch/numpy/python generators; here they are seeded per item
    and restored afterwards, so an item's augmentation does not depend on which worker or rank
    loads it, nor on where a resumed run starts: what makes mid-epoch resume and 1-vs-N-process
    runs reproducible.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, list[tuple[str, str]]]:
        """``(clip, label, skipped)``: ``skipped`` lists the ``(path, reason)`` of unreadable videos met."""
        item_seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])
        log = getattr(self.dataset, "skipped", [])
        before = len(log)
        with _forked_rng():
            random.seed(item_seed)
            np.random.seed(item_seed)
            torch.default_generator.manual_seed(item_seed)  # CPU only: never touches a CUDA generator
            clip, label = self.dataset[index]
        return clip, label, list(log[before:])


def collate_train(batch: list[tuple[Any, Any, list]]) -> tuple[Any, Any, list[tuple[str, str]]]:
    """``EpochSeeded`` items -> ``(clips (B, C, T, H, W), labels (B,), skipped of the whole batch)``."""
    clips, labels = default_collate([(c, y) for c, y, _ in batch])
    return clips, labels, [s for _, _, skipped in batch for s in skipped]


class SkipReporting:
    """The training loader as ``train_one_epoch`` iterates it: ``(clips, labels)`` batches; the
    skipped videos each batch carries go to ``on_skip(path, reason)``."""

    def __init__(self, loader: DataLoader, on_skip: Callable[[str, str], None] | None = None):
        self.loader, self.on_skip = loader, on_skip
        self.generator = loader.generator

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for clips, labels, skipped in self.loader:
            if self.on_skip is not None:
                for path, reason in skipped:
                    self.on_skip(path, reason)
            yield clips, labels


@contextlib.contextmanager
def _forked_rng():
    """Restore the CPU generators of python, numpy and torch on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def make_train_loader(
    prep: Prepared, dist: xdist.DistInfo, on_skip: Callable[[str, str], None] | None = None
) -> tuple[SkipReporting, xdist.ResumableSampler, EpochSeeded]:
    """Shuffled (seed + epoch), per-rank, drop-last loader whose sampler can start mid-epoch.

    ``on_skip(path, reason)`` is called for every unreadable video a batch had to skip.
    """
    cfg = prep.cfg
    dataset = EpochSeeded(prep.train_set, cfg.seed)
    sampler = xdist.ResumableSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, seed=cfg.seed)
    loader = DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=True,
        pin_memory=dist.device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=collate_train,
        worker_init_fn=worker_init(cfg.train.stop_signals),  # workers outlive a signalled process group
    )  # not the global generator
    return SkipReporting(loader, on_skip), sampler, dataset


def make_val_loader(prep: Prepared, dist: xdist.DistInfo) -> DataLoader | None:
    """Multi-view validation loader; each video on exactly one rank (``ShardSampler``)."""
    if prep.val_set is None:
        return None
    cfg = prep.cfg
    workers = cfg.data.num_workers if cfg.eval.num_workers is None else cfg.eval.num_workers
    sampler = xdist.ShardSampler(prep.val_set, dist.world_size, dist.rank)
    return DataLoader(
        prep.val_set,
        batch_size=cfg.eval.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_views,
        pin_memory=dist.device.type == "cuda",
        worker_init_fn=worker_init(cfg.train.stop_signals),
    )
