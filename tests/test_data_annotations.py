"""Annotation parsers on small fixtures in the official shapes (list, Kinetics CSV, SSv2 JSON, folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xvit.data.annotations import (
    VideoSample,
    check_labels,
    detect_format,
    label_errors,
    load_annotations,
    parse_folder,
    parse_kinetics_csv,
    parse_list,
    parse_ssv2_json,
    read_class_names,
)
from xvit.errors import UserError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_list_file_space_comma_comments_and_root(tmp_path):
    ann = tmp_path / "train.txt"
    ann.write_text("# path label\n\na/x.mp4 2\nb/y.mp4,0\n  with space.mp4 , 1  \n/abs/z.webm -1\n")
    samples, names = parse_list(ann, tmp_path / "videos")
    assert [(s.path, s.label) for s in samples] == [
        (str(tmp_path / "videos/a/x.mp4"), 2),
        (str(tmp_path / "videos/b/y.mp4"), 0),
        (str(tmp_path / "videos/with space.mp4"), 1),
        ("/abs/z.webm", -1),
    ]
    assert samples[0].origin == f"{ann}:3" and names == ["0", "1", "2"]
    samples, _ = parse_list(ann)  # default root: the list file's folder
    assert samples[0].path == str(tmp_path / "a/x.mp4")


@pytest.mark.parametrize("line", ["a.mp4", "a.mp4 cat", "a.mp4 1.5", "5"])
def test_list_file_malformed_line_names_file_and_line(tmp_path, line):
    ann = tmp_path / "bad.txt"
    ann.write_text(f"ok.mp4 0\n{line}\n")
    with pytest.raises(UserError, match=r"bad\.txt:2: expected 'PATH LABEL'"):
        parse_list(ann, tmp_path)


def test_class_names_files(tmp_path):
    (tmp_path / "plain.txt").write_text("cat\ndog\n\nbird\n")
    (tmp_path / "indexed.txt").write_text("1 dog\n0 cat\n2 bird with space\n")
    (tmp_path / "comma.csv").write_text("0,cat\n1,dog\n")
    (tmp_path / "ids.json").write_text(json.dumps({"dog": 1, "cat": "0"}))
    assert read_class_names(tmp_path / "plain.txt") == ["cat", "dog", "bird"]
    assert read_class_names(tmp_path / "indexed.txt") == ["cat", "dog", "bird with space"]
    assert read_class_names(tmp_path / "comma.csv") == ["cat", "dog"]
    assert read_class_names(tmp_path / "ids.json") == ["cat", "dog"]
    (tmp_path / "gap.txt").write_text("0 cat\n2 dog\n")
    with pytest.raises(UserError, match="gap.txt"):
        read_class_names(tmp_path / "gap.txt")
    ann = tmp_path / "l.txt"
    ann.write_text("x.mp4 1\n")
    assert parse_list(ann, tmp_path, tmp_path / "plain.txt")[1] == ["cat", "dog", "bird"]


KINETICS_CSV = """label,youtube_id,time_start,time_end,split
abseiling,0347ZoDXyP0,14,24,train
air drumming,-09rvVoGkO4,30,40,train
abseiling,--33Lscn6sk,4,14,train
air drumming,zzzzzzzzzzz,0,10,train
"""


def test_kinetics_csv_class_folders_and_flat(tmp_path):
    (tmp_path / "k400").mkdir()
    touch(tmp_path / "k400/abseiling/0347ZoDXyP0_000014_000024.mp4")
    touch(tmp_path / "k400/air_drumming/-09rvVoGkO4_000030_000040.mp4")  # spaces -> _
    touch(tmp_path / "k400/--33Lscn6sk_000004_000014.mkv")  # flat, other extension
    csv = tmp_path / "train.csv"
    csv.write_text(KINETICS_CSV)
    samples, names = parse_kinetics_csv(csv, tmp_path / "k400")
    assert names == ["abseiling", "air drumming"]
    assert [s.label for s in samples] == [0, 1, 0, 1]
    assert samples[0].path == str(tmp_path / "k400/abseiling/0347ZoDXyP0_000014_000024.mp4")
    assert samples[1].path == str(tmp_path / "k400/air_drumming/-09rvVoGkO4_000030_000040.mp4")
    assert samples[2].path == str(tmp_path / "k400/--33Lscn6sk_000004_000014.mkv")
    assert samples[3].path == str(tmp_path / "k400/air drumming/zzzzzzzzzzz_000000_000010.mp4")  # missing
    assert samples[3].origin == f"{csv}:5"


def test_kinetics_test_csv_without_labels(tmp_path):
    csv = tmp_path / "test.csv"
    csv.write_text("youtube_id,time_start,time_end,split\nabcdefghijk,1,11,test\n")
    samples, names = parse_kinetics_csv(csv, tmp_path, class_names=["a", "b"])
    assert samples == [VideoSample(str(tmp_path / "abcdefghijk_000001_000011.mp4"), -1)] and names == ["a", "b"]


def test_kinetics_csv_errors(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nabseiling,x,oops,10,train\n")
    with pytest.raises(UserError, match=r"bad\.csv:2: time_start"):
        parse_kinetics_csv(csv, tmp_path)
    csv.write_text("name,id\nx,y\n")
    with pytest.raises(UserError, match=r"bad\.csv:1: expected a Kinetics CSV header"):
        parse_kinetics_csv(csv, tmp_path)
    csv.write_text(KINETICS_CSV)
    with pytest.raises(UserError, match=r"bad\.csv:3: class 'air drumming' is not among"):
        parse_kinetics_csv(csv, tmp_path, class_names=["abseiling"])


def test_ssv2_json(tmp_path):
    labels = {"Holding something next to something": "0", "Putting something onto something": "1"}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    entries = [
        {
            "id": "78687",
            "label": "holding potato next to vicks vaporub bottle",
            "template": "Holding [something] next to [something]",
            "placeholders": ["potato", "vicks"],
        },
        {
            "id": "42326",
            "label": "putting a cup onto a plate",
            "template": "Putting [something] onto [something]",
            "placeholders": ["a cup", "a plate"],
        },
    ]
    (tmp_path / "train.json").write_text(json.dumps(entries))
    (tmp_path / "test.json").write_text(json.dumps([{"id": "1"}]))
    touch(tmp_path / "videos/42326.mp4")  # a re-encoded copy is found by its stem
    samples, names = parse_ssv2_json(tmp_path / "train.json", tmp_path / "videos")
    assert names == ["Holding something next to something", "Putting something onto something"]
    assert [(s.path, s.label) for s in samples] == [
        (str(tmp_path / "videos/78687.webm"), 0),
        (str(tmp_path / "videos/42326.mp4"), 1),
    ]
    test, _ = parse_ssv2_json(tmp_path / "test.json", tmp_path / "videos")
    assert test[0].label == -1
    (tmp_path / "bad.json").write_text('[{"id": "1",\n "template": "Unknown [something]"}]')
    with pytest.raises(UserError, match=r"bad\.json: entry 0: template 'Unknown something'"):
        parse_ssv2_json(tmp_path / "bad.json", tmp_path)
    (tmp_path / "broken.json").write_text('[{"id": "1"},\n{"id": }]')
    with pytest.raises(UserError, match=r"broken\.json:2: invalid JSON"):
        parse_ssv2_json(tmp_path / "broken.json", tmp_path)
    (tmp_path / "noid.json").write_text('[{"template": "x"}]')
    with pytest.raises(UserError, match=r"noid\.json: entry 0: expected an object with an 'id'"):
        parse_ssv2_json(tmp_path / "noid.json", tmp_path)


def test_ssv2_without_labels_file(tmp_path):
    (tmp_path / "sub").mkdir()
    ann = tmp_path / "sub/validation.json"
    ann.write_text(json.dumps([{"id": "3", "template": "Pushing [something]"}]))
    with pytest.raises(UserError, match="labels.json"):
        parse_ssv2_json(ann, tmp_path)
    samples, names = parse_ssv2_json(ann, tmp_path, class_names=["Pulling something", "Pushing something"])
    assert samples[0].label == 1 and len(names) == 2


def test_folder_format(tmp_path):
    for rel in ("dog/b.webm", "dog/a.MP4", "cat/c.avi", "cat/notes.txt", "cat/._c.avi", "bird/x.mkv"):
        touch(tmp_path / rel)
    (tmp_path / ".cache").mkdir()
    samples, names = parse_folder(tmp_path)
    assert names == ["bird", "cat", "dog"]
    assert [(Path(s.path).name, s.label) for s in samples] == [("x.mkv", 0), ("c.avi", 1), ("a.MP4", 2), ("b.webm", 2)]
    with pytest.raises(UserError, match="not among"):
        parse_folder(tmp_path, class_names=["cat", "dog"])


def test_load_annotations_dispatch_and_errors(tmp_path):
    assert [detect_format(p) for p in ("a.csv", "a.json", "a.txt", tmp_path)] == ["kinetics", "ssv2", "list", "folder"]
    with pytest.raises(UserError, match="nope.txt does not exist"):
        load_annotations("list", tmp_path / "nope.txt", tmp_path)
    (tmp_path / "a.csv").write_text(KINETICS_CSV)
    with pytest.raises(UserError, match="no_root does not exist"):
        load_annotations(None, tmp_path / "a.csv", tmp_path / "no_root")
    with pytest.raises(UserError, match="unknown annotation format"):
        load_annotations("xml", tmp_path / "a.csv", tmp_path)


def test_label_range_checks():
    samples = [
        VideoSample("a", 0, "f:1"),
        VideoSample("b", 3, "f:2"),
        VideoSample("c", -1, "f:3"),
        VideoSample("d", 7, "f:4"),
    ]
    assert [s.path for s in label_errors(samples, 3)] == ["b", "d"]
    assert [s.path for s in label_errors(samples, 3, allow_unlabelled=False)] == ["b", "c", "d"]
    with pytest.raises(UserError, match=r"f:2: label 3 is outside \[0, 3\).*2 of 4 samples"):
        check_labels(samples, 3)
    check_labels(samples[:1], 3)
