"""``xvit eval --checkpoint CKPT | --model FILE.onnx [--views TxS | --views 1x3,2x3,...]``: multi-view
testing of a checkpoint, or of its ONNX export (fp32 or int8) run by onnxruntime, with its own clip
spec (X-ViT paper §4), top-1 / top-5 / mean class accuracy (and pair order accuracy on
time-reversed class pairs), confusion matrix, per-video predictions; a list of views is the
supplement's Fig. 1 study (views.csv/md/png).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from xvit.data.clip import parse_view_list
from xvit.data.video import DECODERS, check_decoder
from xvit.engine import distributed as xdist
from xvit.engine.checkpoint import CheckpointMeta, load_checkpoint
from xvit.engine.eval.evaluate import evaluate_checkpoint
from xvit.engine.eval.reports import write_reports, write_views_table
from xvit.engine.runtime import resolve_device, resolve_dtype
from xvit.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit eval``."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="model checkpoint (.safetensors written by xvit)")
    which.add_argument(
        "--model", help="an ONNX export (xvit export --format onnx [--quantize int8]), run by onnxruntime on CPU"
    )
    parser.add_argument("--data-root", help="dataset root (default: the one recorded in the checkpoint)")
    parser.add_argument(
        "--annotations", help="annotation file of the test/val split (default: the checkpoint's val split)"
    )
    parser.add_argument(
        "--format", choices=["list", "kinetics", "ssv2", "folder"], help="annotation format (default: the checkpoint's)"
    )
    parser.add_argument("--class-names", help="class-names file of the test data (default: the checkpoint's classes)")
    parser.add_argument(
        "--views",
        help="TxS (temporal clips x spatial crops), or a comma list for a sweep, "
        "e.g. 1x3,2x3,3x3,4x3,5x3 (default: the checkpoint's test views, else 2x3 for "
        "ssv2 and 1x3 otherwise)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="videos per batch (default 8)")
    parser.add_argument("--chunk-size", type=int, default=None, help="clips per forward pass (default: --batch-size)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loader workers")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype (default none)")
    parser.add_argument(
        "--decoder", choices=DECODERS, default="pyav", help="video decoder: pyav (default) or torchcodec"
    )
    parser.add_argument("--out", help="output directory (default: eval_<views>/ next to the checkpoint)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _init_distributed(device: torch.device) -> tuple[bool, torch.device]:
    """Join the ``torchrun`` process group (NCCL on CUDA, gloo on CPU) when ``WORLD_SIZE > 1``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False, device
    info = xdist.init_distributed("cuda" if device.type == "cuda" else "cpu")
    return xdist.is_dist(), info.device


def run(args: argparse.Namespace) -> int:
    """``xvit eval``: evaluate a checkpoint at one or several view settings and write the reports."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    check_decoder(args.decoder)
    if args.model and (args.device not in (None, "cpu") or args.amp != "none"):
        raise UserError("--model runs onnxruntime on the CPU in the file's precision; drop --device and --amp")
    ckpt = Path(args.checkpoint or args.model)
    distributed, device = _init_distributed(resolve_device("cpu" if args.model else args.device))
    main = xdist.rank() == 0
    try:
        model, meta = load_model(args, device)
        settings = parse_view_list(args.views) if args.views else [meta.clip.views]
        names = meta.clip.names(model.num_classes)
        out_dir = Path(args.out) if args.out else ckpt.parent / ("eval_" + "_".join(f"{t}x{s}" for t, s in settings))
        source = dict(
            root=args.data_root,
            annotations=args.annotations,
            format=args.format,
            class_names=args.class_names,
            decoder=args.decoder,
        )
        rows = []
        for t, s in settings:
            res, paths, info = evaluate_checkpoint(
                model,
                meta,
                ckpt,
                (t, s),
                device=device,
                distributed=distributed,
                batch_size=args.batch_size,
                workers=args.workers,
                amp_dtype=resolve_dtype(args.amp),
                chunk_size=args.chunk_size,
                progress=not args.no_progress,
                **source,
            )
            if main:
                sub = out_dir if len(settings) == 1 else out_dir / f"{t}x{s}"
                write_reports(sub, res, class_names=names, paths=paths, info=info)
                print_summary(res, info, sub, paths)
            rows.append(
                {
                    "views": f"{t}x{s}",
                    "num_clips": t,
                    "num_crops": s,
                    "num_views": t * s,
                    **{k: res[k] for k in ("top1", "top5", "mean_class_acc", "num_videos", "num_missing")},
                    "seconds": round(res["seconds"], 2),
                }
            )
        if main and len(settings) > 1:
            title = f"{info['model'] or ckpt.name} on {info['annotations'] or info['root']}"
            write_views_table(out_dir, rows, title=title)
            print(f"\nviews study ({out_dir}/views.csv, views.png):\n")
            print((out_dir / "views.md").read_text())
    finally:
        if distributed:
            xdist.cleanup()
    return 0


def load_model(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, CheckpointMeta]:
    """The checkpoint's model on ``device``, or the ONNX export (``OnnxModel``) and its metadata."""
    if args.checkpoint:
        return load_checkpoint(args.checkpoint, device=device)
    from xvit.engine.deploy.onnx_model import OnnxModel  # onnxruntime: the optional export extra

    model = OnnxModel(args.model)
    return model, model.meta


def print_summary(res: dict, info: dict, out_dir: Path, paths: list[str], max_listed: int = 20) -> None:
    """The headline numbers of one evaluation on stdout."""
    k = len(res["per_class_acc"])
    print(
        f"{info.get('model') or 'model'} | views {info['views']} ({info['num_clips']} temporal clip(s) x "
        f"{info['num_crops']} spatial crop(s)) | {info.get('annotations') or info.get('root')}"
    )
    print(f"  top-1            {res['top1']:6.2f} %")
    print(f"  top-5            {res['top5']:6.2f} %" + ("  (k clamped: fewer than 5 classes)" if k < 5 else ""))
    if res.get("pair_order_acc") is not None:
        print(f"  pair order acc   {res['pair_order_acc']:6.2f} %  (time-reversed class pairs)")
    print(
        f"  mean class acc   {res['mean_class_acc']:6.2f} %  (over the {res['num_classes_present']} of {k} "
        f"classes present)"
    )
    secs = res.get("seconds") or 0.0
    rate = f", {res['num_videos'] / secs:.1f} videos/s" if secs > 0 else ""
    print(
        f"  videos           {res['num_videos']} evaluated in {secs:.1f} s{rate}, "
        f"{res['num_missing']} unreadable (not counted)"
    )
    for i in res["missing"][:max_listed]:
        print(f"    missing [{i}] {paths[i]}")
    if res["num_missing"] > max_listed:
        print(f"    ... and {res['num_missing'] - max_listed} more (see metrics.json)")
    print(f"  reports          {out_dir}/")
