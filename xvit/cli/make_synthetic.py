"""``xvit make-synthetic OUT_DIR [...]``: write the built-in synthetic temporal benchmark.

The library half is :mod:`xvit.data.synthetic` (classes, rendering, mp4 writing, the cache).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xvit.data.synthetic import CLASSES, DEFAULTS, FLIP_LABEL_MAP, generate_synthetic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit make-synthetic``."""
    d = DEFAULTS
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="folder to write (new or empty)")
    parser.add_argument("--seed", type=int, default=d["seed"], help="random seed (default %(default)s)")
    parser.add_argument("--videos-per-class", type=int, default=d["videos_per_class"], help="(default %(default)s)")
    parser.add_argument("--num-frames", type=int, default=d["num_frames"], help="per video (default %(default)s)")
    parser.add_argument("--size", type=int, default=d["size"], help="square frame side, pixels (default %(default)s)")
    parser.add_argument("--fps", type=int, default=d["fps"], help="frame rate written in the mp4 (default %(default)s)")
    parser.add_argument(
        "--val-fraction", type=float, default=d["val_fraction"], help="held-out share per class (default %(default)s)"
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per available core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.epilog = "classes:\n" + "\n".join(f"  {i:2d} {c.name:26s} {c.kind}" for i, c in enumerate(CLASSES))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    """Generate the dataset and print a summary."""
    info = generate_synthetic(
        args.out_dir, seed=args.seed, videos_per_class=args.videos_per_class, num_frames=args.num_frames,
        size=args.size, fps=args.fps, val_fraction=args.val_fraction, workers=args.workers,
        progress=not args.no_progress,
    )  # fmt: skip
    p = info.params
    kinds = {k: sum(c.kind == k for c in CLASSES) for k in ("temporal", "interaction", "appearance")}
    print(
        f"wrote {info.num_videos} videos ({info.num_train} train / {info.num_val} val) of {len(info.classes)} "
        f"classes ({', '.join(f'{n} {k}' for k, n in kinds.items())}), {p['num_frames']} frames of "
        f"{p['size']}x{p['size']} at {p['fps']} fps, seed {p['seed']}, to {info.root} in {info.seconds:.1f} s"
    )
    print(f"lists: {info.train_list} {info.val_list}; classes: {info.classes_file}")
    print(f"horizontal flip swaps labels {FLIP_LABEL_MAP} (left/right, clockwise/counter-clockwise)")
    return 0
