"""``xvit check-data`` (exit status and report on a fixture with every problem) and ``xvit bench-data``."""

from __future__ import annotations

import json

import pytest
from videos import standard_videos

from xvit.cli import main
from xvit.data.bench import make_bench_video
from xvit.data.check import check_video
from xvit.data.decode import video_info


@pytest.fixture(scope="session")
def vids(tmp_path_factory) -> dict:
    return standard_videos(tmp_path_factory.getbasetemp() / "xvit_videos")


def write_list(tmp_path, lines: list[str], classes: list[str] | None = None):
    ann = tmp_path / "ann.txt"
    ann.write_text("\n".join(lines) + "\n")
    if classes is not None:
        (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    return ann


def test_check_video_kinds(vids, tmp_path):
    assert check_video(str(vids["h264.mp4"]), 8) is None
    assert check_video(str(tmp_path / "nope.mp4"), 8)[0] == "missing"
    for name in ("empty.mp4", "garbage.mp4", "audio_only.m4a", "truncated.mp4", "truncated_faststart.mp4"):
        assert check_video(str(vids[name]), 8)[0] == "unreadable", name
    assert check_video(str(vids["truncated.webm"]), 8)[0] == "truncated"
    assert check_video(str(vids["short5.mp4"]), 8)[:2] == ("too_short", "5 frames < --num-frames 8")
    assert check_video(str(vids["h264_vfr.mkv"]), 8) is None  # VFR: duration x fps is only approximate


def test_check_data_reports_every_problem(vids, tmp_path, capsys):
    lines = [
        "h264.mp4 0",
        "missing.mp4 1",
        "empty.mp4 0",
        "truncated.mp4 1",
        "audio_only.m4a 0",
        "garbage.mp4 1",
        "truncated.webm 0",
        "short5.mp4 1",
        "vp9.webm 2",
        "h264.mp4 -1",
    ]
    ann = write_list(tmp_path, lines, ["a", "b"])
    out = tmp_path / "report.json"
    code = main(
        [
            "check-data",
            str(ann),
            "--root",
            str(vids["h264.mp4"].parent),
            "--class-names",
            str(tmp_path / "classes.txt"),
            "--workers",
            "2",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 1
    report = json.loads(out.read_text())
    assert report["counts"] == {"missing": 1, "unreadable": 4, "truncated": 1, "too_short": 1, "bad_label": 1}
    assert report["num_entries"] == 10 and report["num_videos"] == 9 and not report["ok"]
    found = {(p["kind"], p["where"]) for p in report["problems"]}
    assert ("missing", f"{ann}:2") in found and ("bad_label", f"{ann}:9") in found
    assert ("too_short", f"{ann}:8") in found and ("truncated", f"{ann}:7") in found
    printed = capsys.readouterr().out
    assert f"missing    {ann}:2: {vids['h264.mp4'].parent / 'missing.mp4'}: file not found" in printed
    assert "checked 10 entries (9 distinct videos): 1 missing, 4 unreadable, 1 truncated" in printed


def test_check_data_clean_dataset_exits_0(vids, tmp_path, capsys):
    ann = write_list(tmp_path, ["h264.mp4 0", "vp9.webm 1", "h264_bframes.mp4 1"])
    code = main(["check-data", str(ann), "--root", str(vids["h264.mp4"].parent), "--workers", "1", "--no-progress"])
    assert code == 0
    assert "checked 3 entries (3 distinct videos)" in capsys.readouterr().out


def test_check_data_folder_format(vids, tmp_path, capsys):
    for rel, name in (("cat/a.mp4", "h264.mp4"), ("cat/b.webm", "vp9.webm"), ("dog/c.mp4", "empty.mp4")):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(vids[name].read_bytes())
    assert main(["check-data", str(tmp_path), "--format", "folder", "--workers", "1", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert f"unreadable {tmp_path / 'dog/c.mp4'}: empty file (0 bytes)" in out
    assert "checked 3 entries (3 distinct videos): 0 missing, 1 unreadable" in out


def test_check_data_user_errors(tmp_path, capsys):
    assert main(["check-data", str(tmp_path / "nope.txt"), "--no-progress"]) == 2
    assert "nope.txt does not exist" in capsys.readouterr().err
    ann = write_list(tmp_path, ["a.mp4 0", "broken line"])
    assert main(["check-data", str(ann), "--no-progress"]) == 2
    assert "ann.txt:2: expected 'PATH LABEL'" in capsys.readouterr().err


def test_make_bench_video_is_textured_h264(tmp_path):
    path = make_bench_video(tmp_path / "b.mp4", seconds=0.5, fps=10, width=64, height=48, gop=4)
    info = video_info(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (5, 64, 48, 10.0)


def test_bench_data_runs_end_to_end(vids, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench-data",
            str(vids["h264_long_gop.mp4"]),
            str(vids["vp9.webm"]),
            "--num-frames",
            "4",
            "--clips",
            "4",
            "--batch-size",
            "2",
            "--workers",
            "0",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert len(result["results"]) == 4  # 1 frame count x 2 samplings x 2 methods
    assert {r["method"] for r in result["results"]} == {"seek", "full"}
    assert all(r["clips"] == 4 and r["clips_per_s"] > 0 for r in result["results"])
    assert "clips/s" in capsys.readouterr().out
    assert main(["bench-data", "--clips", "4", "--batch-size", "2"]) == 2  # no videos given
    assert "no videos" in capsys.readouterr().err
