"""Which frames of a video make a clip: dense (fixed stride) and segment-based (TSN) sampling.

The recipes of the X-ViT paper (§4 and its supplement): Kinetics-400 uses dense sampling
(``num_frames`` frames ``stride`` apart, a random start in training, evenly spaced clips at
test); Something-Something-v2 uses segment sampling (TSN: the video cut into ``num_frames``
equal segments, one frame from each, random within its segment in training).

Test-time clips, both samplers: clip ``k`` of ``K`` sits at fraction ``(k + 0.5) / K`` of the
possible positions: for dense sampling the start ranges over ``[0, N - span]``, so one clip is
centred and K clips are evenly spaced with equal margins at both ends (rather than PySlowFast's
``k / (K - 1)``, which puts the first and last clip on the video's ends); for segment sampling
the offset inside every segment, so the K clips are distinct (not K copies of the middle frames)
whenever the segments have at least K frames.

Short videos: dense sampling clamps indices to the last frame (the clip repeats the last frame,
as PySlowFast does); segment sampling with fewer frames than segments repeats frames evenly in
order (each frame about ``num_frames / N`` times), as its segments shrink below one frame.
All functions are pure and return lists of ints in ``[0, num_video_frames)``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = ["dense_indices", "segment_indices", "clip_indices", "multi_clip_indices", "SAMPLINGS"]

SAMPLINGS = ("dense", "segment")
Mode = Literal["train", "test"]


def _check(num_video_frames: int, num_frames: int, mode: str, clip_idx: int, num_clips: int) -> None:
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    if not 0 <= clip_idx < num_clips:
        raise ValueError(f"clip_idx must be in [0, num_clips={num_clips}), got {clip_idx}")


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def dense_indices(
    num_video_frames: int,
    num_frames: int,
    stride: int,
    *,
    mode: Mode = "train",
    clip_idx: int = 0,
    num_clips: int = 1,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """``num_frames`` indices ``stride`` apart (span ``(num_frames - 1) * stride + 1``).

    Train: start uniform in ``[0, N - span]``. Test: start ``floor((N - span) * (clip_idx + 0.5)
    / num_clips)``. A video shorter than the span starts at 0 and is clamped to its last frame.
    """
    _check(num_video_frames, num_frames, mode, clip_idx, num_clips)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    span = (num_frames - 1) * stride + 1
    max_start = max(0, num_video_frames - span)
    if mode == "train":
        start = int(_rng(rng).integers(0, max_start + 1))
    else:
        start = math.floor(max_start * (clip_idx + 0.5) / num_clips)
    return [min(start + i * stride, num_video_frames - 1) for i in range(num_frames)]


def segment_indices(
    num_video_frames: int,
    num_frames: int,
    *,
    mode: Mode = "train",
    clip_idx: int = 0,
    num_clips: int = 1,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """One index per segment ``[i * N / T, (i + 1) * N / T)`` of the video (TSN).

    Train: uniform within each segment (at least its first frame). Test: at fraction
    ``(clip_idx + 0.5) / num_clips`` of every segment.
    """
    _check(num_video_frames, num_frames, mode, clip_idx, num_clips)
    seg = num_video_frames / num_frames  # frames per segment (may be < 1)
    if mode == "train":
        lows = [math.floor(i * seg) for i in range(num_frames)]
        highs = [max(lo + 1, math.floor((i + 1) * seg)) for i, lo in enumerate(lows)]
        picks = _rng(rng).integers(lows, highs)  # high exclusive, one draw per segment
        indices = [int(p) for p in picks]
    else:
        offset = (clip_idx + 0.5) / num_clips
        indices = [math.floor((i + offset) * seg) for i in range(num_frames)]
    return [min(i, num_video_frames - 1) for i in indices]


def clip_indices(
    sampling: str,
    num_video_frames: int,
    num_frames: int,
    *,
    stride: int = 4,
    mode: Mode = "train",
    clip_idx: int = 0,
    num_clips: int = 1,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Dispatch to ``dense_indices`` or ``segment_indices`` (``stride`` is ignored by the latter)."""
    if sampling == "dense":
        return dense_indices(
            num_video_frames, num_frames, stride, mode=mode, clip_idx=clip_idx, num_clips=num_clips, rng=rng
        )
    if sampling == "segment":
        return segment_indices(num_video_frames, num_frames, mode=mode, clip_idx=clip_idx, num_clips=num_clips, rng=rng)
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")


def multi_clip_indices(
    sampling: str, num_video_frames: int, num_frames: int, *, stride: int = 4, num_clips: int = 1
) -> list[list[int]]:
    """The ``num_clips`` test clips of a video, clip ``k`` at position ``(k + 0.5) / num_clips``."""
    return [
        clip_indices(
            sampling, num_video_frames, num_frames, stride=stride, mode="test", clip_idx=k, num_clips=num_clips
        )
        for k in range(num_clips)
    ]
