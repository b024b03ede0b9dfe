"""Exact frame indices of the dense and segment samplers, in training (seeded) and test mode."""

from __future__ import annotations

import numpy as np
import pytest

from xvit.data.sampling import clip_indices, dense_indices, multi_clip_indices, segment_indices


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_dense_test_mode_positions():
    # span = 7 * 4 + 1 = 29, starts range over [0, 100 - 29 = 71]
    assert dense_indices(100, 8, 4, mode="test") == [35, 39, 43, 47, 51, 55, 59, 63]  # centred: floor(71 / 2)
    clips = [dense_indices(100, 8, 4, mode="test", clip_idx=k, num_clips=3) for k in range(3)]
    assert [c[0] for c in clips] == [11, 35, 59]  # floor(71 * (k + 0.5) / 3)
    assert clips[2] == [59, 63, 67, 71, 75, 79, 83, 87]
    assert multi_clip_indices("dense", 100, 8, stride=4, num_clips=3) == clips


def test_dense_train_mode_is_seeded_and_in_range():
    expected_start = int(np.random.default_rng(0).integers(0, 72))
    got = dense_indices(100, 8, 4, mode="train", rng=rng(0))
    assert got == [expected_start + 4 * i for i in range(8)]
    starts = {dense_indices(100, 8, 4, mode="train", rng=rng(s))[0] for s in range(200)}
    assert min(starts) >= 0 and max(starts) <= 71 and len(starts) > 40


def test_dense_exact_fit_and_short_video_clamps_to_last_frame():
    assert dense_indices(29, 8, 4, mode="train", rng=rng()) == list(range(0, 29, 4))
    assert dense_indices(10, 8, 4, mode="test") == [0, 4, 8, 9, 9, 9, 9, 9]
    assert dense_indices(10, 8, 4, mode="train", rng=rng()) == [0, 4, 8, 9, 9, 9, 9, 9]
    assert dense_indices(1, 4, 2, mode="test") == [0, 0, 0, 0]


def test_segment_test_mode_middle_of_segments():
    assert segment_indices(80, 8, mode="test") == [5, 15, 25, 35, 45, 55, 65, 75]
    assert segment_indices(50, 8, mode="test") == [3, 9, 15, 21, 28, 34, 40, 46]  # floor((i + .5) * 6.25)


def test_segment_test_clips_are_distinct():
    two = multi_clip_indices("segment", 80, 8, num_clips=2)
    assert two == [[2, 12, 22, 32, 42, 52, 62, 72], [7, 17, 27, 37, 47, 57, 67, 77]]
    three = multi_clip_indices("segment", 48, 4, num_clips=3)  # segments of 12: offsets 2, 6, 10
    assert three == [[2, 14, 26, 38], [6, 18, 30, 42], [10, 22, 34, 46]]
    assert len({tuple(c) for c in multi_clip_indices("segment", 64, 8, num_clips=5)}) == 5


def test_segment_train_mode_one_frame_per_segment():
    got = segment_indices(80, 8, mode="train", rng=rng(3))
    expected = (np.arange(8) * 10 + np.random.default_rng(3).integers(0, 10, 8)).tolist()
    assert got == expected
    for seed in range(50):
        idx = segment_indices(50, 8, mode="train", rng=rng(seed))
        bounds = [int(np.floor(i * 6.25)) for i in range(9)]
        assert all(bounds[i] <= idx[i] < bounds[i + 1] for i in range(8))


def test_segment_short_video_repeats_frames_evenly():
    assert segment_indices(5, 8, mode="test") == [0, 0, 1, 2, 2, 3, 4, 4]
    assert segment_indices(3, 6, mode="test") == [0, 0, 1, 1, 2, 2]
    train = segment_indices(5, 8, mode="train", rng=rng(1))
    assert train == sorted(train) and set(train) == set(range(5))
    assert segment_indices(1, 4, mode="train", rng=rng()) == [0, 0, 0, 0]


def test_dispatch_and_argument_errors():
    assert clip_indices("segment", 80, 8, mode="test") == segment_indices(80, 8, mode="test")
    assert clip_indices("dense", 80, 8, stride=2, mode="test") == dense_indices(80, 8, 2, mode="test")
    for bad in (
        dict(sampling="random"),
        dict(num_video_frames=0),
        dict(num_frames=0),
        dict(mode="val"),
        dict(clip_idx=2, num_clips=2),
        dict(stride=0),
    ):
        args = dict(sampling="dense", num_video_frames=80, num_frames=8, stride=4, mode="test") | bad
        with pytest.raises(ValueError):
            clip_indices(args.pop("sampling"), args.pop("num_video_frames"), args.pop("num_frames"), **args)
