"""The two decoders against each other: the same frames for the same indices (H.264, VP9, odd
sizes, variable frame rate by timestamp, a truncated tail), the same files accepted and rejected
for the same reasons, the same dataset items, check-data reports, predictions and evaluation;
a clear message when torchcodec or FFmpeg is missing; ``bench-data --decoders`` interleaved.

Tolerance: the decoders' frames are identical (max |difference| 0) on every test video except
4:2:0 VP9 at an odd size, where the RGB conversion of PyAV's bundled FFmpeg and the system's
FFmpeg differ: at most ``ODD_MAX_DIFF`` levels per value and ``ODD_MEAN_DIFF`` on average (the
same frame either way: its index reads back the same).
"""

from __future__ import annotations

import json
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from conftest import require_decoder
from videos import BROKEN_VIDEOS, STANDARD_VIDEOS, read_frame_index, standard_videos, write_truncated

from xvit.cli import main
from xvit.data import bench as data_bench
from xvit.data.cache import build_frame_cache
from xvit.data.check import check_video
from xvit.data.clip import ClipSpec
from xvit.data.datasets import build_dataset
from xvit.data.video import VideoDecodeError, check_decoder, decode_all, decode_frames, open_video
from xvit.engine.config import load_config
from xvit.errors import UserError

GOOD = sorted(STANDARD_VIDEOS)
ODD_420 = {"vp9_odd_97x61.webm"}  # 4:2:0 chroma at an odd size: the colour conversions differ
ODD_MAX_DIFF, ODD_MEAN_DIFF = 16, 0.5  # uint8 levels (measured: 9 and 0.15)


@pytest.fixture(scope="session")
def vids(tmp_path_factory) -> dict:
    return standard_videos(tmp_path_factory.getbasetemp() / "xvit_videos")


@pytest.fixture
def torchcodec() -> str:
    return require_decoder("torchcodec")


def assert_same_frames(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    """Exact, or within the stated tolerance for odd-size 4:2:0 (module docstring)."""
    assert a.shape == b.shape and a.dtype == b.dtype == torch.uint8, (name, a.shape, b.shape)
    diff = (a.int() - b.int()).abs()
    if name in ODD_420:
        assert diff.max() <= ODD_MAX_DIFF and diff.float().mean() <= ODD_MEAN_DIFF, name
        assert [read_frame_index(f.numpy()) for f in a] == [read_frame_index(f.numpy()) for f in b]
    else:
        assert diff.max() == 0, (name, int(diff.max()))


@pytest.mark.parametrize("name", GOOD)
def test_same_frames_for_the_same_indices(vids, torchcodec, name):
    full = decode_all(vids[name], "pyav")
    assert_same_frames(full, decode_all(vids[name], torchcodec), name)
    n = full.shape[0]
    rng = np.random.default_rng(7)
    for indices in ([n - 1, 0, n // 2], rng.integers(0, n, 8).tolist(), list(range(0, n, 3))):
        assert_same_frames(
            decode_frames(vids[name], indices, "pyav"), decode_frames(vids[name], indices, "torchcodec"), name
        )


def _frame_times(path) -> list[float]:
    """Presentation times (s) of every frame, from the demuxed packets."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.size)
        return [float(p * Fraction(stream.time_base)) for p in pts]


@pytest.mark.parametrize("name", ["h264_vfr.mp4", "h264_vfr.mkv"])
def test_variable_frame_rate_by_timestamp(vids, torchcodec, name):
    # frame i is the i-th frame in presentation order, whatever the gaps between timestamps: the
    # frame shown at the i-th timestamp, for both decoders
    times = _frame_times(vids[name])
    gaps = np.diff(times)
    assert gaps.max() > 1.5 * gaps.min()  # the frame rate really varies (1.5/fps and 0.75/fps)
    indices = [0, 3, 17, 18, 38, 39]
    from torchcodec.decoders import VideoDecoder

    shown = VideoDecoder(str(vids[name]), dimension_order="NHWC").get_frames_played_at([times[i] for i in indices])
    for decoder in ("pyav", "torchcodec"):
        frames = decode_frames(vids[name], indices, decoder)
        assert torch.equal(frames, shown.data), decoder
        assert [read_frame_index(f.numpy()) for f in frames] == indices


def test_truncated_tail(vids, tmp_path, torchcodec):
    # a WebM (VP9) and an MKV (H.264, B-frames) cut in half: both decoders see the same frames,
    # repeat the last one a frame or two past the end, and report the file truncated beyond that
    mkv = write_truncated(tmp_path / "cut.mkv", vids["h264_vfr.mkv"], keep=0.6)
    for path in (vids["truncated.webm"], mkv):
        with open_video(path, "pyav") as a, open_video(path, torchcodec) as b:
            assert a.num_frames == b.num_frames and a.expected_frames > a.num_frames
            n = a.num_frames
            assert_same_frames(a.get_all(), b.get_all(), path.name)
            assert_same_frames(a.get([n - 1, n, n + 1]), b.get([n - 1, n, n + 1]), path.name)
            reasons = []
            for video in (a, b):
                with pytest.raises(VideoDecodeError, match="probably truncated") as err:
                    video.get([0, n + 5])
                reasons.append(err.value.reason)
            assert reasons[0] == reasons[1]


def _outcome(call, *args):
    """``("ok", value)`` or ``("error", the reason's kind)``: the reason up to its first colon."""
    try:
        return "ok", call(*args)
    except VideoDecodeError as err:
        return "error", err.reason.split(":")[0]


def _behaviour(path, decoder: str) -> list:
    """What each read of ``path`` does: open, count, info, first/last/past-end frames, all frames."""
    opened = _outcome(open_video, path, decoder)
    if opened[0] == "error":
        return [opened]
    with opened[1] as video:
        info = _outcome(video.info)
        n = video.num_frames
        return [
            ("ok", n),
            info
            if info[0] == "error"
            else ("ok", (info[1].num_frames, info[1].width, info[1].height, info[1].rotation)),
            _outcome(lambda: video.get([0]).sum().item()),
            _outcome(lambda: video.get([0, n - 1]).sum().item()),
            _outcome(lambda: video.get([0, 39]).shape),
            _outcome(lambda: video.get([n + 400]).shape),
            _outcome(lambda: video.get_all().shape),
        ]


def test_bad_input_behaviour_is_identical(vids, tmp_path, torchcodec):
    (tmp_path / "folder.mp4").mkdir()
    paths = [vids[n] for n in (*BROKEN_VIDEOS, *GOOD) if n not in ODD_420] + [
        tmp_path / "nope.mp4",
        tmp_path / "folder.mp4",
    ]
    for path in paths:
        assert _behaviour(path, "pyav") == _behaviour(path, torchcodec), path.name
        kinds = [(check_video(str(path), 8, d) or ("fine",))[0] for d in ("pyav", torchcodec)]
        assert kinds[0] == kinds[1], (path.name, kinds)


def test_check_data_reports_the_same_problems(vids, tmp_path, torchcodec, capsys):
    names = [*BROKEN_VIDEOS, "missing.mp4", "short5.mp4", "h264.mp4", "vp9.webm", "h264_vfr.mkv"]
    ann = tmp_path / "ann.txt"
    ann.write_text("".join(f"{n} 0\n" for n in names))
    reports = {}
    for decoder in ("pyav", torchcodec):
        out = tmp_path / f"{decoder}.json"
        args = ["check-data", str(ann), "--root", str(vids["h264.mp4"].parent), "--workers", "1", "--no-progress"]
        assert main([*args, "--decoder", decoder, "--json", str(out)]) == 1
        reports[decoder] = json.loads(out.read_text())
    capsys.readouterr()
    pyav, tc = reports["pyav"], reports["torchcodec"]
    assert (pyav["decoder"], tc["decoder"]) == ("pyav", "torchcodec")
    assert (
        pyav["counts"]
        == tc["counts"]
        == {"missing": 1, "unreadable": 5, "truncated": 1, "too_short": 1, "bad_label": 0}
    )
    assert [(p["kind"], p["where"]) for p in pyav["problems"]] == [(p["kind"], p["where"]) for p in tc["problems"]]


def test_dataset_items_and_frame_cache_are_the_same(vids, tmp_path, torchcodec):
    clip = ClipSpec(num_frames=4, sampling="segment", crop_size=32, views=(2, 1))
    names = ["h264_bframes.mp4", "vp9.webm", "garbage.mp4", "h264_vfr.mp4"]
    lines = [f"{n} {i % 2}" for i, n in enumerate(names)]
    root = vids["h264.mp4"].parent
    ann = tmp_path / "list.txt"
    ann.write_text("\n".join(lines) + "\n")
    sets = {
        d: build_dataset("test", format="list", root=str(root), annotations=str(ann), clip=clip, decoder=d)
        for d in ("pyav", torchcodec)
    }
    for i in range(len(names)):
        a, b = sets["pyav"][i], sets["torchcodec"][i]
        assert (a[0] is None) == (b[0] is None) and a[1:] == b[1:], names[i]
        if a[0] is not None:
            assert torch.equal(a[0], b[0]), names[i]
    train = {
        d: build_dataset("train", format="list", root=str(root), annotations=str(ann), clip=clip, seed=3, decoder=d)
        for d in ("pyav", torchcodec)
    }
    for i in (0, 1, 3):
        items = []
        for decoder in ("pyav", "torchcodec"):
            torch.manual_seed(i)  # the same random frames, crop and flip
            items.append(train[decoder][i])
        assert torch.equal(items[0][0], items[1][0]) and items[0][1] == items[1][1], names[i]
    paths = [str(root / n) for n in names]
    caches = {d: build_frame_cache("memory", paths, progress=False, decoder=d) for d in ("pyav", torchcodec)}
    assert [e.error is None for e in caches["pyav"].entries] == [e.error is None for e in caches["torchcodec"].entries]
    assert torch.equal(caches["pyav"].open(1).get([0, 49]), caches["torchcodec"].open(1).get([0, 49]))


def test_predict_and_eval_with_torchcodec(tmp_path, torchcodec, capsys):
    from test_eval_cli import make_checkpoint, make_data

    make_data(tmp_path, [0, 1, 2], bad=1)
    ckpt = str(make_checkpoint(tmp_path / "best.safetensors", tmp_path))
    videos = [str(tmp_path / "videos" / f"v{i}.mp4") for i in range(3)]
    predictions, metrics = {}, {}
    for decoder in ("pyav", torchcodec):
        assert main(["predict", *videos, "--checkpoint", ckpt, "--json", "--decoder", decoder]) == 1
        predictions[decoder] = json.loads(capsys.readouterr().out)["results"]
        out = tmp_path / decoder
        args = ["--workers", "0", "--views", "1x1", "--no-progress", "--out", str(out)]
        assert main(["eval", "--checkpoint", ckpt, *args, "--decoder", decoder]) == 0
        capsys.readouterr()
        metrics[decoder] = json.loads((out / "metrics.json").read_text())
    assert "error" in predictions["torchcodec"][1] and "error" not in predictions["torchcodec"][0]
    assert [r.get("predictions") for r in predictions["pyav"]] == [
        r.get("predictions") for r in predictions["torchcodec"]
    ]
    for key in ("top1", "top5", "num_videos", "num_missing"):
        assert metrics["pyav"][key] == metrics["torchcodec"][key], key


def test_unknown_decoder_and_config_key():
    with pytest.raises(UserError, match="decoder 'ffmpeg' is unknown; use one of pyav, torchcodec"):
        check_decoder("ffmpeg")
    assert load_config("synthetic", ["data.decoder=torchcodec"]).data.decoder == "torchcodec"
    assert load_config("synthetic").data.decoder == "pyav"
    with pytest.raises(UserError, match="data.decoder='torchcodex' is not valid; did you mean 'torchcodec'"):
        load_config("synthetic", ["data.decoder=torchcodex"])


def test_torchcodec_not_installed_is_one_clear_line(vids, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import torchcodec -> ModuleNotFoundError
    with pytest.raises(
        UserError, match=r"torchcodec is not installed; pip install 'xvit\[torchcodec\]'.*apt-get install ffmpeg"
    ):
        open_video(vids["h264.mp4"], "torchcodec")
    ann = tmp_path / "one.txt"
    ann.write_text("h264.mp4 0\n")
    root = str(vids["h264.mp4"].parent)
    assert main(["check-data", str(ann), "--root", root, "--decoder", "torchcodec", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "torchcodec is not installed" in err and "--decoder pyav" in err and "Traceback" not in err
    with pytest.raises(UserError, match="not installed"):
        build_dataset("train", format="list", root=root, annotations=str(ann), decoder="torchcodec")


def test_torchcodec_without_ffmpeg_says_what_to_install(torchcodec, monkeypatch):
    import torchcodec as tc

    monkeypatch.setattr(tc, "ffmpeg_major_version", None)  # what torchcodec sets when it finds no FFmpeg
    with pytest.raises(UserError, match=r"finds no FFmpeg libraries .*apt-get install ffmpeg"):
        check_decoder("torchcodec")


def test_bench_data_interleaves_the_decoders(vids, monkeypatch, tmp_path, capsys):
    calls = []

    def fake_bench(paths, *, num_frames, sampling, method, workers, decoder, **kwargs):
        calls.append((decoder, num_frames, sampling, method, workers))
        rate = 10.0 * (1 + len(calls) % 3)
        return {
            "decoder": decoder,
            "method": method,
            "num_frames": num_frames,
            "sampling": sampling,
            "workers": workers,
            "clips": 4,
            "seconds": 4 / rate,
            "clips_per_s": rate,
            "frames_decoded_per_clip": None,
            "cpu_ms_per_clip": 1.0,
        }

    monkeypatch.setattr(data_bench, "check_decoder", lambda d: d)
    monkeypatch.setattr(data_bench, "bench", fake_bench)
    rows = data_bench.bench_interleaved(
        ["v.mp4"],
        decoders=["pyav", "torchcodec"],
        num_frames=[8],
        samplings=["dense"],
        methods=["seek", "full"],
        workers=[0, 2],
        repeats=3,
    )
    assert len(calls) == 2 * 2 * 2 * 3 and len(rows) == 8
    assert [c[0] for c in calls[:4]] == ["pyav", "torchcodec"] * 2  # decoders back to back per setting
    assert [c[0] for c in calls[8:12]] == ["torchcodec", "pyav"] * 2  # the order alternates between repeats
    assert all(len(r["repeats"]) == 3 and r["clips_per_s"] == sorted(r["repeats"])[1] for r in rows)


def test_bench_data_cli_with_both_decoders(vids, torchcodec, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench-data", str(vids["h264_long_gop.mp4"]), "--num-frames", "4", "--sampling", "dense", "--clips", "2"]
    assert main([*args, "--batch-size", "2", "--decoders", "pyav", "torchcodec", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["decoder"], r["method"]) for r in result["results"]] == [
        ("pyav", "seek"),
        ("torchcodec", "seek"),
        ("pyav", "full"),
        ("torchcodec", "full"),
    ]
    assert result["settings"]["torchcodec"].startswith("0.17")
    printed = capsys.readouterr().out
    assert "torchcodec/pyav" in printed
    assert [r["frames_decoded_per_clip"] is None for r in result["results"]] == [False, True, False, True]
