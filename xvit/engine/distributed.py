"""Distributed helpers: init from torchrun's environment, rank/world queries, gathers and samplers.

``torchrun --nproc_per_node=N -m xvit train ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` (and the
rendezvous variables); ``init_distributed`` then starts a process group (``nccl`` on GPUs, ``gloo`` on
CPU). Without those variables everything here works single-process: ``world_size() == 1``,
``is_main()`` is true and the gathers return their input.

The evaluator uses ``ShardSampler`` (each video on exactly one rank, no padding) and
``all_gather_tensor`` / ``all_gather_object`` to assemble per-video scores by video index.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler

from xvit.engine.runtime import resolve_device

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int  # global rank
    local_rank: int  # rank on this machine (selects the GPU)
    world_size: int  # number of processes
    device: torch.device  # this process's device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Start the process group if torchrun's variables are set; pick this process's device.

    ``device``: ``auto`` (cuda:LOCAL_RANK if CUDA is available, else cpu), ``cpu`` or ``cuda``.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    use_cuda = resolve_device(device, "train.device").type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if use_cuda else None,
        )
        log.info("process group: backend=%s rank=%d/%d device=%s", backend, rank, world, dev)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def cleanup() -> None:
    """Destroy the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    """True on rank 0 (and single-process): the process that logs and writes files."""
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def _comm_device() -> torch.device:
    # nccl gathers CUDA tensors only; gloo gathers CPU tensors.
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor:
    """Mean of a tensor (or float) over all processes; returned on the input's device."""
    tensor = torch.as_tensor(value, dtype=torch.float64)
    if not is_dist():
        return tensor
    out = tensor.to(_comm_device()).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / world_size()).to(tensor.device)


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj_rank0, obj_rank1, ...]`` on every process (pickled over the wire: trusted, in-job data only)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of all ranks, in rank order; first dims may differ.

    Each rank pads to the largest first dim, gathers, and the padding is cut off again. Returned on
    the input's device.
    """
    if not is_dist():
        return tensor
    device = tensor.device
    local = tensor.to(_comm_device()).contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], device=local.device))
    sizes_int = [int(s.item()) for s in sizes]
    longest = max(sizes_int)
    if longest == 0:
        return tensor
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes_int]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes_int)]).to(device)


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r takes indices ``r, r + W, r + 2W, ...`` in order; no padding, no duplicates.

    The union over ranks is exactly ``range(len(dataset))``, so gathered per-video scores need no
    de-duplication (the evaluator still keys them by the ``indices`` in each batch).
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank_: int | None = None):
        self.length = len(dataset)
        self.num_replicas = world_size() if num_replicas is None else num_replicas
        self.rank = rank() if rank_ is None else rank_

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))


class ResumableSampler(DistributedSampler):
    """Training sampler: ``DistributedSampler`` (a permutation fixed by ``seed + epoch``) that can start mid-epoch.

    ``set_start(n)`` skips this rank's first ``n`` indices of the current epoch (the batches already
    trained on before a checkpoint), so a resumed run sees exactly the remaining batches in the same
    order without decoding the skipped videos. ``set_epoch`` resets the start to 0.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
