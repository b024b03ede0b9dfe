"""``xvit check-data``: find the entries of a dataset that would be skipped or wrong in training.

The checks and the problem kinds (``missing``, ``unreadable``, ``truncated``, ``too_short``,
``bad_label``) are :mod:`xvit.data.check`'s. Exit status 0 when nothing is found, 1 otherwise (2
for an unusable command line or annotation file). ``--json OUT`` writes the whole report.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Iterable

from xvit.data.annotations import FORMATS, load_annotations
from xvit.data.check import KINDS, check_dataset
from xvit.data.video import DECODERS
from xvit.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit check-data``."""
    parser.add_argument(
        "annotations",
        help="annotation file (list, Kinetics CSV, SSv2 JSON), or the dataset folder with --format folder",
    )
    parser.add_argument("--root", help="folder holding the videos (default: the list file's folder)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="annotation format (default: from the file name: .csv kinetics, .json ssv2, a folder, else list)",
    )
    parser.add_argument("--class-names", help="class-names file (names by line, 'INDEX NAME' lines, or JSON)")
    parser.add_argument(
        "--num-frames", type=int, default=8, help="frames per clip: shorter videos are reported (default 8)"
    )
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="parallel processes (default: min(8, CPUs))"
    )
    parser.add_argument(
        "--decoder", choices=DECODERS, default="pyav", help="video decoder: pyav (default) or torchcodec"
    )
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
    problems = check_dataset(
        samples,
        len(names),
        num_frames=args.num_frames,
        workers=args.workers,
        progress=not args.no_progress,
        decoder=args.decoder,
    )
    counts = Counter(p["kind"] for p in problems)
    videos = len({s.path for s in samples})
    _print_report(problems, counts, len(samples), videos)
    if args.json:
        report = {
            "annotations": str(args.annotations),
            "root": args.root,
            "format": args.format,
            "num_entries": len(samples),
            "num_videos": videos,
            "num_classes": len(names),
            "num_frames": args.num_frames,
            "decoder": args.decoder,
            "ok": not problems,
            "counts": {k: counts[k] for k in KINDS},
            "problems": problems,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 1 if problems else 0
