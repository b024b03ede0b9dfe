"""``xvit predict VIDEO... --checkpoint CKPT``: class predictions for video files, each decoded once
for all its test views; an unreadable file is one line on stderr and the others go on (exit 1)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xvit.data.clip import parse_views
from xvit.data.video import DECODERS, VideoDecodeError, check_decoder
from xvit.engine.checkpoint import load_checkpoint
from xvit.engine.predict import top_classes, video_scores
from xvit.engine.runtime import resolve_device, resolve_dtype
from xvit.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit predict``."""
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors written by xvit)")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per video (default 5)")
    parser.add_argument(
        "--views", help="TxS temporal clips x spatial crops (default: the checkpoint's test views, as xvit eval)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype (default none)")
    parser.add_argument(
        "--decoder", choices=DECODERS, default="pyav", help="video decoder: pyav (default) or torchcodec"
    )


def run(args: argparse.Namespace) -> int:
    """``xvit predict``: one table (or JSON document) of predictions; exit 1 if a video failed."""
    if args.topk < 1:
        raise UserError(f"--topk {args.topk}: must be >= 1")
    check_decoder(args.decoder)
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device=device)
    clip = meta.clip.replace(views=parse_views(args.views, key="--views")) if args.views else meta.clip
    names = meta.clip.names(model.num_classes)
    results, failed = [], 0
    for path in args.videos:
        try:
            scores = video_scores(
                model, clip, path, device=device, amp_dtype=resolve_dtype(args.amp), decoder=args.decoder
            )
        except VideoDecodeError as err:  # missing, empty, truncated, not a video: report, go on
            failed += 1
            print(f"{path}: {err.reason}".replace("\n", " "), file=sys.stderr, flush=True)
            results.append({"path": str(path), "error": err.reason})
            continue
        top = top_classes(scores, names, args.topk)
        results.append({"path": str(path), "predictions": top})
        if not args.json:
            print_table(path, top)
    if args.json:
        doc = {"checkpoint": str(args.checkpoint), "model": meta.name, "views": clip.views_text, "results": results}
        print(json.dumps(doc, indent=2))
    return 1 if failed else 0


def print_table(path: str | Path, top: list[dict]) -> None:
    """One video's predictions: rank, probability, class name."""
    print(path)
    for rank, t in enumerate(top, 1):
        print(f"  {rank:>2}  {100 * t['prob']:6.2f}%  {t['class']}")
    sys.stdout.flush()
