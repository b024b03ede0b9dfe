"""``xvit predict``'s whole-command timing, its early decode (order and per-video errors kept),
its lazy imports, ``Prefetch``, and ``xvit bench-predict`` end to end at nano size (no timed
assertions: only that the figures are present and consistent)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import torch
from videos import write_garbage, write_index_video

import xvit
from xvit.bench.predict import PARTS, write_checkpoint, write_videos
from xvit.cli import main
from xvit.engine.checkpoint import read_meta, save_model
from xvit.engine.eval.prefetch import Prefetch
from xvit.engine.timing import PhaseClock, mark_command_start, process_age, start_method

CLASSES = ["a", "b", "c", "d"]
PHASE_KEYS = ("imports_seconds", "load_seconds", "decode_wait_seconds", "model_seconds", "output_seconds")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict_timing")
    torch.manual_seed(0)
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=len(CLASSES), img_size=32)
    meta = {"data": {"class_names": CLASSES, "num_frames": 4, "crop_size": 32, "test_views": "2x1"}}
    save_model(d / "model.safetensors", model, meta)
    good = [write_index_video(d / f"clip{i}.mp4", num_frames=10 + 6 * i, height=40 + 8 * i, width=56) for i in range(3)]
    return d / "model.safetensors", good, write_garbage(d / "broken.mp4", 300), d / "missing.mp4"


def check_timing(t: dict) -> None:
    """Keys present, non-negative, the parts sum to the whole (other is the rest), ratio consistent."""
    for key in (*PHASE_KEYS, "other_seconds", "command_seconds", "seconds", "model_fraction"):
        assert t[key] >= 0, key
    parts = sum(t[k] for k in PHASE_KEYS)
    assert parts <= t["command_seconds"] + 1e-3
    assert abs(parts + t["other_seconds"] - t["command_seconds"]) < 1e-3
    assert t["model_fraction"] == pytest.approx(t["model_seconds"] / t["command_seconds"], abs=1e-3)
    assert t["seconds"] <= t["command_seconds"] and t["threads"] >= 1


def test_json_timing_keys_and_order_with_errors(files, capsys):
    ckpt, good, bad, missing = files
    order = [good[0], bad, good[1], missing, good[2]]
    assert main(["predict", *map(str, order), "--checkpoint", str(ckpt), "--json"]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [r["path"] for r in doc["results"]] == [str(p) for p in order]  # the arguments' order
    assert ["error" in r for r in doc["results"]] == [False, True, False, True, False]
    assert err.splitlines() == [ln for ln in err.splitlines() if ln.startswith((f"{bad}: ", f"{missing}: "))]
    assert len(err.splitlines()) == 2
    t = doc["timing"]
    assert t["videos"] == 3 and t["start"] == "call" and t["runtime"] == "pytorch"
    check_timing(t)


def test_timings_line_with_the_table(files, capsys):
    ckpt, good, bad, _ = files
    assert main(["predict", str(good[1]), str(bad), str(good[0]), "--checkpoint", str(ckpt), "--timings"]) == 1
    out, err = capsys.readouterr()
    assert out.index(str(good[1])) < out.index(str(good[0]))  # tables in the arguments' order
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{bad}: ") and lines[1].startswith("timings: command ")
    for word in ("imports", "load", "decode wait", "model", "output", "other", "model / command", "2 videos"):
        assert word in lines[1]


def test_load_failure_after_decoding_started_is_one_line(files, tmp_path, capsys):
    """The clip spec reads, the weights do not fit: a UserError, the decoding thread stopped."""
    ckpt, good, _, _ = files
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=len(CLASSES), img_size=32)
    meta = {"model": {**model.model_config, "num_classes": 9}, "data": {"num_frames": 4, "crop_size": 32}}
    save_model(tmp_path / "wrong.safetensors", model, meta)
    before = threading.active_count()
    assert main(["predict", *map(str, good), "--checkpoint", str(tmp_path / "wrong.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "xvit predict: error: strict load" in err and "wrong.safetensors" in err
    assert threading.active_count() == before


def test_as_a_program_predict_exits_at_once_with_its_output_and_code(files):
    """``python -m xvit predict`` skips the interpreter's teardown (``os._exit``) after flushing:
    the whole JSON document, the one-line error and exit code 1 still arrive."""
    ckpt, good, _, missing = files
    argv = [sys.executable, "-m", "xvit", "predict", str(good[0]), str(missing), "--checkpoint", str(ckpt), "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [("error" in r) for r in doc["results"]] == [False, True] and doc["timing"]["start"] == "process"
    assert proc.stderr.splitlines()[-1].startswith(f"{missing}: ")
    bad = subprocess.run([*argv[:4], str(good[0]), "--checkpoint", str(ckpt), "--topk", "0"], capture_output=True)
    assert bad.returncode == 2 and b"--topk 0: must be >= 1" in bad.stderr  # a UserError's exit code too


def test_prefetch_starts_at_once_keeps_order_and_raises_in_place():
    started = threading.Event()

    def items():
        started.set()
        yield from range(3)
        raise ValueError("third")

    stream = Prefetch(items(), depth=2)
    assert started.wait(5)  # computing before the first read
    got = []
    with pytest.raises(ValueError, match="third"):
        for item in stream:
            got.append(item)
    assert got == [0, 1, 2] and stream.wait_seconds >= 0
    with Prefetch(iter(range(100)), depth=1) as early:
        assert next(early) == 0  # leaving the block early stops the thread
    assert not early._thread.is_alive() and list(early) == []


def test_phase_clock_and_process_start():
    mark_command_start(whole_process=False)
    assert start_method() == "call"
    clock = PhaseClock()
    with clock.phase("load"):
        pass
    clock.add("model", 0.0)
    parts = clock.breakdown(("imports", "load", "model"))
    assert parts["imports_seconds"] == 0 and parts["load_seconds"] >= 0
    assert parts["command_seconds"] >= parts["load_seconds"] + parts["other_seconds"] - 1e-9
    age = process_age()
    assert age is None or age > 0  # this test process started before now
    mark_command_start(whole_process=True)
    assert start_method() == ("process" if age is not None else "import")


def test_predict_imports_only_what_its_path_needs():
    """The command's module leaves the model code, onnxruntime and the timeline to the paths using them."""
    code = (
        "import sys, xvit.cli.predict\n"
        "lazy = ['xvit.engine.deploy.onnx_model', 'onnxruntime', 'xvit.engine.eval.timeline',"
        " 'xvit.engine.eval.timeline_plot',"
        " 'matplotlib', 'timm', 'xvit.models.factory']\n"
        "print([m for m in lazy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_bench_predict_end_to_end_nano(files, tmp_path, capsys):
    """Written videos and checkpoint; one real ``xvit predict`` subprocess; the report and its JSON."""
    _, good, _, _ = files
    videos = write_videos(tmp_path / "videos", specs=((64, 48, 0.5, 12), (48, 64, 0.4, 10)))
    assert [p.name for p in videos] == ["video0_64x48_0.5s.mp4", "video1_48x64_0.4s.mp4"]
    ckpt = write_checkpoint(tmp_path / "nano.safetensors", "xvit_nano_patch8_32", num_classes=5)
    clip = read_meta(ckpt).clip
    assert clip.views == (1, 3) and clip.sampling == "dense" and clip.crop_size == 32
    out = tmp_path / "bench.json"
    args = ["bench-predict", *map(str, videos), "--checkpoint", str(ckpt), "--repeats", "1", "--warmup", "0"]
    assert main([*args, "--views", "1x1", "--json", str(out)]) == 0
    report = capsys.readouterr().out
    assert "model / whole command = " in report and "xvit_nano_patch8_32, views 1x1" in report
    doc = json.loads(out.read_text())
    assert [v["width"] for v in doc["videos"]] == [64, 48] and doc["settings"]["threads"] >= 1
    (run,) = doc["runs"]
    assert all(run[k] >= 0 for k in run)
    inside = sum(run[key] for key, _, _ in PARTS)
    assert inside == pytest.approx(run["command"], abs=2e-3)  # the command's own split adds up
    assert run["command"] <= run["wall"] and run["imports"] > 0  # started from the process start
    assert run["outside"] == pytest.approx(run["wall"] - run["command"], abs=1e-6)
    assert doc["model_fraction"] == pytest.approx(run["model"] / run["wall"])
