"""``xvit check-data``: find the entries of a dataset that would be skipped or wrong in training.

Every distinct video of the annotation file is opened, its frame count read, and its first and
last frame decoded (in a process pool). Reported, with path and annotation line:

- ``missing``: the file does not exist;
- ``unreadable``: empty, truncated (cannot open, or a frame cannot be decoded), no video stream,
  not a video;
- ``truncated``: opens and decodes, but has far fewer frames than its duration metadata says
  (less than ``TRUNCATED_FRACTION`` of duration x fps);
- ``too_short``: fewer frames than ``--num-frames`` (the sampler would repeat frames);
- ``bad_label``: a label outside ``[0, num_classes)`` (-1, unlabelled, is accepted).

Exit status 0 when nothing is found, 1 otherwise (2 for an unusable command line or annotation
file). ``--json OUT`` writes the whole report.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Iterator

from tqdm import tqdm

from xvit.data.annotations import FORMATS, VideoSample, label_errors, load_annotations
from xvit.data.decode import VideoDecodeError, open_video
from xvit.errors import UserError

__all__ = ["check_video", "check_dataset", "add_arguments", "run", "KINDS"]

KINDS = ("missing", "unreadable", "truncated", "too_short", "bad_label")
TRUNCATED_FRACTION = 0.75


def check_video(path: str, num_frames: int) -> tuple[str, str, int] | None:
    """``(kind, detail, frame count)`` of the problem with one video file, or None if it is fine."""
    if not os.path.exists(path):
        return "missing", "file not found", 0
    try:
        with open_video(path) as video:
            count, expected = video.num_frames, video.expected_frames
            video.get([0, count - 1])  # first and last frame: opens, seeks, decodes
    except VideoDecodeError as err:
        return "unreadable", err.reason, 0
    if expected and count < TRUNCATED_FRACTION * expected - 1:
        return "truncated", f"{count} frames, but its duration metadata implies {expected}", count
    if count < num_frames:
        return "too_short", f"{count} frames < --num-frames {num_frames}", count
    return None


def _check_one(item: tuple[str, int]) -> tuple[str, str, int] | None:
    return check_video(*item)


def _scan(paths: list[str], num_frames: int, workers: int, progress: bool) -> Iterator[tuple]:
    items = [(p, num_frames) for p in paths]
    bar = dict(total=len(items), desc="check-data", unit="video", disable=not progress, dynamic_ncols=True)
    if workers <= 1:
        yield from tqdm(map(_check_one, items), **bar)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from tqdm(pool.map(_check_one, items, chunksize=max(1, min(16, len(items) // (8 * workers)))), **bar)


def check_dataset(samples: list[VideoSample], num_classes: int, *, num_frames: int = 8, workers: int = 1,
                  progress: bool = True) -> list[dict]:
    """Problems of ``samples``: dicts ``kind, path, where (file:line), detail`` in annotation order."""
    paths = list(dict.fromkeys(s.path for s in samples))  # distinct, in order
    results = dict(zip(paths, _scan(paths, num_frames, workers, progress)))
    bad_labels = {id(s) for s in label_errors(samples, num_classes, allow_unlabelled=True)}
    problems = []
    for s in samples:
        if id(s) in bad_labels:
            problems.append({"kind": "bad_label", "path": s.path, "where": s.origin,
                             "detail": f"label {s.label} is outside [0, {num_classes})"})
        found = results.get(s.path)
        if found is not None:
            problems.append({"kind": found[0], "path": s.path, "where": s.origin, "detail": found[1]})
    return problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit check-data``."""
    parser.add_argument("annotations", help="annotation file (list, Kinetics CSV, SSv2 JSON), or the dataset "
                        "folder with --format folder")
    parser.add_argument("--root", help="folder holding the videos (default: the list file's folder)")
    parser.add_argument("--format", choices=FORMATS, help="annotation format (default: from the file name: "
                        ".csv kinetics, .json ssv2, a folder, else list)")
    parser.add_argument("--class-names", help="class-names file (names by line, 'INDEX NAME' lines, or JSON)")
    parser.add_argument("--num-frames", type=int, default=8, help="frames per clip: shorter videos are "
                        "reported (default 8)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="parallel processes (default: min(8, CPUs))")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON to OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _print_report(problems: Iterable[dict], counts: Counter, total: int, videos: int) -> None:
    for p in problems:
        where = f"{p['where']}: " if p["where"] and p["where"] != p["path"] else ""
        print(f"{p['kind']:<10} {where}{p['path']}: {p['detail']}")
    summary = ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in KINDS)
    verdict = "OK" if not sum(counts.values()) else f"{sum(counts.values())} problems"
    print(f"checked {total} entries ({videos} distinct videos): {summary}: {verdict}")


def run(args: argparse.Namespace) -> int:
    """``xvit check-data``: exit 0 if the dataset is clean, 1 if any problem was found."""
    if args.num_frames < 1:
        raise UserError(f"--num-frames {args.num_frames}: must be >= 1")
    samples, names = load_annotations(args.format, args.annotations, args.root, args.class_names)
    if not samples:
        raise UserError(f"{args.annotations}: no entries found; check the file and --format")
    problems = check_dataset(samples, len(names), num_frames=args.num_frames, workers=args.workers,
                             progress=not args.no_progress)
    counts = Counter(p["kind"] for p in problems)
    videos = len({s.path for s in samples})
    _print_report(problems, counts, len(samples), videos)
    if args.json:
        report = {"annotations": str(args.annotations), "root": args.root, "format": args.format,
                  "num_entries": len(samples), "num_videos": videos, "num_classes": len(names),
                  "num_frames": args.num_frames, "ok": not problems,
                  "counts": {k: counts[k] for k in KINDS}, "problems": problems}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 1 if problems else 0
