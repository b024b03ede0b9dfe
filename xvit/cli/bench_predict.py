"""``xvit bench-predict [VIDEO...] [--model NAME | --checkpoint CKPT]``: where the whole ``xvit
predict`` command's time goes (imports, checkpoint load, waiting for decoding, model, output), and
model time / whole command, on 8 written H.264 videos of different sizes (``xvit.bench.predict``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import nullcontext
from pathlib import Path

from xvit.bench.predict import DEFAULT_MODEL, bench_predict, format_report, write_checkpoint, write_videos


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="videos to predict (default: write 8, 240p-720p)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model of the random-weight checkpoint written (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--checkpoint", help="use this checkpoint instead of writing one")
    parser.add_argument("--classes", type=int, default=400, help="classes of the written checkpoint (default 400)")
    parser.add_argument("--views", help="TxS views passed to xvit predict (default: the checkpoint's, 1x3 if written)")
    parser.add_argument("--device", help="passed to xvit predict --device (default: its own, cuda if available)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the command (default 3; median shown)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs on the smallest video first (default 1)")
    parser.add_argument("--out-dir", type=Path, help="keep the written videos and checkpoint here (default: temporary)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write settings, every run and medians as JSON")


def run(args: argparse.Namespace) -> int:
    keep = nullcontext(args.out_dir) if args.out_dir else tempfile.TemporaryDirectory(prefix="xvit-bench-predict-")
    with keep as out:
        folder = Path(out)
        videos = args.videos or write_videos(folder / "videos")
        checkpoint = args.checkpoint or write_checkpoint(
            folder / f"{args.model}.safetensors", args.model, num_classes=args.classes
        )
        extra = [*(["--views", args.views] if args.views else []), *(["--device", args.device] if args.device else [])]
        doc = bench_predict(videos, checkpoint, repeats=args.repeats, warmup=args.warmup, extra=extra)
    print(format_report(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0
