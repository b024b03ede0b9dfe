"""``train.parallel``: the compared models of a job trained side by side, a process each. The same
numbers and weights as one after the other; a stop signal to the job's process alone stops every
model after its snapshot and the same command continues them bit for bit; a model that fails stops
the others; a job whose process is killed leaves no model training; the models' lines come out of
the job's process under one bar; when ``auto`` chooses it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_main_job import tiny_job

from xvit.cli import main
from xvit.engine.config import load_config
from xvit.engine.distributed import DistInfo
from xvit.engine.train import prepare, side_by_side
from xvit.errors import EXIT_STOPPED, UserError

MODELS = ("xvit_nano_patch8_32", "vit_nano_patch8_32")
LONG = ("train.epochs=20", "train.log_every_steps=5")  # 7 steps per epoch: 140 steps, a few seconds each


def _metrics(run_dir: Path) -> list[dict]:
    drop = ("run_dir", "train_time_s", "train_clips_per_s", "eval_time_s")
    return [{k: v for k, v in r.items() if k not in drop} for r in json.loads((run_dir / "summary.json").read_text())]


def _same_weights(a: Path, b: Path) -> bool:
    for model in MODELS:
        wa = load_file(str(a / model / "checkpoints" / "last.safetensors"))
        wb = load_file(str(b / model / "checkpoints" / "last.safetensors"))
        if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
            return False
    return True


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("side_by_side")


@pytest.fixture(scope="module")
def one_after_the_other(root) -> Path:
    """The reference: the long tiny job, the models in turn (in this process, 1 thread)."""
    assert main(tiny_job(root, root / "sequential", *LONG, "train.parallel=never")) == 0
    return root / "sequential"


def _start(root: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    """``python -m xvit train`` of the long tiny job side by side, in a process group of its own."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    argv = tiny_job(root, run_dir, *LONG, "train.parallel=always", *extra)
    return subprocess.Popen(
        [sys.executable, "-m", "xvit", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _when_both_train(proc: subprocess.Popen, run_dir: Path) -> None:
    """Wait until each model has logged 2 training steps (step 10 of 140)."""
    metrics = [run_dir / m / "metrics.jsonl" for m in MODELS]
    deadline = time.monotonic() + 120
    while not all(f.is_file() and f.read_text().count('"train_step"') >= 2 for f in metrics):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)


def _group_ends(proc: subprocess.Popen, within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # nothing outlives the test
    return False


def test_side_by_side_gives_the_numbers_and_weights_of_one_after_the_other(root, one_after_the_other):
    run_dir = root / "side_by_side"
    assert main(tiny_job(root, run_dir, *LONG, "train.parallel=always")) == 0
    assert _metrics(run_dir) == _metrics(one_after_the_other)
    assert _same_weights(run_dir, one_after_the_other)
    saved = load_config(str(run_dir / "config.yaml"))  # the job's config, as given; each model's with its threads
    assert saved.train.parallel == "always" and saved.train.threads == 1
    assert load_config(str(run_dir / MODELS[0] / "config.yaml")).train.progress is False


def test_the_job_prints_its_models_lines_under_one_bar_of_their_steps(root, tmp_path):
    """What the models log and print comes out of the job's process, each line naming its model,
    with one progress bar over both models' optimizer steps ending at each one's total."""
    proc = _start(root, tmp_path / "shown", "train.progress=true")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    for model in MODELS:
        assert f"[{model}]: epoch 20/20: loss" in err and f"\n{model}: top-1" in f"\n{out}"
    last = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("training: 100%")][-1]
    steps = dict(re.findall(r"(\w+_patch8_32) (\d+/\d+)", last))
    assert steps.keys() == set(MODELS) and all(a == b for a, b in (v.split("/") for v in steps.values())), last
    total = sum(int(v.split("/")[1]) for v in steps.values())
    assert f"| {total}/{total} [" in last


def test_a_stop_signal_to_the_job_stops_every_model_and_the_same_command_continues(root, one_after_the_other):
    """SIGTERM to the job's process only (as ``docker stop`` sends it): it passes it on, each model
    writes its snapshot, the job exits with 75 naming both; running it again ends bit-exact."""
    run_dir = root / "stopped"
    proc = _start(root, run_dir)
    _when_both_train(proc, run_dir)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_STOPPED, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    line = next(ln for ln in err.splitlines() if ln.startswith("xvit train: stopped by SIGTERM"))
    for model in MODELS:
        assert f"of {model}; snapshot {run_dir / model / 'checkpoints' / 'step_'}" in line, line
    assert err.count("SIGTERM received") == 1  # the job says it, the models are quiet
    assert _group_ends(proc)
    assert main(tiny_job(root, run_dir, *LONG, "train.parallel=always")) == 0
    assert _metrics(run_dir) == _metrics(one_after_the_other)
    assert _same_weights(run_dir, one_after_the_other)


def test_a_killed_job_leaves_no_model_training(root, tmp_path):
    """``kill -9`` of the job's process: each model notices, writes its snapshot and exits."""
    run_dir = tmp_path / "killed"
    proc = _start(root, run_dir)
    _when_both_train(proc, run_dir)
    proc.kill()
    proc.wait()
    assert _group_ends(proc), "a model's process outlived its job"
    for model in MODELS:
        assert any(p.name.startswith("step_") for p in (run_dir / model / "checkpoints").iterdir())
    proc.communicate()


def test_a_model_that_fails_stops_the_others(root, tmp_path, capfd, caplog):
    """A UserError in one model's process is the job's (status 2, its one line); the others stop."""
    run_dir = tmp_path / "bad"
    bad = ("train.parallel=always", "model.options={bogus: 1}", "train.epochs=300")  # the frame ViT: ~15 s
    code = main(tiny_job(root, run_dir, *LONG, *bad))
    err = capfd.readouterr().err
    assert code == 2, err[-3000:]
    assert "error: model xvit_nano_patch8_32 rejected model.options {'bogus': 1}" in err and "Traceback" not in err
    assert "stopping vit_nano_patch8_32 after a snapshot" in caplog.text
    assert not (run_dir / MODELS[1] / "results.json").exists()  # stopped long before its end


def test_when_auto_trains_side_by_side(monkeypatch):
    cfg = load_config("synthetic")  # compare: one frame ViT; train.threads unset
    cpu, gpu = (DistInfo(0, 0, 1, torch.device(d)) for d in ("cpu", "cuda"))
    cores = [2]  # the machine's, as both the choice and the thread split see it
    for module in (side_by_side, prepare):
        monkeypatch.setattr(module, "available_cores", lambda: cores[0])
    assert side_by_side.wanted(cfg, cpu, 2) and side_by_side.child_threads(cfg, 2) == 1
    assert not side_by_side.wanted(cfg, cpu, 3)  # more models than cores
    assert not side_by_side.wanted(cfg, gpu, 2) and not side_by_side.wanted(cfg, cpu, 1)
    threads = load_config("synthetic", ["train.threads=2"])
    assert not side_by_side.wanted(threads, cpu, 2)  # set threads: the user chose how to use the cores
    always = load_config("synthetic", ["train.parallel=always", "train.threads=2"])
    assert side_by_side.wanted(always, cpu, 3) and side_by_side.child_threads(always, 3) == 2
    assert not side_by_side.wanted(load_config("synthetic", ["train.parallel=never"]), cpu, 2)
    assert not side_by_side.wanted(cfg, DistInfo(0, 0, 2, torch.device("cpu")), 2)  # torchrun: never
    with pytest.raises(UserError, match="train.parallel=always .* torchrun with 2"):
        side_by_side.wanted(always, DistInfo(0, 0, 2, torch.device("cpu")), 2)
    cores[0] = 8
    workers = load_config("synthetic", ["data.num_workers=1"])
    assert side_by_side.child_threads(workers, 2) == 3  # 8 cores / 2 models - 1 loader worker
    with pytest.raises(UserError, match="'train.parallel' expects str, got True .YAML reads on/off"):
        load_config("synthetic", ["train.parallel=on"])  # YAML's on is true: the words are always/never
    with pytest.raises(UserError, match="train.parallel='sometimes' is not valid"):
        load_config("synthetic", ["train.parallel=sometimes"])
