"""Synthetic benchmark: real mp4s, deterministic, consistent lists, and classes that need order.

The direction tests work on decoded frames only: an order-free statistic (one that would be the
same for the frames in any order) cannot separate the two classes of a pair, while a simple
order-aware one (last frame minus first) separates them perfectly.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from xvit.cli import main
from xvit.data.synthetic import (
    CLASS_NAMES,
    CLASSES,
    FLIP_LABEL_MAP,
    class_descriptions,
    ensure_synthetic,
    generate_synthetic,
    scenes,
    writer,
)
from xvit.errors import UserError

TINY = dict(videos_per_class=2, num_frames=8, size=32, workers=1, progress=False)


def decode(path: Path) -> np.ndarray:
    """All frames of an mp4 as uint8 (T, H, W, 3) RGB."""
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def read_list(path: Path) -> list[tuple[str, int]]:
    return [(p, int(label)) for p, label in (line.split(" ") for line in path.read_text().splitlines())]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    generate_synthetic(root, seed=0, **TINY)
    return root


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, list[np.ndarray]]:
    """Decoded frames of 8 videos of every class (8 frames, 32 px), by class name."""
    root = tmp_path_factory.mktemp("pairs")
    generate_synthetic(root, seed=0, videos_per_class=8, num_frames=8, size=32, workers=1, progress=False)
    return {name: [decode(p) for p in sorted((root / "videos" / name).glob("*.mp4"))] for name in CLASS_NAMES}


def object_mask(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) bool: pixels on the other side of mid-grey than most of the video (the object)."""
    lum = frames.astype(np.float32).mean(axis=-1)  # (T, H, W)
    return lum < 127.5 if np.median(lum) > 127.5 else lum > 127.5


def centroid_x(frames: np.ndarray) -> np.ndarray:
    """(T,) x coordinate of the object's centroid in each frame."""
    mask = object_mask(frames)
    xs = np.arange(frames.shape[2])
    return (mask * xs).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)


def area(frames: np.ndarray) -> np.ndarray:
    return object_mask(frames).sum(axis=(1, 2)).astype(np.float64)  # (T,)


def toward_object(frames: np.ndarray) -> np.ndarray:
    """(T,) mean brightness, signed so that it grows as the object becomes more visible."""
    lum = frames.astype(np.float32).mean(axis=(1, 2, 3))
    return -lum if np.median(frames) > 127.5 else lum


def best_threshold_accuracy(a: list[float], b: list[float]) -> float:
    """Accuracy of the best one-threshold classifier separating the values of a and b."""
    values = sorted(set(a) | set(b))
    cuts = [values[0] - 1] + [(x + y) / 2 for x, y in zip(values, values[1:])] + [values[-1] + 1]
    n = len(a) + len(b)
    best = 0.0
    for cut in cuts:
        correct = sum(x < cut for x in a) + sum(y >= cut for y in b)
        best = max(best, correct / n, 1 - correct / n)
    return best


def assert_needs_order(pos: list[np.ndarray], neg: list[np.ndarray], stat, order_free: dict) -> None:
    """``stat`` (T,) per video: last - first separates pos (> 0) from neg (< 0); order-free ones can't."""
    pos_delta = [stat(v)[-1] - stat(v)[0] for v in pos]
    neg_delta = [stat(v)[-1] - stat(v)[0] for v in neg]
    assert min(pos_delta) > 0 > max(neg_delta), (pos_delta, neg_delta)
    for name, summary in order_free.items():
        a, b = [summary(stat(v)) for v in pos], [summary(stat(v)) for v in neg]
        assert best_threshold_accuracy(a, b) < 1.0, f"order-free {name} separates the pair: {a} vs {b}"


def test_videos_are_real_mp4s_with_expected_frames(tiny):
    videos = sorted((tiny / "videos").rglob("*.mp4"))
    assert len(videos) == 2 * len(CLASS_NAMES)
    for path in videos:
        frames = decode(path)
        assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8


def test_lists_classes_and_meta_are_consistent(tiny):
    assert (tiny / "classes.txt").read_text().splitlines() == list(CLASS_NAMES)
    train, val = read_list(tiny / "train.txt"), read_list(tiny / "val.txt")
    assert len(train) == len(val) == len(CLASS_NAMES)  # 2 per class, 20 % -> 1 val video each
    listed = train + val
    assert len({p for p, _ in listed}) == len(listed)
    for rel, label in listed:
        assert not Path(rel).is_absolute() and (tiny / rel).is_file()
        assert rel.split("/")[:2] == ["videos", CLASS_NAMES[label]]
    on_disk = {p.relative_to(tiny).as_posix() for p in (tiny / "videos").rglob("*.mp4")}
    assert on_disk == {p for p, _ in listed}
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["complete"] and meta["classes"] == list(CLASS_NAMES)
    assert (meta["num_train"], meta["num_val"], meta["num_videos"]) == (len(train), len(val), len(listed))
    assert meta["params"] == {"seed": 0, "videos_per_class": 2, "num_frames": 8, "size": 32, "fps": 12,
                              "val_fraction": 0.2}  # fmt: skip


def test_same_seed_same_frames_any_worker_count_other_seed_differs(tiny, tmp_path):
    again = generate_synthetic(tmp_path / "again", seed=0, **{**TINY, "workers": 2})
    other = generate_synthetic(tmp_path / "other", seed=1, **TINY)
    differ = 0
    for rel, _ in read_list(tiny / "train.txt") + read_list(tiny / "val.txt"):
        first = decode(tiny / rel)
        assert np.array_equal(first, decode(again.root / rel)), rel
        differ += not np.array_equal(first, decode(other.root / rel))
    assert differ == 2 * len(CLASS_NAMES)


def test_left_right_need_frame_order(pairs):
    """Same multiset of positions (time reversal); only the sign of the displacement differs."""
    order_free = {"mean x": np.mean, "spread of x": np.ptp, "median x": np.median}
    assert_needs_order(pairs["moving_right"], pairs["moving_left"], centroid_x, order_free)
    right = np.concatenate([np.sort(centroid_x(v)) for v in pairs["moving_right"]])
    left = np.concatenate([np.sort(centroid_x(v)) for v in pairs["moving_left"]])
    assert abs(right.mean() - left.mean()) < 0.15 * 32  # positions visited: the same range


def test_approaching_receding_need_frame_order(pairs):
    order_free = {"mean area": np.mean, "max area": np.max, "min area": np.min}
    assert_needs_order(pairs["approaching"], pairs["receding"], area, order_free)


def test_appearing_disappearing_need_frame_order(pairs):
    order_free = {"mean brightness": np.mean, "brightness range": np.ptp}
    assert_needs_order(pairs["appearing"], pairs["disappearing"], toward_object, order_free)


def test_appearance_controls_are_still(pairs):
    for name in ("static_cross", "static_ring"):
        for frames in pairs[name]:
            masks = object_mask(frames)
            assert (masks != masks[0]).mean() < 0.02  # the same pixels in every frame


def test_clockwise_means_clockwise_on_screen():
    """A bar turned by growing theta: its right end moves down (y points down), i.e. clockwise."""
    look = scenes._Look("bar", np.full((2, 3), 255, np.float32), "plain", 1.0, 0.0)
    frames = np.zeros((2, 64, 64, 3), np.float32)
    const = np.full(2, 32, np.float32)
    scenes._draw(frames, look, const, const, np.full(2, 20, np.float32), np.radians([0, 30]).astype(np.float32))
    ys, xs = np.nonzero(frames[1, ..., 0] > 128)
    assert ys[np.argmax(xs)] > 32


def test_class_table_and_flip_map():
    table = class_descriptions()
    assert all(f"`{c.name}`" in table for c in CLASSES)
    assert {c.kind for c in CLASSES} == {"temporal", "interaction", "appearance"}
    for a, b in FLIP_LABEL_MAP.items():
        assert FLIP_LABEL_MAP[b] == a
        assert {CLASS_NAMES[a], CLASS_NAMES[b]} in ({"moving_left", "moving_right"},
                                                    {"rotating_clockwise", "rotating_counterclockwise"})  # fmt: skip


def test_ensure_synthetic_reuses_complete_and_rebuilds_incomplete(tmp_path, monkeypatch):
    params = dict(videos_per_class=1, num_frames=3, size=16, workers=1, progress=False)
    root = ensure_synthetic(tmp_path, **params)
    assert (root / "meta.json").is_file() and root.parent == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary folder left

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(writer, "generate_synthetic", fail)
    assert ensure_synthetic(tmp_path, **params) == root
    monkeypatch.undo()
    next((root / "videos").rglob("*.mp4")).unlink()  # damaged: a video is missing
    assert ensure_synthetic(tmp_path, **params) == root
    assert len(list((root / "videos").rglob("*.mp4"))) == len(CLASS_NAMES)
    assert ensure_synthetic(tmp_path, **{**params, "seed": 1}) != root  # other parameters, other folder


def test_interrupted_generation_is_not_complete_and_can_be_redone(tmp_path, monkeypatch):
    params = dict(videos_per_class=1, num_frames=3, size=16, workers=1, progress=False)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_run_jobs", interrupt)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(tmp_path / "ds", **params)
    assert json.loads((tmp_path / "ds" / "meta.json").read_text())["complete"] is False
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path / "cache", **params)
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary folder is gone
    monkeypatch.undo()
    info = generate_synthetic(tmp_path / "ds", **params)  # the same folder, redone in place
    assert json.loads((info.root / "meta.json").read_text())["complete"] is True


def test_bad_parameters_and_non_empty_folder_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="size 33"):
        generate_synthetic(tmp_path / "a", size=33, progress=False)
    with pytest.raises(UserError, match="val_fraction"):
        generate_synthetic(tmp_path / "a", val_fraction=1.0, progress=False)
    with pytest.raises(UserError, match="unknown"):
        ensure_synthetic(tmp_path, frames=8)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="busy"):
        generate_synthetic(tmp_path / "busy", **TINY)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_cli_make_synthetic(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["make-synthetic", str(out), "--videos-per-class", "1", "--num-frames", "3", "--size", "16",
            "--workers", "1", "--no-progress", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{len(CLASS_NAMES)} videos" in printed and "classes" in printed
    assert json.loads((out / "meta.json").read_text())["params"]["seed"] == 3
    assert main(argv) == 0  # rewriting its own dataset is allowed
    assert len(read_list(out / "train.txt")) == len(CLASS_NAMES)  # 1 per class: no val video
