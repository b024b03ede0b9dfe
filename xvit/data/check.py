"""Dataset checks: find the entries of a dataset that would be skipped or wrong in training.

Every distinct video of the annotation file is opened, its frame count read, and its first and
last frame decoded (in a process pool). Reported, with path and annotation line:

- ``missing``: the file does not exist;
- ``unreadable``: empty, truncated (cannot open, or a frame cannot be decoded), no video stream,
  not a video;
- ``truncated``: opens and decodes, but has far fewer frames than its duration metadata says
  (less than ``TRUNCATED_FRACTION`` of duration x fps);
- ``too_short``: fewer frames than ``--num-frames`` (the sampler would repeat frames);
- ``bad_label``: a label outside ``[0, num_classes)`` (-1, unlabelled, is accepted).

The command ``xvit check-data`` is :mod:`xvit.cli.check_data`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from xvit.data.annotations import VideoSample, label_errors
from xvit.data.video import DEFAULT_DECODER, VideoDecodeError, check_decoder, open_video
from xvit.progress import progress_bar

__all__ = ["KINDS", "check_dataset", "check_video"]

KINDS = ("missing", "unreadable", "truncated", "too_short", "bad_label")
TRUNCATED_FRACTION = 0.75


def check_video(path: str, num_frames: int, decoder: str = DEFAULT_DECODER) -> tuple[str, str, int] | None:
    """``(kind, detail, frame count)`` of the problem with one video file, or None if it is fine."""
    if not os.path.exists(path):
        return "missing", "file not found", 0
    try:
        with open_video(path, decoder) as video:
            count, expected = video.num_frames, video.expected_frames
            video.get([0, count - 1])  # first and last frame: opens, seeks, decodes
    except VideoDecodeError as err:
        return "unreadable", err.reason, 0
    if expected and count < TRUNCATED_FRACTION * expected - 1:
        return "truncated", f"{count} frames, but its duration metadata implies {expected}", count
    if count < num_frames:
        return "too_short", f"{count} frames < --num-frames {num_frames}", count
    return None


def _check_one(item: tuple[str, int, str]) -> tuple[str, str, int] | None:
    return check_video(*item)


def _scan(paths: list[str], num_frames: int, workers: int, progress: bool, decoder: str) -> Iterator[tuple]:
    items = [(p, num_frames, decoder) for p in paths]
    bar = dict(total=len(items), desc="check-data", unit="video", disable=not progress, dynamic_ncols=True)
    if workers <= 1:
        yield from progress_bar(map(_check_one, items), **bar)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunksize = max(1, min(16, len(items) // (8 * workers)))
        yield from progress_bar(pool.map(_check_one, items, chunksize=chunksize), **bar)


def check_dataset(
    samples: list[VideoSample],
    num_classes: int,
    *,
    num_frames: int = 8,
    workers: int = 1,
    progress: bool = True,
    decoder: str = DEFAULT_DECODER,
) -> list[dict]:
    """Problems of ``samples``: dicts ``kind, path, where (file:line), detail`` in annotation order;
    the videos are read with ``decoder`` (``pyav`` | ``torchcodec``)."""
    check_decoder(decoder)
    paths = list(dict.fromkeys(s.path for s in samples))  # distinct, in order
    results = dict(zip(paths, _scan(paths, num_frames, workers, progress, decoder)))
    bad_labels = {id(s) for s in label_errors(samples, num_classes, allow_unlabelled=True)}
    problems = []
    for s in samples:
        if id(s) in bad_labels:
            problems.append(
                {
                    "kind": "bad_label",
                    "path": s.path,
                    "where": s.origin,
                    "detail": f"label {s.label} is outside [0, {num_classes})",
                }
            )
        found = results.get(s.path)
        if found is not None:
            problems.append({"kind": found[0], "path": s.path, "where": s.origin, "detail": found[1]})
    return problems
