"""Crash consistency: a tiny deterministic run SIGKILLed again and again, at seeded random moments
(between steps, inside every part of a checkpoint commit, with half-written files, and at a few
timed moments), resumed each time, ends with the weights of an uninterrupted run, bit for bit,
and a ``metrics.jsonl`` with every step once.

Each attempt is a child process forked from a server that has torch and xvit imported already
(``multiprocessing`` forkserver), so that a restart costs a fork, not a Python start.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train_e2e import tiny, tiny_overrides  # noqa: F401 - tiny: the module's fixture

from xvit.engine.train.resume import find_checkpoint

MIN_KILLS, MAX_KILLS = 10, 14  # after MAX_KILLS the run may finish
STEPS = 32  # 8 epochs x 4 steps (8 videos, batch 2); a step takes >= 16 events, so an attempt
# killed by event 31 (40 for the timed ones) commits at most 2 (2.5) steps: 14 attempts cannot finish it

COMMON = dict(
    train__epochs=8,
    train__batch_size=2,
    train__deterministic=True,
    train__ckpt_every_steps=1,
    train__tensorboard=False,
    eval__every=2,
    data__num_frames=4,
    data__sampling="dense",
    data__frame_stride=1,
    data__short_side_range=[32, 40],
    train__mixup_alpha=0.4,
    train__label_smoothing=0.1,
    model__drop_path_rate=0.1,
    optim__name="sgd",
    optim__lr=0.05,
)


@pytest.fixture(scope="module")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "xvit.engine.train.job", "xvit.cli.train", "killpoints"])
    return ctx


def _attempt(ctx, argv: list[str], log: Path, *, kill_at: int | None = None, kill_after_s: float | None = None) -> int:
    import killpoints

    proc = ctx.Process(target=killpoints.run_train, args=(argv, kill_at, str(log)))
    proc.start()
    if kill_after_s is not None:
        proc.join(kill_after_s)
        if proc.exitcode is None:
            os.kill(proc.pid, 9)
    proc.join(300)
    assert proc.exitcode is not None, f"attempt hung; log:\n{log.read_text()[-3000:]}"
    return proc.exitcode


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_at_random_moments_resumes_bit_exact(tiny, tmp_path, forkserver):  # noqa: F811
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    assert _attempt(forkserver, tiny_overrides(tiny, ref_dir, **COMMON), tmp_path / "ref.log") == 0
    argv = tiny_overrides(tiny, run_dir, **COMMON)
    rng = np.random.default_rng(11)
    kills, resumed, where = 0, 0, []
    for attempt in range(80):
        log = tmp_path / f"attempt_{attempt:02d}.log"
        has_checkpoint = find_checkpoint(run_dir) is not None
        if kills >= MAX_KILLS:
            rc = _attempt(forkserver, argv, log)
        elif attempt % 5 == 4:  # a timed kill, wherever the run happens to be (by event 40 at the latest)
            rc = _attempt(forkserver, argv, log, kill_at=40, kill_after_s=float(rng.uniform(0.1, 0.6)))
        else:
            rc = _attempt(forkserver, argv, log, kill_at=int(rng.integers(1, 32)))
        text = log.read_text()
        assert rc in (0, -9), f"attempt {attempt} failed (rc {rc}):\n{text[-3000:]}"
        if has_checkpoint:  # every resume succeeds: it continues from the newest complete checkpoint
            assert "resumed " in text or "killpoints:" not in text and rc == -9, text[-3000:]
            resumed += "resumed " in text
        if rc == 0:
            break
        kills += 1
        where.append(next((ln.split("(")[-1].rstrip(")") for ln in text.splitlines() if "killpoints:" in ln), "timed"))
    else:
        pytest.fail("the killed run never finished")
    print(f"{kills} kills ({', '.join(where)}), {resumed} resumes")
    assert kills >= MIN_KILLS and resumed >= MIN_KILLS
    assert sum("half-written" in w for w in where) >= 2 and sum("_publish" in w or "_link" in w for w in where) >= 1

    ref = load_file(str(ref_dir / "checkpoints" / "last.safetensors"))
    got = load_file(str(run_dir / "checkpoints" / "last.safetensors"))
    assert ref.keys() == got.keys()
    worst = max((ref[k] - got[k]).abs().max().item() for k in ref)
    print(f"largest weight difference vs the uninterrupted run: {worst}")
    assert all(torch.equal(ref[k], got[k]) for k in ref)

    steps = [m["global_step"] for m in _metrics(run_dir) if m["kind"] == "train_step"]
    assert steps == list(range(1, STEPS + 1))  # each step once, in order
    strip = ("time", "clips_per_s", "time_s", "steps")  # what depends on the session (speed, steps done in it)
    clean = [{k: v for k, v in m.items() if k not in strip} for m in _metrics(run_dir)]
    assert clean == [{k: v for k, v in m.items() if k not in strip} for m in _metrics(ref_dir)]
    res, ref_res = (json.loads((d / "results.json").read_text()) for d in (run_dir, ref_dir))
    assert res["top1"] == ref_res["top1"] and res["global_step"] == STEPS

    folder = run_dir / "checkpoints"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # leftovers removed
    assert [p.name for p in folder.iterdir() if p.name.startswith("step_")] == [f"step_{STEPS:09d}"]
    umask = os.umask(0)
    os.umask(umask)
    for path in (folder / "last.safetensors", folder / "best.safetensors", folder / f"step_{STEPS:09d}" / "state.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_leftovers_of_interrupted_saves_are_removed_and_older_checkpoints_kept(tmp_path):
    """A half-done commit never shadows the previous complete checkpoint."""
    from xvit.engine import snapshot
    from xvit.engine.train.resume import find_checkpoint

    folder = tmp_path / "checkpoints"
    state = {"version": 2, "global_step": 3}
    snapshot.commit(folder, 3, lambda p: Path(p).write_bytes(b"weights3"), state)
    (folder / ".step_000000004.tmp-123").mkdir()  # a commit killed before its rename
    (folder / ".step_000000004.tmp-123" / "model.safetensors").write_bytes(b"half")
    (folder / ".best.safetensors.9-ab.tmp").write_bytes(b"half")
    (folder / "step_000000005").mkdir()  # a directory without its state: never a checkpoint
    (folder / "step_000000005" / "model.safetensors").write_bytes(b"x")
    assert find_checkpoint(tmp_path)[0] == folder / "step_000000003" / "model.safetensors"
    assert sorted(snapshot.remove_leftovers(folder)) == [".best.safetensors.9-ab.tmp", ".step_000000004.tmp-123"]
    snapshot.commit(folder, 3, lambda p: Path(p).write_bytes(b"again"), state)  # the same step again: a new name
    assert find_checkpoint(tmp_path)[0] == folder / "step_000000003_1" / "model.safetensors"
    assert (folder / "last.safetensors").read_bytes() == b"again" and not (folder / "step_000000003").exists()
    assert (folder / "latest").read_text().strip() == "step_000000003_1"
