"""``xvit export --checkpoint CKPT --format onnx|pt2 [--quantize int8]``: a deployable file of a
checkpoint, checked against eager PyTorch on a random clip and a real decoded video; exit 1 if a
check exceeds the tolerance (the file is then removed)."""

from __future__ import annotations

import argparse
import json
import sys

from xvit.engine.deploy.export import (
    DEFAULT_OPSET,
    FORMATS,
    INT8_TOLERANCE,
    QUANTIZE,
    TOLERANCE,
    ExportReport,
    export_checkpoint,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit export``."""
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors written by xvit)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx (onnxruntime) or pt2 (torch.export)")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE,
        help="onnx only: dynamic int8 quantization with onnxruntime (int8 weights, activations quantized per call)",
    )
    parser.add_argument("--out", help="output file (default: the checkpoint's path with .onnx / .int8.onnx / .pt2)")
    parser.add_argument("--frames", type=int, help="frames per clip of the export (default: the checkpoint's)")
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset (default {DEFAULT_OPSET}: attention as one op; 20 for onnxruntime < 1.23)",
    )
    parser.add_argument("--video", help="video for the real-clip check (default: a generated H.264 clip)")
    parser.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help=f"max |logit difference| allowed (default {TOLERANCE})"
    )
    parser.add_argument(
        "--int8-tolerance",
        type=float,
        default=INT8_TOLERANCE,
        help=f"int8 / uint8: max |difference| of the class probabilities (default {INT8_TOLERANCE})",
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
        quantize=args.quantize,
        int8_tolerance=args.int8_tolerance,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    if not report.passed:
        print(
            f"xvit export: {report.path} removed: its logits are above the tolerance; do not deploy an export "
            "that disagrees with the checkpoint",
            file=sys.stderr,
        )
        return 1
    return 0


def print_report(report: ExportReport) -> None:
    """The file, its settings, every check and the verdicts, as lines."""
    clip, names = report.clip, "" if report.clip.class_names else " (unnamed)"
    opset = f", opset {report.opset}" if report.opset else ""
    kind = f"{report.format} {report.quantize}" if report.quantize else report.format
    shape = f"(batch, 3, {clip.num_frames}, {clip.crop_size}, {clip.crop_size})"
    took = f"exported in {report.seconds:.1f} s"
    if report.quantize_seconds is not None:
        took += f", quantized in {report.quantize_seconds:.1f} s"
    size = f"{report.size_bytes / 2**20:.1f} MiB"
    if report.fp32_size_bytes:
        size += f" (fp32 {report.fp32_size_bytes / 2**20:.1f} MiB)"
    print(f"{report.path}: {kind}{opset}, input {shape}, {report.num_classes} classes{names}, {took}, {size}")
    for c in report.checks:
        dims = "x".join(map(str, c.shape))
        extra = f", probabilities {c.prob_diff:.4f}, top-1 kept {c.top1_agree}/{c.shape[0]}"
        print(f"  {c.runtime:<28} {c.input:<40} {dims:<16} max |diff| {c.max_diff:.2e}{extra if c.quantized else ''}")
    verdict = "within" if report.max_diff <= report.tolerance else "ABOVE"
    print(f"max |logit difference| {report.max_diff:.2e}: {verdict} the tolerance {report.tolerance:.0e}")
    if report.max_prob_diff is not None:
        agree, clips = report.top1_agreement
        verdict = "within" if report.max_prob_diff <= report.int8_tolerance else "ABOVE"
        print(
            f"{report.quantize}: max |logit difference| {report.max_quantized_diff:.2e}, max |probability "
            f"difference| {report.max_prob_diff:.4f}: {verdict} the tolerance {report.int8_tolerance:g}; top-1 "
            f"class kept on {agree} of {clips} clips"
        )
