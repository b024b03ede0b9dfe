"""``xvit bench-data``: data-loader throughput, seek decoding vs whole-video decoding.

For every combination of ``--num-frames`` x ``--sampling`` x method, :func:`xvit.data.bench.bench`
times ``--clips`` training clips read by a ``DataLoader`` with ``--workers`` workers (methods
``seek`` and ``full``; clips/s, ms and CPU ms per clip, frames decoded per clip, seek speed-up).
``--transform`` adds the training transform (short side 256-320, crop 224). ``--make-video``
writes the standard test video (10 s, 30 fps, 320x240 H.264, keyframe every ``--gop`` frames,
moving textured shapes) and benchmarks it with 8 and 16 frames, dense and segment sampling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import av
import torch

from xvit.data.annotations import FORMATS, load_annotations
from xvit.data.bench import METHODS, bench, make_bench_video
from xvit.data.decode import video_info
from xvit.data.sampling import SAMPLINGS
from xvit.data.transforms import build_train_transform
from xvit.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit bench-data``."""
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="video files to read")
    parser.add_argument("--list", help="annotation file of a dataset (instead of VIDEO...)")
    parser.add_argument("--root", help="video folder of --list")
    parser.add_argument("--format", choices=FORMATS, help="format of --list (default: from its name)")
    parser.add_argument(
        "--make-video", action="store_true", help="write and use the standard test video (10 s, 30 fps, 320x240 H.264)"
    )
    parser.add_argument("--gop", type=int, default=60, help="keyframe interval of --make-video (default 60 = 2 s)")
    parser.add_argument("--out-dir", help="where --make-video writes (default: a temporary folder)")
    parser.add_argument("--num-frames", type=int, nargs="+", default=[8, 16], help="frames per clip (default 8 16)")
    parser.add_argument("--sampling", nargs="+", choices=SAMPLINGS, default=list(SAMPLINGS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--stride", type=int, default=4, help="dense sampling frame stride (default 4)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--clips", type=int, default=64, help="clips per setting (default 64)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--transform", action="store_true", help="add the training transform (crop 224)")
    parser.add_argument("--json", metavar="OUT", help="write settings and results as JSON")


def _video_paths(args: argparse.Namespace, tmp: str) -> list[str]:
    if args.make_video:
        out = Path(args.out_dir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        return [str(make_bench_video(out / "bench_320x240_30fps_10s.mp4", gop=args.gop))]
    if args.list:
        samples, _ = load_annotations(args.format, args.list, args.root)
        return list(dict.fromkeys(s.path for s in samples))
    if not args.videos:
        raise UserError("no videos: pass VIDEO..., --list FILE --root DIR, or --make-video")
    missing = [v for v in args.videos if not os.path.isfile(v)]
    if missing:
        raise UserError(f"video {missing[0]} does not exist; pass existing video files")
    return list(args.videos)


def _print_table(rows: list[dict], settings: dict) -> None:
    print("  ".join(f"{k}={v}" for k, v in settings.items()))
    print(
        f"{'frames':>6} {'sampling':>8} {'method':>6} {'workers':>7} {'clips':>5} {'clips/s':>8} "
        f"{'ms/clip':>8} {'cpu ms/clip':>11} {'decoded/clip':>12} {'seek speed-up':>13}"
    )
    for r in rows:
        full = next(
            (
                f
                for f in rows
                if f["method"] == "full" and f["num_frames"] == r["num_frames"] and f["sampling"] == r["sampling"]
            ),
            None,
        )
        speedup = (
            f"{r['clips_per_s'] / full['clips_per_s']:.1f}x"
            if r["method"] == "seek" and full and full["clips_per_s"] and r["clips_per_s"]
            else ""
        )
        ms = f"{1000 / r['clips_per_s']:.1f}" if r["clips_per_s"] else "-"
        print(
            f"{r['num_frames']:>6} {r['sampling']:>8} {r['method']:>6} {r['workers']:>7} {r['clips']:>5} "
            f"{r['clips_per_s'] or '-':>8} {ms:>8} {r['cpu_ms_per_clip'] or '-':>11} "
            f"{r['frames_decoded_per_clip'] or '-':>12} {speedup:>13}"
        )


def run(args: argparse.Namespace) -> int:
    """``xvit bench-data``: print the throughput table (and write ``--json``)."""
    if args.clips < 1 or args.batch_size < 1 or args.workers < 0:
        raise UserError(
            f"--clips {args.clips} / --batch-size {args.batch_size} / --workers {args.workers}: "
            f"use clips >= 1, batch size >= 1, workers >= 0"
        )
    transform = None
    if args.transform:
        transform = build_train_transform(crop_size=224, short_side_range=(256, 320))
    with tempfile.TemporaryDirectory(prefix="xvit-bench-data-") as tmp:
        paths = _video_paths(args, tmp)
        first = video_info(paths[0])
        settings = {
            "videos": len(paths),
            "resolution": f"{first.width}x{first.height}" + (" (first video)" if len(paths) > 1 else ""),
            "fps": round(first.fps, 2),
            "video_frames": first.num_frames,
            "stride": args.stride,
            "batch": args.batch_size,
            "transform": "train crop 224" if transform else "none",
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "pyav": av.__version__,
            "python": platform.python_version(),
        }
        rows = [
            bench(
                paths,
                num_frames=t,
                sampling=s,
                method=m,
                workers=args.workers,
                clips=args.clips,
                batch_size=args.batch_size,
                stride=args.stride,
                transform=transform,
            )
            for t in args.num_frames
            for s in args.sampling
            for m in args.methods
        ]
    _print_table(rows, settings)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"settings": settings, "results": rows}, f, indent=2)
    return 0
