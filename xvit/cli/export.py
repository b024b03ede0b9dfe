"""``xvit export --checkpoint CKPT --format onnx|pt2``: a deployable file of a checkpoint, checked
against eager PyTorch on a random clip and a real decoded video; exit 1 if a check exceeds the
tolerance (the file is then removed)."""

from __future__ import annotations

import argparse
import json
import sys

from xvit.engine.export import FORMATS, TOLERANCE, export_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit export``."""
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors written by xvit)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx (onnxruntime) or pt2 (torch.export)")
    parser.add_argument("--out", help="output file (default: the checkpoint's path with .onnx / .pt2)")
    parser.add_argument("--frames", type=int, help="frames per clip of the export (default: the checkpoint's)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the torch.onnx exporter's)")
    parser.add_argument("--video", help="video for the real-clip check (default: a generated H.264 clip)")
    parser.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help=f"max |logit difference| allowed (default {TOLERANCE})"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """``xvit export``: write, verify, print the checks; exit 1 when they fail."""
    report = export_checkpoint(
        args.checkpoint,
        args.format,
        args.out,
        frames=args.frames,
        opset=args.opset,
        video=args.video,
        tolerance=args.tolerance,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        clip, names = report.clip, "" if report.clip.class_names else " (unnamed)"
        opset = f", opset {report.opset}" if report.opset else ""
        shape = f"(batch, 3, {clip.num_frames}, {clip.crop_size}, {clip.crop_size})"
        print(
            f"{report.path}: {report.format}{opset}, input {shape}, {report.num_classes} classes{names}, "
            f"exported in {report.seconds:.1f} s"
        )
        for c in report.checks:
            shape = "x".join(map(str, c.shape))
            print(f"  {c.runtime:<28} {c.input:<40} {shape:<16} max |diff| {c.max_diff:.2e}")
        verdict = "within" if report.passed else "ABOVE"
        print(f"max |logit difference| {report.max_diff:.2e}: {verdict} the tolerance {report.tolerance:.0e}")
    if not report.passed:
        print(
            f"xvit export: {report.path} removed: max |logit difference| {report.max_diff:.2e} is above "
            f"{report.tolerance:.0e}; do not deploy an export that disagrees with the checkpoint",
            file=sys.stderr,
        )
        return 1
    return 0
