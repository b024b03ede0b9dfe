"""``xvit bench-data``: data-loader throughput, seek decoding vs whole-video decoding, per decoder.

For every combination of ``--decoders`` x ``--num-frames`` x ``--sampling`` x method x
``--workers``, :func:`xvit.data.bench.bench_interleaved` times ``--clips`` training clips read
by a ``DataLoader`` (methods ``seek`` and ``full``; clips/s, ms and CPU ms per clip, frames
decoded per clip, seek speed-up, and with two decoders the second's clips/s over the first's),
``--repeats`` times interleaved, and prints the median. ``--transform`` adds the training
transform (short side 256-320, crop 224). ``--make-video`` writes the standard test video
(10 s, 30 fps, 320x240 H.264, keyframe every ``--gop`` frames, moving textured shapes).
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
from xvit.data.bench import METHODS, bench_interleaved, make_bench_video
from xvit.data.sampling import SAMPLINGS
from xvit.data.transforms import build_train_transform
from xvit.data.video import DECODERS, check_decoder, video_info
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
    parser.add_argument(
        "--decoders",
        "--decoder",
        nargs="+",
        choices=DECODERS,
        default=["pyav"],
        help="video decoders, benchmarked interleaved (default pyav; e.g. --decoders pyav torchcodec)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader workers (default 0; e.g. 0 2)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats of every setting (median shown)")
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


def _find(rows: list[dict], **key) -> dict | None:
    return next((r for r in rows if all(r[k] == v for k, v in key.items())), None)


def _print_table(rows: list[dict], settings: dict, decoders: list[str]) -> None:
    print("  ".join(f"{k}={v}" for k, v in settings.items()))
    versus = f"{decoders[1]}/{decoders[0]}" if len(decoders) > 1 else ""
    print(
        f"{'decoder':>10} {'frames':>6} {'sampling':>8} {'method':>6} {'workers':>7} {'clips':>5} {'clips/s':>8} "
        f"{'ms/clip':>8} {'cpu ms/clip':>11} {'decoded/clip':>12} {'seek speed-up':>13} {versus:>{len(versus)}}"
    )
    for r in rows:
        same = {k: r[k] for k in ("decoder", "num_frames", "sampling", "workers")}
        full = _find(rows, **same, method="full")
        speedup = (
            f"{r['clips_per_s'] / full['clips_per_s']:.1f}x"
            if r["method"] == "seek" and full and full["clips_per_s"] and r["clips_per_s"]
            else ""
        )
        first = _find(rows, **{**same, "decoder": decoders[0]}, method=r["method"])
        ratio = (
            f"{r['clips_per_s'] / first['clips_per_s']:.2f}"
            if versus and r["decoder"] != decoders[0] and first and first["clips_per_s"] and r["clips_per_s"]
            else ""
        )
        ms = f"{1000 / r['clips_per_s']:.1f}" if r["clips_per_s"] else "-"
        print(
            f"{r['decoder']:>10} {r['num_frames']:>6} {r['sampling']:>8} {r['method']:>6} {r['workers']:>7} "
            f"{r['clips']:>5} {r['clips_per_s'] or '-':>8} {ms:>8} {r['cpu_ms_per_clip'] or '-':>11} "
            f"{r['frames_decoded_per_clip'] or '-':>12} {speedup:>13} {ratio:>{len(versus)}}"
        )


def _versions(decoders: list[str]) -> dict:
    """Library versions of the decoders (and the FFmpeg each one runs)."""
    out = {"pyav": f"{av.__version__} (FFmpeg {av.ffmpeg_version_info})"}
    if "torchcodec" in decoders:
        import torchcodec

        out["torchcodec"] = f"{torchcodec.__version__} (FFmpeg {torchcodec.ffmpeg_major_version}, system)"
    return out


def run(args: argparse.Namespace) -> int:
    """``xvit bench-data``: print the throughput table (and write ``--json``)."""
    if args.clips < 1 or args.batch_size < 1 or min(args.workers) < 0 or args.repeats < 1:
        raise UserError(
            f"--clips {args.clips} / --batch-size {args.batch_size} / --workers {args.workers} / "
            f"--repeats {args.repeats}: use clips >= 1, batch size >= 1, workers >= 0, repeats >= 1"
        )
    decoders = list(dict.fromkeys(args.decoders))
    for decoder in decoders:
        check_decoder(decoder)
    transform = None
    if args.transform:
        transform = build_train_transform(crop_size=224, short_side_range=(256, 320))
    with tempfile.TemporaryDirectory(prefix="xvit-bench-data-") as tmp:
        paths = _video_paths(args, tmp)
        first = video_info(paths[0], decoders[0])
        settings = {
            "videos": len(paths),
            "resolution": f"{first.width}x{first.height}" + (" (first video)" if len(paths) > 1 else ""),
            "fps": round(first.fps, 2),
            "video_frames": first.num_frames,
            "stride": args.stride,
            "batch": args.batch_size,
            "clips": args.clips,
            "repeats": args.repeats,
            "transform": "train crop 224" if transform else "none",
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            **_versions(decoders),
            "python": platform.python_version(),
        }
        rows = bench_interleaved(
            paths,
            decoders=decoders,
            num_frames=args.num_frames,
            samplings=args.sampling,
            methods=args.methods,
            workers=args.workers,
            repeats=args.repeats,
            clips=args.clips,
            batch_size=args.batch_size,
            stride=args.stride,
            transform=transform,
        )
    _print_table(rows, settings, decoders)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"settings": settings, "results": rows}, f, indent=2)
    return 0
