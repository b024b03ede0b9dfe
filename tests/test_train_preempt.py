"""Preemption-safe training: a stop signal ends a run after a snapshot of the step it reached and
``--resume`` continues it to the weights of an uninterrupted run, bit for bit; the snapshot clock;
a save that fails keeps the previous snapshot.

Signals are sent by the test at chosen moments (after an optimizer step, inside a save, inside an
evaluation), or, in the subprocess test, from outside to the whole process group, data-loader
workers included, as Ctrl-C or SLURM do.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_crash import COMMON as CRASH_RUN
from test_train_e2e import tiny, tiny_overrides  # noqa: F401 - tiny: the module's fixture

from xvit.cli import main
from xvit.engine import snapshot
from xvit.engine.config import load_config
from xvit.engine.eval import evaluate as evaluate_module
from xvit.engine.train import loop
from xvit.engine.train.resume import find_checkpoint, last_state
from xvit.errors import EXIT_STOPPED, UserError

# the crash-consistency test's tiny run (random crops and clip starts, mixup, drop path: the RNG
# states must be restored exactly), 2 epochs x 4 steps (8 videos, batch 2), no checkpoint but at
# the epochs' ends, an evaluation after epoch 1 (4 batches of 2 videos)
COMMON = {**CRASH_RUN, "train__epochs": 2, "train__ckpt_every_steps": 0, "eval__every": 1, "eval__batch_size": 2}
STRIP = ("time", "clips_per_s", "time_s", "steps")  # what depends on the session (speed, steps done in it)


def _train(root: Path, run_dir: Path, *flags: str, **extra) -> int:
    return main(["train", *tiny_overrides(root, run_dir, **{**COMMON, **extra}), *flags])


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "last.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k not in STRIP} for ln in lines]


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory) -> Path:  # noqa: F811
    run_dir = tmp_path_factory.mktemp("preempt") / "uninterrupted"
    assert _train(tiny, run_dir) == 0
    return run_dir


def _signal_after_step(monkeypatch, step: int, signum: int) -> None:
    """This process gets ``signum`` right after its ``step``-th optimizer step (inside the step)."""
    real, calls = loop._optimizer_step, []

    def step_then_signal(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(loop, "_optimizer_step", step_then_signal)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_snapshots_the_step_and_resume_is_bit_exact(
    tiny,  # noqa: F811
    uninterrupted,
    tmp_path,
    monkeypatch,
    capfd,
    caplog,
    request,
    signum,
):
    """Stopped after step 3 of 8 (mid-epoch 0), a second signal arriving inside the snapshot's write."""
    run_dir = tmp_path / "stopped"
    if signal.getsignal(signum) == signal.SIG_IGN:  # pytest started in a background job: SIGINT ignored,
        previous = signal.signal(signum, signal.default_int_handler)  # which a run leaves ignored (tested)
        request.addfinalizer(lambda: signal.signal(signum, previous))
    handler_before = signal.getsignal(signum)
    _signal_after_step(monkeypatch, 3, signum)
    real_write = snapshot._write_state

    def write_signalled_again(path, state):
        os.kill(os.getpid(), signum)  # handled between two bytecodes of the save: it must not cut it
        real_write(path, state)

    monkeypatch.setattr(snapshot, "_write_state", write_signalled_again)
    assert _train(tiny, run_dir, train__tensorboard=True) == EXIT_STOPPED
    err = capfd.readouterr().err
    name = signal.Signals(signum).name
    line = next(ln for ln in err.splitlines() if ln.startswith("xvit train: stopped"))
    assert f"stopped by {name} after global step 3 of xvit_nano_patch8_32" in line, err
    assert f"snapshot {run_dir / 'checkpoints' / 'step_000000003'}" in line and "--resume" in line
    assert f"{name} received: finishing this step" in err and f"{name} received: already stopping" in err
    assert "Traceback" not in err
    state = last_state(run_dir)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 3, 3)
    assert not [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not (run_dir / "results.json").exists()
    assert signal.getsignal(signum) is handler_before  # restored at the end of the job

    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="xvit.train"):
        assert _train(tiny, run_dir, "--resume", train__tensorboard=True) == 0
    assert "step 3 of the epoch (global step 3)" in caplog.text
    assert _same_weights(run_dir, uninterrupted)
    assert _records(run_dir) == _records(uninterrupted)  # every step, epoch and val record once, equal
    # TensorBoard too: the resumed session hides what came after the snapshot, never the snapshot's own step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train_step/loss")] == list(range(1, 9))


def test_a_stop_during_an_evaluation_resumes_with_it(tiny, uninterrupted, tmp_path, monkeypatch):  # noqa: F811
    """SIGTERM inside the evaluation after epoch 1: it stops at its next batch, the epoch's snapshot
    says the evaluation is pending, and the resumed run evaluates first (same val record)."""
    run_dir = tmp_path / "stopped"
    real_forward = evaluate_module.forward_views

    def forward_signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "forward_views", forward_signalled)
    assert _train(tiny, run_dir) == EXIT_STOPPED
    state = last_state(run_dir)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"], state["eval_pending"]) == (1, 0, 4, True)
    assert "val" not in {r["kind"] for r in _records(run_dir)}
    monkeypatch.undo()
    assert _train(tiny, run_dir, "--resume") == 0
    assert _same_weights(run_dir, uninterrupted)
    assert _records(run_dir) == _records(uninterrupted)


def test_a_failed_save_keeps_the_previous_snapshot_and_the_run_resumes(
    tiny,  # noqa: F811
    uninterrupted,
    tmp_path,
    monkeypatch,
    capfd,
):
    """The disk fills up in the second checkpoint's write (the one at the end of epoch 0, step 4)."""
    run_dir = tmp_path / "full"
    real_write, calls = snapshot._write_state, []

    def write_until_full(path, state):
        calls.append(1)
        if len(calls) == 2:
            Path(path).write_bytes(b"x" * 1000)  # what fitted before the disk was full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, state)

    monkeypatch.setattr(snapshot, "_write_state", write_until_full)
    assert _train(tiny, run_dir, train__ckpt_every_steps=2) == 2
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if "xvit train: error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    print(lines[0])
    folder = run_dir / "checkpoints"
    assert f"could not write {folder / 'step_000000004'}: No space left on device (errno 28)" in lines[0]
    assert (
        " free in " in lines[0]
        and f"the newest complete checkpoint, {folder / 'step_000000002'}, is intact" in lines[0]
    )
    # the previous snapshot is readable and nothing of the failed one is left
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.safetensors",
        "last.safetensors",
        "latest",
        "step_000000002",
    ]
    assert (folder / "latest").read_text().strip() == "step_000000002" and last_state(run_dir)["global_step"] == 2
    assert find_checkpoint(run_dir)[0] == folder / "step_000000002" / "model.safetensors"
    monkeypatch.undo()
    assert _train(tiny, run_dir, "--resume", train__ckpt_every_steps=2) == 0
    assert _same_weights(run_dir, uninterrupted)


def test_the_snapshot_clock(tiny, tmp_path):  # noqa: F811
    """``train.ckpt_every_minutes``: a snapshot at every step boundary once the time has passed; 0: none.

    ``stop_after_steps=3`` ends the run abruptly after step 3, without a checkpoint of its own.
    """
    assert _train(tiny, tmp_path / "clock", train__ckpt_every_minutes=1e-9, train__stop_after_steps=3) == 0
    assert last_state(tmp_path / "clock")["global_step"] == 2
    assert _train(tiny, tmp_path / "off", train__ckpt_every_minutes=0, train__stop_after_steps=3) == 0
    assert find_checkpoint(tmp_path / "off") is None


def test_stop_signals_are_checked_and_can_be_turned_off():
    assert load_config(None, ["train.stop_signals=[TERM, sigusr2]"]).train.stop_signals == ["TERM", "sigusr2"]
    for bad in ("[SIGKILL]", "[SIGNOPE]"):
        with pytest.raises(UserError, match="train.stop_signals: .* is not a signal a process can catch"):
            load_config(None, [f"train.stop_signals={bad}"])
    with pytest.raises(UserError, match="train.ckpt_every_minutes=-1.0 must be >= 0"):
        load_config(None, ["train.ckpt_every_minutes=-1"])


def test_a_signal_the_process_ignores_stays_ignored():
    """A shell starts a background job with SIGINT ignored (so that Ctrl-C reaches only the
    foreground): catching the stop signals leaves it so, as Python does."""
    from xvit.engine.train.preempt import StopSignals, catch_stop_signals

    before = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        with catch_stop_signals(StopSignals(), ["SIGUSR1", "SIGUSR2"]):
            assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGUSR2) not in (signal.SIG_IGN, signal.SIG_DFL)
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # put back
    finally:
        signal.signal(signal.SIGUSR1, before)


# ---------------------------------------------------------------------------------------- from outside

LONG = dict(train__epochs=2, data__num_workers=2, eval__enabled=False)  # 16 steps per epoch (overfit4.txt)


def test_sigterm_to_the_process_group_stops_the_run_and_resume_is_bit_exact(tiny, tmp_path):  # noqa: F811
    """``kill -TERM -PGID`` (the run and its 2 data-loader workers, as SLURM and Ctrl-C signal them)
    mid-epoch: the run ends with status 75 well within a grace period, no worker is left and none
    dies noisily; ``xvit train --resume`` ends with the weights of an uninterrupted run."""
    data = {"data__train_annotations": str(tiny / "overfit4.txt"), "data__val_annotations": str(tiny / "overfit.txt")}
    assert _train(tiny, tmp_path / "uninterrupted", **LONG, **data) == 0
    run_dir = tmp_path / "stopped"
    argv = tiny_overrides(tiny, run_dir, **{**COMMON, **LONG, **data})
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "xvit", "train", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job's
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count('"train_step"') >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)  # Kubernetes' default grace period
    print(
        f"SIGTERM to the process group: the run ended {time.monotonic() - sent:.2f} s later, status {proc.returncode}"
    )
    assert proc.returncode == EXIT_STOPPED, err[-3000:]
    assert "Traceback" not in err and "DataLoader worker" not in err, err[-3000:]
    line = next(ln for ln in err.splitlines() if ln.startswith("xvit train: stopped by SIGTERM"))
    step = last_state(run_dir)["global_step"]
    assert 3 <= step < 16 and f"after global step {step} " in line, line  # mid-epoch 0
    for _ in range(50):  # the workers went with the run (they end before it does; allow the kernel a moment)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a process of the run's group outlived it")
    assert _train(tiny, run_dir, "--resume", **LONG, **data) == 0
    assert _same_weights(run_dir, tmp_path / "uninterrupted")


def test_a_stopped_study_records_no_result_for_the_stopped_run(tmp_path, monkeypatch, capfd):
    """``xvit reproduce`` trains in-process: a stop signal ends the study with status 75 and the
    stopped run's snapshot, and no record, so that running the study again continues that run."""
    from test_reproduce import SCRATCH
    from test_reproduce import tiny as tiny_study

    _signal_after_step(monkeypatch, 2, signal.SIGTERM)
    out = tmp_path / "study"
    args = ["reproduce", "table2", *SCRATCH, "--seeds", "1", "--out", str(out), *tiny_study(tmp_path)]
    assert main(args) == EXIT_STOPPED
    assert "xvit train: stopped by SIGTERM after global step 2" in capfd.readouterr().err
    assert not list((out / "records").glob("*.json")) if (out / "records").exists() else True
    (run_dir,) = (out / "runs").iterdir()
    assert last_state(run_dir)["global_step"] == 2


class _Numbers(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1000

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(i)


def test_a_loader_worker_ignores_the_stop_signals_of_others_but_not_its_parents_sigterm():
    """What ``worker_init`` gives the run's data-loader workers: SIGTERM and SIGINT from another
    process (a process group signalled) leave a worker serving batches; SIGTERM from its own
    parent (the loader ending a stuck worker, or the interpreter's exit) still ends it."""
    from xvit.engine.train.preempt import worker_init

    loader = torch.utils.data.DataLoader(
        _Numbers(), batch_size=4, num_workers=1, worker_init_fn=worker_init(["SIGTERM", "SIGINT", "SIGUSR1"])
    )
    batches = iter(loader)
    assert next(batches).tolist() == [0, 1, 2, 3]
    (worker,) = batches._workers
    for name in ("TERM", "INT", "USR1"):  # sent by another process (kill), as a scheduler or a shell does
        subprocess.run(["kill", f"-{name}", str(worker.pid)], check=True)
    time.sleep(0.5)
    assert worker.is_alive() and next(batches).tolist() == [4, 5, 6, 7]
    os.kill(worker.pid, signal.SIGTERM)  # from its parent, this process
    worker.join(5)
    assert worker.exitcode == 0
    del batches
