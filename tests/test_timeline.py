"""``xvit predict --model FILE.onnx`` agrees with the checkpoint; ``--timeline`` windows, files and
streaming (frames dropped as soon as no later window needs them); the streaming decoder returns
the frames ``decode_frames`` returns; background decoding keeps order and raises errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import weakref

import numpy as np
import onnx
import pytest
import torch
from videos import standard_videos, write_garbage, write_index_video

import xvit
from xvit.cli import main
from xvit.data.clip import ClipSpec
from xvit.data.decode import VideoDecodeError, decode_frames
from xvit.data.stream import stream_frames
from xvit.engine.checkpoint import CheckpointMeta, save_model
from xvit.engine.deploy.onnx_model import CLIP_KEY, INPUT_KEY
from xvit.engine.eval import timeline as xtimeline
from xvit.engine.eval.prefetch import prefetch
from xvit.engine.eval.timeline import plan_windows
from xvit.errors import UserError

CLASSES = ["left", "right", "still", "zoom", "spin", "flash"]
CLIP = ClipSpec(
    num_frames=4, sampling="dense", frame_stride=2, crop_size=32, short_side=36, views=(2, 3), class_names=CLASSES
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("timeline")
    torch.manual_seed(0)
    model = xvit.create_model("xvit_nano_patch8_32", num_frames=4, num_classes=len(CLASSES), img_size=32)
    with torch.no_grad():
        model.temp_embed.normal_(0, 0.5)
    save_model(d / "model.safetensors", model, CheckpointMeta(model=model.model_config, clip=CLIP))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the command line of ONNX export, checked here once
        assert main(["export", "--checkpoint", str(d / "model.safetensors"), "--format", "onnx"]) == 0
    text = out.getvalue()
    assert "onnxruntime (CPU)" in text and "decoded H.264 clip (2x3 views)" in text and "within the tolerance" in text
    props = {p.key: p.value for p in onnx.load(str(d / "model.onnx")).metadata_props}
    assert ClipSpec.from_dict(json.loads(props[CLIP_KEY])) == CLIP and props[INPUT_KEY].startswith("video: float32")
    videos = [write_index_video(d / f"v{i}.mp4", num_frames=20 + 10 * i, height=36, width=48) for i in range(3)]
    long = write_index_video(d / "long.mp4", num_frames=190, height=36, width=48, fps=25, gop=50)
    return d / "model.safetensors", d / "model.onnx", videos, long, write_garbage(d / "broken.mp4", 300)


def test_onnx_predict_matches_the_checkpoint(files, capsys):
    ckpt, onnx_file, videos, _, bad = files
    paths = [str(v) for v in videos]
    assert main(["predict", *paths, "--checkpoint", str(ckpt), "--json", "--topk", "6"]) == 0
    torch_doc = json.loads(capsys.readouterr().out)
    assert main(["predict", *paths, "--model", str(onnx_file), "--json", "--topk", "6"]) == 0
    onnx_doc = json.loads(capsys.readouterr().out)
    assert onnx_doc["views"] == torch_doc["views"] == "2x3" and onnx_doc["model"] == "xvit_nano_patch8_32"
    assert onnx_doc["timing"]["runtime"] == "onnxruntime" and onnx_doc["timing"]["videos"] == 3
    for a, b in zip(torch_doc["results"], onnx_doc["results"]):
        assert [t["class"] for t in a["predictions"]] == [t["class"] for t in b["predictions"]]
        assert np.allclose([t["prob"] for t in a["predictions"]], [t["prob"] for t in b["predictions"]], atol=1e-5)
    # the same error handling as the PyTorch path; ONNX runs on CPU only
    assert main(["predict", str(bad), paths[0], "--model", str(onnx_file)]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"{bad}: ") and paths[0] in out
    assert main(["predict", paths[0], "--model", str(onnx_file), "--amp", "bf16"]) == 2
    assert "onnxruntime on CPU" in capsys.readouterr().err


def test_plan_windows_dense_segment_tail_and_errors():
    plan = plan_windows(CLIP, 30, 25.0)
    assert plan.length == 7 and plan.offsets == (0, 2, 4, 6) and plan.stride == 7
    assert plan.starts == (0, 7, 14, 21, 23)  # tiles the video, last window aligned with its end
    assert plan.indices(4) == [23, 25, 27, 29] and plan.seconds(1) == (7 / 25, 14 / 25)
    assert plan_windows(CLIP, 30, 25.0, stride_seconds=0.4).starts == (0, 10, 20, 23)
    assert plan_windows(CLIP, 5, 25.0).indices(0) == [0, 2, 4, 4]  # shorter than a window: clamped
    segment = CLIP.replace(sampling="segment", frame_stride=4)
    seg = plan_windows(segment, 100, 10.0, window_seconds=2.0)
    assert seg.length == 20 and seg.offsets == (2, 7, 12, 17)  # middle of each of 4 segments
    assert plan_windows(segment, 100, 10.0).length == 16  # default T x frame_stride frames
    with pytest.raises(UserError, match="--window"):
        plan_windows(CLIP, 30, 25.0, window_seconds=1.0)
    with pytest.raises(UserError, match="--window-stride -1"):
        plan_windows(CLIP, 30, 25.0, stride_seconds=-1)
    with pytest.raises(UserError, match="frame rate"):
        plan_windows(CLIP, 30, 0.0)


def test_timeline_cli_writes_csv_json_png(files, tmp_path, capsys):
    ckpt, onnx_file, _, long, bad = files
    out = tmp_path / "tl"
    args = ["predict", str(long), "--timeline", "--window-stride", "0.2", "--out", str(out), "--topk", "3"]
    assert main([*args, "--checkpoint", str(ckpt), "--views", "1x3"]) == 0
    assert "windows of 0.28 s every 0.20 s" in capsys.readouterr().out
    doc = json.loads((out / "long.timeline.json").read_text())
    plan = plan_windows(CLIP, 190, 25.0, stride_seconds=0.2)
    assert doc["window_frames"] == 7 and doc["stride_frames"] == 5 and doc["crops"] == 3
    assert [w["start_s"] for w in doc["windows"]] == [round(s / 25, 3) for s in plan.starts]
    assert doc["windows"][-1]["end_s"] == 7.6 and doc["peak_rss_mib"] > 0
    rows = list(csv.DictReader(open(out / "long.timeline.csv")))
    assert len(rows) == len(plan.starts) and rows[0]["class1"] in CLASSES and set(rows[0]) >= {"prob3", "end_s"}
    assert (out / "long.timeline.png").stat().st_size > 10_000
    # the ONNX model gives the same timeline
    assert main([*args, "--model", str(onnx_file), "--views", "1x3", "--out", str(tmp_path / "onnx")]) == 0
    onnx_doc = json.loads((tmp_path / "onnx" / "long.timeline.json").read_text())
    assert [w["top"][0]["class"] for w in onnx_doc["windows"]] == [w["top"][0]["class"] for w in doc["windows"]]
    capsys.readouterr()
    assert main(["predict", str(bad), "--checkpoint", str(ckpt), "--timeline", "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"{bad}: ")
    assert main([*args, "--checkpoint", str(ckpt), "--views", "2x3"]) == 2


class _Frame(np.ndarray):
    """A frame that can be watched with a weakref (plain ndarrays cannot)."""


def test_timeline_holds_only_the_frames_of_one_window(files, monkeypatch):
    """Streaming: over 190 frames (27 windows), no more frames are alive than one window needs."""
    ckpt, _, _, long, _ = files
    alive: set[int] = set()
    peak = [0]
    real = xtimeline.stream_frames

    def watched(path, wanted):
        for i, frame in real(path, wanted):
            frame = frame.view(_Frame)
            alive.add(i)
            weakref.finalize(frame, alive.discard, i)
            peak[0] = max(peak[0], len(alive))
            yield i, frame

    monkeypatch.setattr(xtimeline, "stream_frames", watched)
    model, clip = xvit.load_model(ckpt)
    timeline = xtimeline.video_timeline(model, clip, long, batch_size=2)
    assert len(timeline.plan.starts) == 28 and timeline.scores.shape == (28, len(CLASSES))
    assert torch.allclose(timeline.scores.sum(1), torch.ones(28))
    plan = timeline.plan  # alive at most: two consecutive windows' frames (they overlap at the tail) + the newest
    bound = max(len(set(plan.indices(w)) | set(plan.indices(w + 1))) for w in range(len(plan.starts) - 1)) + 1
    assert peak[0] <= bound == 2 * clip.num_frames + 1  # not the 112 frames of the 28 windows


def test_stream_frames_equal_decode_frames(tmp_path):
    videos = standard_videos(tmp_path / "std")
    for name in ("h264_bframes.mp4", "vp9.webm", "h264_rot90.mp4", "h264_vfr.mkv"):
        wanted = [0, 3, 4, 10, 11]
        streamed = dict(stream_frames(videos[name], wanted))
        assert sorted(streamed) == wanted
        assert torch.equal(
            torch.from_numpy(np.stack([streamed[i] for i in wanted])), decode_frames(videos[name], wanted)
        )
    assert [i for i, _ in stream_frames(videos["short5.mp4"], [3, 4, 5, 9])] == [3, 4]  # past the end: absent
    for broken in ("garbage.mp4", "audio_only.m4a", "empty.mp4"):
        with pytest.raises(VideoDecodeError, match=broken):
            list(stream_frames(videos[broken], [0]))


def test_prefetch_keeps_order_raises_and_stops():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("boom at 2")

    got = []
    with pytest.raises(ValueError, match="boom at 2"):
        for x in prefetch(failing()):
            got.append(x)
    assert got == [1]
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    for x in prefetch(endless(), depth=2):
        if x == 5:
            break
    assert closed == [True]  # leaving the loop stopped the thread and closed the generator
