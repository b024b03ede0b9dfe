"""The compared models of one ``xvit train`` job trained side by side, each in a process of its own.

On a small CPU the micro models of the main job train faster with one torch thread each, side by
side, than with two threads in turn (2-core VMs, README: 64-78 clips/s per model side by side
against 83 for X-ViT alone with 2 threads on one; 100-111 per model on a faster one), and the job
ends in about two thirds of the time or less. ``train.parallel``:
``auto`` does it on the CPU, in one process (no ``torchrun``), when ``train.threads`` is unset and
there are at least as many cores as models; ``always`` (``train.threads``, or the cores split);
``never`` trains the models one after the other.

The parent prepares the data once (the synthetic set, the frame cache: what every model reads),
then starts one process per model (a fresh interpreter, ``python -c``: nothing inherited but the
environment, and no re-import of the caller's main module as ``multiprocessing``'s spawn would do)
with ``cores // models - data.num_workers`` torch threads and no progress bar of its own; the config
goes in on stdin, and a pipe of its own carries back, one JSON line each, its log lines (which name
the model), its optimizer steps, then its outcome. The parent prints the log lines and, with
``train.progress``, one bar over every model's steps. Each
child runs ``train_model`` exactly as a sequential job would (same recipe, seed, data order), so a
model's numbers are those of a sequential run with the same thread count.

The parent passes each stop signal on to the children (a scheduler may signal only the parent):
every model finishes its step and writes its snapshot, and running the same command again
continues all of them. A child whose parent is gone (``kill -9``) stops the same way rather than
train on unobserved. When a child fails, the others are stopped (after a snapshot) and the failure
is raised in the parent: a ``UserError`` as itself, anything else with the child's traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from xvit.engine import distributed as xdist
from xvit.engine.config import Config, config_from_dict, save_config
from xvit.engine.runtime import available_cores
from xvit.engine.train import preempt
from xvit.engine.train.prepare import attach_frame_cache, prepare_data, threads_per_process
from xvit.errors import UserError
from xvit.progress import progress_bar

log = logging.getLogger("xvit.train")

# glibc's malloc in each model's process (unless set already): keep freed blocks up to 32 MiB in the
# heap instead of unmapping them (a step's activations are allocated and freed again each step; the
# kernel then faults their pages in anew). Measured, the main job's two micro models side by side
# for 101 steps (2 runs each): 1.9 M -> 0.45 M minor page faults, system time 8.2 -> 3.4 s, wall 46.7 -> 45.0 s.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824", "MALLOC_TOP_PAD_": "67108864"}

TrainFn = Callable[..., dict]  # ``job.train_model(cfg, dist, top_config=None, signals=None, on_progress=None)``
PROGRESS_EVERY_S = 0.5  # a model's process reports its step at most this often (and at its last step)
# a model's process: ``job.train_model`` named here, not imported (job imports this module)
CHILD = (
    "from xvit.engine.train.job import train_model; "
    "from xvit.engine.train.side_by_side import child_main; child_main(train_model)"
)


def wanted(cfg: Config, dist: xdist.DistInfo, models: int) -> bool:
    """Whether the ``models`` of ``cfg``'s job train side by side (``train.parallel``, module docstring)."""
    mode = cfg.train.parallel
    if mode == "never" or models < 2:
        return False
    if dist.world_size > 1:
        if mode == "always":
            raise UserError(
                f"train.parallel=always trains the compared models in processes of their own, which needs one "
                f"process; this job runs under torchrun with {dist.world_size}: set train.parallel=never or auto"
            )
        return False
    if mode == "always":
        return True
    return dist.device.type == "cpu" and cfg.train.threads is None and available_cores() >= models


def child_threads(cfg: Config, models: int) -> int:
    """Torch threads of each model's process: ``train.threads``, or the cores split between the models
    less each one's data-loader workers (at least 1)."""
    return cfg.train.threads or threads_per_process(cfg, models)


def run(cfg: Config, subs: list[Config], dist: xdist.DistInfo, signals: preempt.StopSignals) -> list[dict]:
    """Train ``subs`` (the job's per-model configs) side by side; their results in ``subs``' order.

    A run that a stop signal ended has ``signal`` in its result, as in a sequential job; so has a
    model whose process a signal ended before its training began (no snapshot: it starts afresh).
    """
    prepare_shared_data(cfg, dist)
    threads = child_threads(cfg, len(subs))
    subs = [dataclasses.replace(s, train=dataclasses.replace(s.train, threads=threads, progress=False)) for s in subs]
    top = Path(cfg.run_dir).expanduser()
    top.mkdir(parents=True, exist_ok=True)
    save_config(cfg, top / "config.yaml")
    log.info(
        "training %s side by side, one process each with %d torch thread%s (train.parallel=%s; never: one after "
        "the other); their log lines carry the model's name",
        ", ".join(s.model.name for s in subs),
        threads,
        "" if threads == 1 else "s",
        cfg.train.parallel,
    )
    children: list[_Child] = []
    board = _Board(children, cfg.train.progress)
    failure: BaseException | None = None
    with preempt.catch_stop_signals(signals, cfg.train.stop_signals):
        try:
            for sub in subs:
                children.append(_Child(sub))
                signals.forward.append(children[-1].proc.pid)
                if signals.signum:  # a stop came while this child started: pass it on now
                    children[-1].signal(signals.signum)
            for child in _as_they_end(children, board):
                signals.forward.remove(child.proc.pid)  # ended: its pid may soon be another process's
                kind = child.outcome[0]
                if kind == "died" and signals.signum:  # a stop ended it before its handlers were set
                    child.outcome = ("ok", {"model": child.name, "stopped": True, "signal": signals.signum,
                                            "global_step": 0, "snapshot": None})  # fmt: skip
                elif kind != "ok" and failure is None:
                    failure = _failure(child)
                    running = [c for c in children if c.outcome is None]
                    if running:
                        log.warning(
                            "%s failed: stopping %s after a snapshot (running the same command again continues them)",
                            child.name,
                            ", ".join(c.name for c in running),
                        )
                    for other in running:
                        other.signal(signal.SIGTERM)
        finally:
            for child in children:
                child.end(board)
            board.close()
            signals.forward.clear()
    if failure is not None:
        raise failure
    return [child.outcome[1] for child in children]


def prepare_shared_data(cfg: Config, dist: xdist.DistInfo) -> None:
    """What every model's process would otherwise do at once: generate the synthetic set, check the
    data and labels, and fill a disk frame cache (a memory cache is each process's own)."""
    _, train_set, val_set, _, _ = prepare_data(cfg, dist)
    if cfg.data.cache == "disk":
        attach_frame_cache(cfg, dist, train_set, val_set)


class _Board:
    """What the job's process shows while its models train: their log lines and, with ``progress``,
    one bar over all their optimizer steps (each model's step and total beside it)."""

    def __init__(self, children: list[_Child], progress: bool) -> None:
        self.children = children
        self.bar = progress_bar(total=0, desc="training", unit="step", leave=True) if progress else None

    def line(self, text: str, file=None) -> None:
        """Print a model's line (stderr: a log line; ``sys.stdout``: what it printed) above the bar."""
        file = file or sys.stderr
        if self.bar is not None:
            self.bar.write(text, file=file)
        else:
            print(text, file=file, flush=True)

    def progress(self, child: _Child, step: int, total: int) -> None:
        """``child`` reports ``step`` of ``total``; a resumed model's first report adds its earlier
        steps to the bar as done before it started (they do not count in its rate)."""
        first, child.step, child.total = not child.total, step, total
        if self.bar is None:
            return
        bar, known = self.bar, [c for c in self.children if c.total]
        if first and step > 1:
            bar.n, bar.last_print_n, bar.initial = bar.n + step - 1, bar.last_print_n + step - 1, bar.initial + step - 1
        bar.total = sum(c.total for c in known)
        bar.set_postfix_str(", ".join(f"{c.name} {c.step}/{c.total}" for c in known), refresh=False)
        bar.update(sum(c.step for c in known) - bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Child:
    """One model's process: its config sent on stdin; its log lines, steps and outcome read from a
    pipe (``child_main``), one JSON message per line."""

    def __init__(self, cfg: Config):
        self.name = cfg.model.name
        self.outcome: tuple | None = None  # set when the process has ended
        self.step = self.total = 0  # its last reported optimizer step, of total (0: none reported yet)
        self._partial, self._result = b"", None
        read, write = os.pipe()
        env = {**MALLOC, **os.environ}  # xvit importable in the child as it is here, installed or not
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[3]), env.get("PYTHONPATH")]))
        payload = {"config": cfg.to_dict(), "parent": os.getpid(), "level": logging.getLogger().getEffectiveLevel()}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(write)], stdin=subprocess.PIPE, pass_fds=(write,), env=env
            )
        finally:
            os.close(write)  # the child holds the only writing end: its exit reads as the end of the pipe
        self.pipe = os.fdopen(read, "rb", buffering=0)
        with contextlib.suppress(BrokenPipeError):  # it died at once: its end says so
            self.proc.stdin.write(json.dumps(payload).encode())
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()

    def read(self, board: _Board) -> bool:
        """Read what is there (log lines to ``board``, steps to its bar, the outcome kept); True once
        the process has closed the pipe (and ended)."""
        chunk = self.pipe.read(1 << 16)
        if chunk:
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            for line in filter(None, lines):
                kind, *rest = json.loads(line)
                if kind in ("log", "out"):
                    board.line(rest[0], sys.stdout if kind == "out" else sys.stderr)
                elif kind == "progress":
                    board.progress(self, *rest)
                else:
                    self._result = (kind, *rest)
            return False
        self.proc.wait()
        self.outcome = self._result or ("died", self.proc.returncode)
        return True

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # send_signal skips a process already reaped
            self.proc.send_signal(signum)

    def end(self, board: _Board) -> None:
        """The parent is done (or leaving on an exception): a process still running stops (its last
        log lines still shown), then ends."""
        if self.outcome is None:  # running, or ended and not read to the end of its pipe
            self.signal(signal.SIGTERM)
            deadline = time.monotonic() + 60
            with selectors.DefaultSelector() as selector:
                selector.register(self.pipe, selectors.EVENT_READ)
                while (left := deadline - time.monotonic()) > 0 and selector.select(left) and not self.read(board):
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        self.pipe.close()


def _as_they_end(children: list[_Child], board: _Board):
    """Each child once its process has ended, in the order they end (what they send meanwhile goes
    to ``board``)."""
    with selectors.DefaultSelector() as selector:
        for child in children:
            selector.register(child.pipe, selectors.EVENT_READ, child)
        while selector.get_map():
            for key, _ in selector.select():
                if key.data.read(board):
                    selector.unregister(key.fileobj)
                    yield key.data


def _failure(child: _Child) -> BaseException:
    kind, detail = child.outcome[0], child.outcome[1:]
    if kind == "user":
        return UserError(detail[0])
    if kind == "interrupted":
        return KeyboardInterrupt()
    if kind == "died":
        code = detail[0]
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        return RuntimeError(f"the process training {child.name} ended by {how} without a result (its log is above)")
    return RuntimeError(f"training {child.name} failed in its process:\n{detail[0]}")


class _ToParent:
    """A model's end of its pipe: one JSON message per line, ``["log", text]`` (a log line), ``["out",
    text]`` (a line it printed), ``["progress", step, total]``, and last the outcome. Once the parent
    is gone, nothing more is sent (``send``: False)."""

    def __init__(self, fd: int) -> None:
        self.file = os.fdopen(fd, "w", buffering=1)  # line-buffered: a message is written when complete
        self.lock = threading.Lock()  # log lines may come from any thread (the parent watch)
        self.open = True

    def send(self, *message) -> bool:
        with self.lock:
            if self.open:
                try:
                    self.file.write(json.dumps(message) + "\n")
                except (BrokenPipeError, ValueError):  # the parent is gone / the pipe closed
                    self.open = False
            return self.open

    def progress_every(self, seconds: float) -> Callable[[int, int], None]:
        """An ``on_progress`` that reports a step at most every ``seconds``, and always the last."""
        last = [float("-inf")]

        def report(step: int, total: int) -> None:
            now = time.monotonic()
            if step >= total or now - last[0] >= seconds:
                last[0] = now
                self.send("progress", step, total)

        return report


class _LogToParent(logging.Handler):
    """A model's log lines, formatted here, printed by the job's process (stderr once it is gone)."""

    def __init__(self, out: _ToParent) -> None:
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own policy for a record that cannot be formatted
            self.handleError(record)
            return
        if not self.out.send("log", text):
            print(text, file=sys.stderr, flush=True)


class _StdoutToParent(io.TextIOBase):
    """A model's ``sys.stdout``: each line it prints is printed by the job's process (here once it is gone)."""

    encoding = "utf-8"  # what code that asks a stream for its encoding gets (JSON carries any text)

    def __init__(self, out: _ToParent) -> None:
        self.out, self.partial = out, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            if not self.out.send("out", line):
                print(line, file=sys.__stdout__, flush=True)
        return len(text)


def child_main(fn: TrainFn) -> None:
    """A model's process (``CHILD``): read the config, train with ``fn``; on the pipe whose descriptor
    is ``sys.argv[1]`` (``_ToParent``) its log lines and steps, then its outcome: ``["ok", result]``,
    ``["user", message]`` (a ``UserError``), ``["interrupted"]`` or ``["error", traceback]``."""
    payload = json.load(sys.stdin)
    cfg = config_from_dict(payload["config"])
    out = _ToParent(int(sys.argv[1]))
    handler = _LogToParent(out)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s %(name)s [{cfg.model.name}]: %(message)s", datefmt="%H:%M:%S")
    )
    logging.basicConfig(level=payload["level"], handlers=[handler])
    sys.stdout = _StdoutToParent(out)
    _watch_parent(payload["parent"])
    try:
        dist = xdist.init_distributed(cfg.train.device, timeout_s=cfg.train.dist_timeout_s)
        signals = preempt.StopSignals(loud=False)
        outcome: list = ["ok", fn(cfg, dist, signals=signals, on_progress=out.progress_every(PROGRESS_EVERY_S))]
    except UserError as err:
        outcome = ["user", str(err)]
    except KeyboardInterrupt:  # stop_signals without SIGINT: Ctrl-C ends the job, as in one process
        outcome = ["interrupted"]
    except Exception:
        outcome = ["error", traceback.format_exc()]
    out.send(*outcome)


def _watch_parent(parent: int) -> None:
    """A child whose parent died (``kill -9``, out of memory) asks itself to stop: it writes its
    snapshot and exits instead of training on with nobody to collect its result."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        log.warning("the job's process (pid %d) is gone: stopping after a snapshot", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="xvit-parent-watch", daemon=True).start()
