"""Distributed helpers: init from torchrun's environment, rank/world queries, gathers and samplers.

``torchrun --nproc_per_node=N -m xvit train ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` (and the
rendezvous variables); ``init_distributed`` then starts a process group (``nccl`` on GPUs, ``gloo`` on
CPU). Without those variables everything here works single-process: ``world_size() == 1``,
``is_main()`` is true and the gathers return their input.

The evaluator uses ``ShardSampler`` (each video on exactly one rank, no padding) and
``all_gather_tensor`` / ``all_gather_object`` to assemble per-video scores by video index.

Failure is bounded: collectives time out after ``timeout_s`` (``train.dist_timeout_s``), except the
``barrier(wait=True)`` where the other ranks wait for rank 0 to build something (the synthetic
data, the frame cache; ``wait_timeout_s``). Every rank publishes a heartbeat and its progress in
the rendezvous store, so that when a collective fails the survivors can say which rank died (no
heartbeat) or hung (behind the others): ``describe_peers``, used by ``peer_failure``.

A second gloo group (``control_group``) carries the step-boundary agreement on stop signals and
snapshots (``xvit.engine.train.preempt``). ``on_main`` runs a write on rank 0 and raises an error it
meets on every rank. A group that torchrun restarted (``--max-restarts``) gets a fresh namespace
of torchrun's store (``_restart_store``).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler

from xvit.engine.runtime import resolve_device
from xvit.errors import UserError

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


HEARTBEAT_S = 2.0  # seconds between two heartbeats of a rank
_wait_group: Any = None  # gloo group with the long timeout of barrier(wait=True)
_control_group: Any = None  # gloo group of the step-boundary agreement (xvit.engine.train.preempt.StepGate)
_progress = 0  # this rank's progress counter (published with set_progress)


def init_distributed(device: str = "auto", timeout_s: float = 120.0, wait_timeout_s: float = 7200.0) -> DistInfo:
    """Start the process group if torchrun's variables are set; pick this process's device.

    ``device``: ``auto`` (cuda:LOCAL_RANK if CUDA is available, else cpu), ``cpu`` or ``cuda``.
    ``timeout_s``: how long a collective waits for a dead or stuck rank before failing;
    ``wait_timeout_s``: the same for joining the group (ranks start at different times) and for
    ``barrier(wait=True)``.
    """
    global _wait_group, _control_group
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
        dist.init_process_group(  # the start waits long: ranks start at different times (imports, data)
            backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=wait_timeout_s),
            device_id=dev if use_cuda else None,
            store=_restart_store(rank, world, wait_timeout_s),
        )
        _wait_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=wait_timeout_s))
        _control_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
        set_timeout = getattr(dist, "set_timeout", None) or dist.distributed_c10d._set_pg_timeout
        set_timeout(datetime.timedelta(seconds=timeout_s))  # then every collective of the run is bounded
        _start_heartbeat(rank)
        log.info("process group: backend=%s rank=%d/%d device=%s, timeout %g s", backend, rank, world, dev, timeout_s)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def _restart_store(rank_: int, world: int, timeout_s: float) -> Any:
    """A fresh namespace of torchrun's store for a worker group torchrun restarted; None: ``env://``.

    torchrun (c10d rendezvous) keeps one store for the whole job, and a restarted group finds the
    keys of the previous attempt in it: a rank can read the address that a dead rank published
    and fail to connect (pytorch/pytorch#135712; seen here one restart in three). On one node every
    worker has the same ``TORCHELASTIC_RESTART_COUNT``, so each attempt gets its own prefix. Across
    nodes the counts can differ (each agent counts its own restarts); there a warning says to
    launch with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (a new store for every attempt).
    """
    attempt = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if _env_int("GROUP_WORLD_SIZE", 1) > 1:
        if rank_ == 0 and _env_int("TORCHELASTIC_MAX_RESTARTS", 0) > 0:
            log.warning(
                "torchrun --max-restarts on %s nodes: a restarted job can fail to connect (torchrun's shared "
                "store keeps the previous attempt's addresses); launch with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1",
                os.environ["GROUP_WORLD_SIZE"],
            )
        return None
    if attempt == 0:
        return None
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world,
        is_master=False,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return dist.PrefixStore(f"xvit/attempt_{attempt}/", store)


def cleanup() -> None:
    """Destroy the process group if one was started."""
    global _wait_group, _control_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _wait_group = _control_group = None


def control_group() -> Any:
    """The gloo group of the step-boundary agreement (``xvit.engine.train.preempt``); None in one process."""
    return _control_group if is_dist() else None


# ----------------------------------------------------------------------------------------------
# heartbeat, progress and the message of a failed collective


def _store() -> Any:
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - no store (not initialised, or a torch without it)
        return None


def _start_heartbeat(rank_: int) -> None:
    store = _store()
    if store is None:
        return

    def beat() -> None:
        while True:
            try:
                store.set(f"xvit/beat/{rank_}", str(time.time()))
            except Exception:  # noqa: BLE001 - the store is gone: the job is ending
                return
            time.sleep(HEARTBEAT_S)

    threading.Thread(target=beat, name="xvit-heartbeat", daemon=True).start()


def set_progress(what: str) -> None:
    """Publish where this rank is (e.g. ``epoch 0 step 3``); a failure message names the rank behind."""
    global _progress
    if not is_dist():
        return
    _progress += 1
    store = _store()
    if store is not None:
        try:
            store.set(f"xvit/progress/{rank()}", json.dumps({"n": _progress, "what": what}))
        except Exception:  # noqa: BLE001 - reported when a collective fails
            pass


def describe_peers(wait_s: float = 2.5 * HEARTBEAT_S) -> str:
    """Which other rank is dead (no heartbeat for ``wait_s``) or stuck (behind the others), in words."""
    store, me, world = _store(), rank(), world_size()
    if store is None:
        return "the other ranks cannot be asked (no rendezvous store)"
    try:
        store.set_timeout(datetime.timedelta(seconds=5))
        deadline = time.time() + wait_s
        while True:
            beats = {r: float(store.get(f"xvit/beat/{r}")) for r in range(world) if r != me}
            dead = [r for r, t in beats.items() if time.time() - t > wait_s]
            if dead or time.time() > deadline:
                break
            time.sleep(0.5)
        progress = {}
        for r in range(world):
            if store.check([f"xvit/progress/{r}"]):
                progress[r] = json.loads(store.get(f"xvit/progress/{r}"))
    except Exception:  # noqa: BLE001 - the store's host is gone too
        return "the rendezvous store does not answer (rank 0 or the launcher died?)"
    if dead:
        return "; ".join(
            f"rank {r} is dead (no heartbeat for {time.time() - beats[r]:.0f} s"
            + (f"; last progress: {progress[r]['what']})" if r in progress else ")")
            for r in dead
        )
    if progress:
        low = min(p["n"] for p in progress.values())
        behind = [r for r, p in progress.items() if p["n"] == low and r != me]
        if behind and low < progress.get(me, {"n": low})["n"]:
            return "; ".join(f"rank {r} is alive but stuck (last progress: {progress[r]['what']})" for r in behind)
    return "every other rank still has a heartbeat: a network problem, or a rank stuck in the same step"


def is_peer_failure(err: BaseException) -> bool:
    """Whether ``err`` looks like a failed collective (a peer died, hung, or the network broke)."""
    if not is_dist():
        return False
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        k in text for k in ("gloo", "Gloo", "NCCL", "Connection", "connection", "Timed out", "timed out", "peer")
    )


def peer_failure(err: BaseException, timeout_s: float) -> str:
    """The one-line message of a failed collective, naming the rank that died or hung."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"DDP rank {rank()}: a collective operation failed ({first[:200]}); {describe_peers()}. "
        f"The whole job stops (train.dist_timeout_s={timeout_s:g}); see that rank's log, then run the "
        "same command again to resume from the last checkpoint"
    )


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``model`` under ``DistributedDataParallel`` when the job has several processes, else itself."""
    if info.world_size == 1:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    """True on rank 0 (and single-process): the process that logs and writes files."""
    return rank() == 0


def barrier(wait: bool = False) -> None:
    """All ranks meet here. ``wait``: the other ranks may wait long for rank 0 (``wait_timeout_s``)."""
    if is_dist():
        if wait and _wait_group is not None:
            dist.barrier(group=_wait_group)
        else:
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


def all_reduce_sum(value: int) -> int:
    """Sum of an integer over all processes."""
    if not is_dist():
        return int(value)
    out = torch.tensor([int(value)], dtype=torch.long, device=_comm_device())
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return int(out.item())


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj_rank0, obj_rank1, ...]`` on every process (pickled over the wire: trusted, in-job data only)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def on_main(write: Callable[[], None]) -> None:
    """Run ``write`` on rank 0 while the other ranks wait; a ``UserError`` it raises (a save that
    failed: ``xvit.engine.snapshot.SaveError``) is raised on every rank, so all stop alike."""
    error: UserError | None = None
    if is_main():
        try:
            write()
        except UserError as err:
            error = err
    message = all_gather_object(None if error is None else str(error))[0] if is_dist() else None
    if error is not None:
        raise error
    if message is not None:
        raise UserError(message)


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
