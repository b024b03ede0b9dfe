"""Preemption under DDP (gloo, 2 CPU processes, torchrun): a stop signal that reaches one rank stops
every rank at the same step after one snapshot, and the resumed run ends bit-identical to an
uninterrupted 2-process run; torchrun ``--max-restarts`` restarts a killed worker and the job
continues from its last snapshot by itself, to the same weights. Both resume in torchrun's
restart of the worker group (one launch per test).

The faults are injected in rank 1 by ``tests/ddp_fault.py``; the runs are those of
``tests/test_train_ddp.py`` (14 training videos, global batch 4: 2 epochs x 3 steps).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_ddp import _overrides

from xvit.engine.train.resume import last_state
from xvit.errors import EXIT_STOPPED


def _torchrun(
    run_dir: Path, cache: Path, *, fault: str | None = None, restarts: int = 0, **extra
) -> subprocess.CompletedProcess:
    """torchrun with 2 gloo workers in a process group of its own, all ended if it outlives 240 s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    env.pop("WORLD_SIZE", None)
    if fault:
        env["XVIT_TEST_FAULT"] = fault
    program = [str(Path(__file__).with_name("ddp_fault.py"))] if fault else ["-m", "xvit", "train"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [f"--max-restarts={restarts}", *program, *_overrides(cache, run_dir, 2, **extra)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: nothing outlives the test
        out, err = proc.communicate()
        pytest.fail(f"torchrun hung; its log:\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = (load_file(str(d / "checkpoints" / "last.safetensors")) for d in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp_preempt")


@pytest.fixture(scope="module")
def uninterrupted(cache) -> Path:
    run_dir = cache / "uninterrupted"
    proc = _torchrun(run_dir, cache)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir


def test_a_signal_on_one_rank_stops_both_at_one_step_and_resume_is_bit_exact(cache, uninterrupted):
    """Rank 1 alone gets SIGTERM after step 4; the ranks agree at the next boundary: both stop after
    step 5 (epoch 1, 2 of 3 steps; no other snapshot in the epoch), rank 0 writes the snapshot and
    says so, the workers exit with 75; torchrun's restart continues from that snapshot."""
    run_dir = cache / "stopped"
    proc = _torchrun(run_dir, cache, fault="term_once", restarts=1, **{"train.ckpt_every_steps": 0})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ddp_fault: rank 1 term_onces after step 4" in proc.stderr, proc.stderr[-4000:]
    assert f"failed (exitcode: {EXIT_STOPPED})" in proc.stderr  # torchrun's report of a worker
    lines = [ln for ln in proc.stderr.splitlines() if "xvit train: stopped by SIGTERM" in ln]
    assert len(lines) == 1 and "after global step 5 " in lines[0], proc.stderr[-4000:]  # rank 0's line only
    assert "resumed" in proc.stderr and "step 2 of the epoch (global step 5)" in proc.stderr
    assert _same_weights(run_dir, uninterrupted)
    res, ref = (json.loads((d / "results.json").read_text()) for d in (run_dir, uninterrupted))
    assert res["top1"] == ref["top1"] and res["global_step"] == 6


def test_torchrun_restarts_a_killed_worker_and_the_job_resumes_by_itself(cache, uninterrupted):
    """Rank 1 is SIGKILLed after step 3 (snapshots every 2 steps); torchrun restarts both workers, which
    continue from the snapshot of step 2 (``train.resume: auto``) and finish: one command, no human."""
    run_dir = cache / "restarted"
    proc = _torchrun(run_dir, cache, fault="kill_once", restarts=1)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ddp_fault: rank 1 kill_onces after step 3" in proc.stderr
    assert "step 2 of the epoch (global step 2)" in proc.stderr, proc.stderr[-4000:]  # resumed after the restart
    assert _same_weights(run_dir, uninterrupted)
    assert last_state(run_dir)["global_step"] == 6
