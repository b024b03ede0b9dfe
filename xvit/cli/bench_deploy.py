"""``xvit bench-deploy``: clips/s, export time, file size and peak memory of X-ViT in PyTorch eager,
onnxruntime fp32, onnxruntime int8 and torch.export's pt2, side by side in one run
(``xvit.bench.deploy``); ``--accuracy CKPT``: the accuracy an int8 export costs on the
checkpoint's val set (``xvit.bench.int8``)."""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import nullcontext
from pathlib import Path

from xvit.errors import UserError
from xvit.models.sizes import SIZES

# xvit.bench.deploy.RUNTIMES and DEFAULT_RUNTIMES (not imported: --help imports no torch)
RUNTIMES, DEFAULT_RUNTIMES = ("eager", "onnx", "int8", "uint8", "pt2"), ("eager", "onnx", "int8", "pt2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes", nargs="+", default=["tiny", "base"], help="X-ViT sizes, patch 16, 224 px (default tiny base)"
    )
    p.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument(
        "--runtimes",
        nargs="+",
        choices=RUNTIMES,
        default=list(DEFAULT_RUNTIMES),
        help=f"runtimes (default: {' '.join(DEFAULT_RUNTIMES)})",
    )
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of every runtime (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes (default 3; medians shown)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1; the first measures memory)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="seconds of calls per timed phase (default 2)")
    p.add_argument("--classes", type=int, default=400, help="classifier size (default 400)")
    p.add_argument("--out-dir", type=Path, help="keep the checkpoints and exports here (default: temporary)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write settings, every pass and the rows as JSON")
    p.add_argument(
        "--accuracy",
        metavar="CKPT",
        help="instead: export CKPT to fp32 ONNX and the quantized kinds of --runtimes (int8; uint8) and evaluate "
        "them and CKPT on its val set (top-1, pair order)",
    )
    p.add_argument("--workers", type=int, default=0, help="--accuracy: data-loader workers (default 0)")


def run(args: argparse.Namespace) -> int:
    keep = nullcontext(args.out_dir) if args.out_dir else tempfile.TemporaryDirectory(prefix="xvit-bench-deploy-")
    with keep as out:
        work = Path(out)
        work.mkdir(parents=True, exist_ok=True)
        if args.accuracy:
            from xvit.bench.int8 import format_accuracy, int8_accuracy

            quantize = tuple(r for r in args.runtimes if r in ("int8", "uint8"))
            doc = int8_accuracy(args.accuracy, work, quantize=quantize, workers=args.workers)
            text = format_accuracy(doc)
        else:
            from xvit.bench.deploy import DeployConfig, bench_deploy, format_report

            unknown = [s for s in args.sizes if s not in SIZES]
            if unknown:
                raise UserError(f"--sizes {' '.join(unknown)}: unknown; use {', '.join(SIZES)}")
            cfg = DeployConfig(
                sizes=tuple(args.sizes),
                frames=args.frames,
                classes=args.classes,
                batch_sizes=tuple(args.batch_sizes),
                runtimes=tuple(args.runtimes),
                threads=args.threads,
                repeats=args.repeats,
                warmup=args.warmup,
                min_seconds=args.min_seconds,
            )
            doc = bench_deploy(cfg, work)
            text = format_report(doc)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0
