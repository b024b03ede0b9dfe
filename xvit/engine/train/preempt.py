"""Preemption-safe training: a run told to stop finishes its step, writes a snapshot and exits; a
snapshot also every ``train.ckpt_every_minutes``.

Schedulers give notice before they end a job: SLURM sends SIGTERM at a time limit, on preemption
or ``scancel`` (and the signal of ``--signal``, often SIGUSR1, some time before), Kubernetes and
``docker stop`` send SIGTERM and wait a grace period (30 s, 10 s) before SIGKILL, and Ctrl-C is
SIGINT. While a run trains, ``catch_stop_signals`` turns each of ``train.stop_signals`` into a
request (``StopSignals``): the run finishes the optimizer step in progress, writes a step snapshot
(``xvit.engine.snapshot.commit``, atomic), closes its logs and exits with ``EXIT_STOPPED``. More
signals change nothing: the snapshot being written is finished (a ``kill -9`` is safe too: the
newest complete snapshot stays). The data loader's worker processes get the same signals when a
whole process group is signalled (Ctrl-C, SLURM); ``worker_init`` makes them ignore these, so they
go on serving batches until the run shuts them down.

``StepGate`` is what every rank decides at an optimizer step boundary: stop (a signal reached any
rank) and snapshot (``train.ckpt_every_minutes`` have passed on rank 0's clock since the last
snapshot). In one process that is reading two numbers. Under DDP the ranks agree through an
all-reduce (max) of those two numbers on a gloo group of their own (``xvit.engine.distributed``),
started at one boundary and read at the next: it runs while the next step computes, so no rank
waits for it, and every rank stops (or snapshots) at the same step, one step after one process
would. Evaluation polls the same gate once per batch (``StepGate.until_stop``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from xvit.engine import distributed as xdist
from xvit.engine import snapshot
from xvit.engine.config import signal_number
from xvit.errors import EXIT_STOPPED


def signal_name(number: int) -> str:
    return signal.Signals(number).name if number else "no signal"


def _say(text: str) -> None:
    """One line on stderr from a signal handler (a raw write: never re-enters a buffered stream)."""
    with contextlib.suppress(OSError):
        os.write(2, f"{text}\n".encode())


class StopSignals:
    """The stop signals this process received while ``catch_stop_signals`` was active."""

    def __init__(self, loud: bool | None = None) -> None:
        """``loud``: say on stderr what a signal does (default: on rank 0)."""
        self.signum = 0  # the first stop signal received (0: none)
        self.count = 0  # how many
        self.quiet = False  # the run has stopped: later signals are ignored until ``restore``
        self.forward: list[int] = []  # processes each signal is passed on to (``side_by_side``'s models)
        self._previous: dict[int, Any] = {}  # the handlers ``catch_stop_signals`` replaced
        self._pid = os.getpid()
        if loud is None:
            loud = xdist.rank() == 0 if xdist.is_dist() else os.environ.get("RANK", "0") == "0"
        self._loud = loud

    def restore(self) -> None:
        """Put back the handlers that ``catch_stop_signals`` replaced."""
        for number, handler in self._previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        self._previous, self.quiet = {}, False

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid or self.quiet:  # a forked data-loader worker inherited it: the run decides
            return
        for pid in self.forward:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        self.count += 1
        name = signal_name(signum)
        if self.count == 1:
            self.signum = signum
            text = f"finishing this step, then writing a snapshot and exiting (status {EXIT_STOPPED})"
        else:
            text = "already stopping: the step and its snapshot are being finished"
        if self._loud:
            _say(f"xvit train: {name} received: {text}; kill -9 is safe too (the newest complete snapshot stays)")


@contextlib.contextmanager
def catch_stop_signals(signals: StopSignals, names: Sequence[str]) -> Iterator[StopSignals]:
    """While active, each signal of ``names`` only records a stop request in ``signals``.

    The previous handlers come back on exit, unless a stop was requested: then the signals stay
    ignored until ``signals.restore()`` (at the end of ``xvit.engine.train.job.train``), so that a
    stopping process is not ended by the signals that torchrun or a scheduler send again while it
    exits. A signal this process was started ignoring (SIGINT in a shell's background job) stays
    ignored, as Python leaves it. Outside the main thread (where Python cannot set handlers)
    nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return
    for name in names:
        number = signal_number(name)
        if number is not None and number not in signals._previous and signal.getsignal(number) != signal.SIG_IGN:
            signals._previous[number] = signal.signal(number, signals._handle)
    try:
        yield signals
    finally:
        if signals.signum:
            signals.quiet = True
        else:
            signals.restore()


def _ignore_in_worker(numbers: tuple[int, ...], worker_id: int) -> None:
    """``worker_init_fn``: a data-loader worker survives the stop signals sent to its process group.

    It goes on serving batches until the run shuts the loader down (the run may need one more
    batch to finish its step). SIGTERM from the worker's own parent (the loader ending a stuck
    worker, or the interpreter's exit) still ends it, as torch's own worker handler does; a
    thread waits for SIGTERM to see who sent it.
    """
    for number in numbers:
        if number != signal.SIGTERM:
            signal.signal(number, signal.SIG_IGN)
    if signal.SIGTERM not in numbers:
        return
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: None)  # a thread that did not block it: harmless
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)

    threading.Thread(target=wait, name="xvit-worker-sigterm", daemon=True).start()


def worker_init(names: Sequence[str]):
    """The ``worker_init_fn`` of the run's data loaders (picklable, for any start method)."""
    numbers = tuple(n for n in (signal_number(name) for name in names) if n is not None)
    return functools.partial(_ignore_in_worker, numbers) if numbers else None


@dataclass(frozen=True)
class Decision:
    """What every rank does at a step boundary."""

    stop: int = 0  # the stop signal agreed on (its number; 0: go on)
    snapshot: bool = False  # the clock asks for a snapshot


_GO = Decision()


class StepGate:
    """Stop and clock decisions, taken alike by every rank at optimizer step boundaries (module docstring)."""

    def __init__(self, signals: StopSignals | None = None, every_minutes: float = 0.0):
        self.signals = signals or StopSignals()
        self.every_s = 60.0 * every_minutes
        self._clock = self.every_s > 0 and xdist.rank() == 0  # rank 0's clock decides for every rank
        self.stop = 0  # latched once agreed
        self._last_save = time.monotonic()
        self._saves = 0
        self._group = xdist.control_group()
        self._work: Any = None
        self._sent = torch.zeros(2, dtype=torch.int64)
        self._saves_at_send = 0

    def saved(self) -> None:
        """A snapshot was written: the clock starts again."""
        self._last_save = time.monotonic()
        self._saves += 1

    def _local(self) -> tuple[int, int]:
        due = self._clock and time.monotonic() - self._last_save >= self.every_s
        return self.signals.signum, int(due)

    def poll(self) -> Decision:
        """The decision at this boundary (under DDP: the one the ranks sent at the previous boundary)."""
        if self._group is None:
            signum, due = self._local()
            if not (signum or due or self.stop):
                return _GO
            self.stop = self.stop or signum
            return Decision(self.stop, bool(due))
        got = self.settle()
        self._sent = torch.tensor(self._local(), dtype=torch.int64)
        self._saves_at_send = self._saves
        self._work = dist.all_reduce(self._sent, op=dist.ReduceOp.MAX, group=self._group, async_op=True)
        return got

    def settle(self) -> Decision:
        """Wait for the agreement in flight (at an epoch's end, before exiting); no new one is started."""
        if self._group is None:
            self.stop = self.stop or self.signals.signum
            return Decision(self.stop, False)
        if self._work is None:
            return Decision(self.stop, False)
        self._work.wait()
        self._work = None
        signum, due = (int(v) for v in self._sent)
        self.stop = self.stop or signum
        return Decision(self.stop, bool(due) and self._saves == self._saves_at_send)  # a snapshot since: done

    def stopped(self, model: str, global_step: int, folder: Path) -> dict:
        """The result of a run that ended early, by a stop signal (after its snapshot in ``folder``)
        or by ``train.stop_after_steps`` (``signal`` 0)."""
        self.settle()
        newest = snapshot.newest(folder)
        return {
            "model": model,
            "stopped": True,
            "signal": self.stop,
            "global_step": global_step,
            "snapshot": str(newest) if newest else None,
        }

    def until_stop(self, loader: Any) -> _UntilStop:
        """``loader``'s batches until the ranks agree to stop (an evaluation that a stop cuts short)."""
        return _UntilStop(self, loader)


class _UntilStop:
    """The batches of a loader, polling the gate before each. Under DDP the ranks' loaders may differ
    in length (``ShardSampler``): a rank that runs out polls on until the longest is done, so every
    rank polls as often as the others."""

    def __init__(self, gate: StepGate, loader: Iterable):
        self.gate, self.loader = gate, loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        rounds = max(xdist.all_gather_object(len(self.loader)))
        batches, exhausted = iter(self.loader), False
        for _ in range(rounds):
            if self.gate.poll().stop:
                return
            batch = None if exhausted else next(batches, None)
            exhausted = batch is None
            if batch is not None:
                yield batch
