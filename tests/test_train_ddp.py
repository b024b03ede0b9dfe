"""2-process DDP (gloo, CPU, launched with torchrun) reaches the weights and val results of 1 process,
and its skip ledger holds a bad video that only rank 1 read; a rank that hangs or dies ends the job.

1 process x batch 4 and 2 processes x batch 2 see the same 4 clips per step: ``DistributedSampler``
deals rank r the indices ``perm[r::2]`` of the same seeded permutation, and each clip's augmentation
is seeded by (seed, epoch, index), whoever loads it. DDP averages the two half-batch gradients,
which equals the full-batch mean up to float32 summation order, hence a tolerance instead of
equality: atol 1e-5 on every weight after 6 SGD steps (the observed largest difference is 1.5e-8).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import xvit
from xvit.cli import main
from xvit.engine.train.resume import last_state

ATOL = 1e-5


SYNTHETIC = {"videos_per_class": 2, "num_frames": 8, "size": 32, "val_fraction": 0.5}


def _overrides(root: Path, run_dir: Path, batch_size: int, **extra) -> list[str]:
    values = {
        "run_dir": str(run_dir),
        "compare": [],
        "model.name": "xvit_nano_patch8_32",
        "model.pretrained": None,  # the main job's shipped image ViT is micro-sized
        "model.options": {"head": "attn"},
        # format=synthetic: rank 0 generates the cache, the other rank waits at a barrier
        "data.format": "synthetic",
        "data.cache_dir": str(root),
        "data.synthetic": SYNTHETIC,
        "data.num_frames": 4,
        "data.crop_size": 32,
        "data.short_side_range": [32, 40],
        "data.hflip": False,
        "data.num_workers": 0,
        # the frame cache, built by rank 0 of each run (its own folder) and read by every rank
        "data.cache": "disk",
        "data.frame_cache_dir": str(root / "frames" / run_dir.name),
        "optim.name": "sgd",
        "optim.lr": 0.1,
        "optim.lr_base_batch": None,
        "optim.warmup_epochs": 1,
        "optim.clip_grad": 1.0,
        "train.epochs": 2,
        "train.batch_size": batch_size,
        "train.amp": "none",
        "train.threads": 1,
        "train.progress": False,
        "train.deterministic": True,
        "train.ckpt_every_steps": 2,
        "train.label_smoothing": 0.1,
        "eval.views": "2x1",
        "eval.batch_size": 3,
        "data.max_skipped_fraction": 0.1,  # one bad video of 14
        **extra,
    }
    return [
        f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
        for k, v in values.items()
    ]


def _empty_video_of_rank1(cache: Path) -> str:
    """Empty the training video rank 1 reads first in epoch 0 (of 2 ranks); return its path."""
    from xvit.data.synthetic import ensure_synthetic

    root = ensure_synthetic(cache, progress=False, **SYNTHETIC)
    lines = (root / "train.txt").read_text().splitlines()
    order = torch.randperm(len(lines), generator=torch.Generator().manual_seed(0))  # DistributedSampler, seed 0
    path = root / lines[int(order[1])].rsplit(" ", 1)[0]  # rank r reads order[r::2]
    path.write_bytes(b"")
    return str(path)


def test_two_process_gloo_matches_one_process(tmp_path):
    cache = tmp_path / "cache"
    bad = _empty_video_of_rank1(cache)
    # 14 train videos, global batch 4 -> 3 steps per epoch, 2 epochs; 14 val videos
    assert main(["train", *_overrides(cache, tmp_path / "one", batch_size=4)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "xvit",
        "train",
        *_overrides(cache, tmp_path / "two", batch_size=2),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    one = load_file(str(tmp_path / "one" / "checkpoints" / "last.safetensors"))
    two = load_file(str(tmp_path / "two" / "checkpoints" / "last.safetensors"))
    assert one.keys() == two.keys()
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    print(f"largest |1-process - 2-process| weight difference: {worst:.3g}")
    assert worst <= ATOL, f"largest weight difference {worst:.3g} > {ATOL}"
    torch.manual_seed(0)  # the initial weights (train seeds the model with `seed` before building it)
    init = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=14, img_size=32).state_dict()
    assert max((one[k] - init[k]).abs().max().item() for k in one) > 1e-3  # it did train
    # parallel evaluation: each of the 14 val videos scored once (ShardSampler + gather by index)
    res_one = json.loads((tmp_path / "one" / "results.json").read_text())
    res_two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res_one["num_videos"] == res_two["num_videos"] == 14
    assert res_two["top1"] == res_one["top1"] and res_two["per_class_acc"] == res_one["per_class_acc"]
    # rank 0 alone wrote the run directory; the state records the world size and global batch
    state = last_state(tmp_path / "two")
    assert state["world_size"] == 2 and state["global_batch"] == 4 and state["global_step"] == 6
    assert len(state["rng"]) == 2  # one RNG state per rank
    # the video only rank 1 read reached rank 0's ledger: listed once, in both runs alike
    for res in (res_one, res_two):
        assert res["skipped"]["train"] == 1 and res["skipped"]["videos"][0]["path"] == bad
        assert res["skipped"]["videos"][0]["epoch"] == 0 and "empty" in res["skipped"]["videos"][0]["reason"]
    skips = [json.loads(ln) for ln in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [m["path"] for m in skips if m["kind"] == "skip"] == [bad]
    assert (tmp_path / "two" / "config.yaml").is_file() and (tmp_path / "two" / "metrics.jsonl").is_file()


@pytest.mark.parametrize("fault", ["hang", "kill"])
def test_a_hung_or_killed_rank_ends_the_job(tmp_path, fault):
    """Rank 1 hangs (alive, never answers) or is SIGKILLed after its second optimizer step.

    Hung: rank 0 waits in the next collective for train.dist_timeout_s=10, then stops the job with
    one line naming rank 1 as stuck; torchrun ends rank 1. Killed: torchrun sees the death and
    ends the job. The subprocess timeout only guards against a hang (the old default waited 30 min).
    """
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "XVIT_TEST_FAULT": fault}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    env.pop("WORLD_SIZE", None)
    argv = _overrides(cache, tmp_path / "run", 2, **{"train.dist_timeout_s": 10, "eval.enabled": False})
    script = Path(__file__).with_name("ddp_fault.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    ended = time.time()
    fault_line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("ddp_fault:")), None)
    assert fault_line is not None, proc.stderr[-3000:]
    after = ended - float(fault_line.split("t=")[1])
    print(f"{fault}: the job ended {after:.1f} s after the fault, exit status {proc.returncode}")
    assert proc.returncode != 0
    if fault == "hang":
        line = next(ln for ln in proc.stderr.splitlines() if "xvit train: error: DDP rank 0" in ln)
        assert "rank 1 is alive but stuck" in line and "train.dist_timeout_s=10" in line, line
        assert "Traceback" not in proc.stderr.split("xvit train: error")[0][-2000:]
    else:
        assert "rank 1 is dead" in proc.stderr or "rank: 1" in proc.stderr, proc.stderr[-3000:]
