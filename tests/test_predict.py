"""``xvit predict`` and ``predict_video`` on mp4 files written by the test (one unreadable)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from videos import write_garbage, write_index_video

import xvit
from xvit.cli import main
from xvit.data.decode import VideoDecodeError
from xvit.engine.checkpoint import load_model, save_model
from xvit.engine.eval.predict import predict_video, video_views

CLASSES = ["left", "right", "still", "zoom", "spin", "flash"]  # 6 classes: top-5 is a real top-5


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=len(CLASSES), img_size=32)
    meta = {
        "data": {
            "class_names": CLASSES,
            "num_frames": 4,
            "sampling": "dense",
            "frame_stride": 2,
            "crop_size": 32,
            "test_short_side": 36,
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "test_views": "1x1",
        }
    }
    save_model(d / "model.safetensors", model, meta)
    good = [write_index_video(d / f"clip{i}.mp4", num_frames=12 + 4 * i, height=36, width=48) for i in range(2)]
    bad = write_garbage(d / "broken.mp4", 300)
    return d / "model.safetensors", good, bad


def test_predict_video_function(files):
    ckpt, good, bad = files
    model, clip = load_model(ckpt)
    top = predict_video(model, clip, good[0], views=(2, 3), topk=5)
    assert len(top) == 5 and all(name in CLASSES for name, _ in top)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert len(predict_video(model, clip, good[0], topk=50)) == len(CLASSES)
    x = video_views(good[0], clip, (2, 3))
    assert x.shape == (6, 3, 4, 32, 32)  # (T*S, C, T, H, W)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        predict_video(model, clip, bad)


def test_predict_cli_table_error_line_and_exit_status(files, capsys):
    ckpt, good, bad = files
    code = main(["predict", str(good[0]), str(bad), str(good[1]), "--checkpoint", str(ckpt), "--topk", "3"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{bad}: ")  # one line: path: reason
    assert str(good[0]) in out and str(good[1]) in out  # the others went on
    assert sum(name in line for line in out.splitlines() for name in CLASSES) == 6  # 3 classes x 2 videos
    assert main(["predict", str(good[0]), "--checkpoint", str(ckpt), "--views", "2x3"]) == 0
    capsys.readouterr()
    assert main(["predict", str(good[0]), "--checkpoint", str(ckpt.with_name("nope.safetensors"))]) == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_predict_cli_json(files, capsys):
    ckpt, good, bad = files
    assert main(["predict", *map(str, good), "--checkpoint", str(ckpt), "--json", "--views", "1x3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["views"] == "1x3" and [r["path"] for r in doc["results"]] == [str(g) for g in good]
    for r in doc["results"]:
        assert len(r["predictions"]) == 5 and {"class", "index", "prob"} <= set(r["predictions"][0])
        assert CLASSES[r["predictions"][0]["index"]] == r["predictions"][0]["class"]
    # with a failure: still one JSON document on stdout, the error on stderr
    assert main(["predict", str(bad), "--checkpoint", str(ckpt), "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["results"][0]["path"] == str(bad) and "error" in json.loads(out)["results"][0]
    assert err.startswith(f"{bad}: ")


def test_predict_subprocess_no_traceback(files):
    """The real command line (python -m xvit): a bad video is one line on stderr, exit 1."""
    ckpt, good, bad = files
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "xvit", "predict", str(bad), str(good[0]), "--checkpoint", str(ckpt)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip() and not re.match(r"\d\d:\d\d:\d\d ", ln)]
    assert len(errors) == 1 and errors[0].startswith(f"{bad}: ")  # log lines aside, one line
    assert Path(good[0]).name in proc.stdout
