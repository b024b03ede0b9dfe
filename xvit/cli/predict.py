"""``xvit predict VIDEO... --checkpoint CKPT | --model FILE.onnx``: class predictions for video
files, each decoded once for all its test views; an unreadable file is one line on stderr and the
others go on (exit 1). ``--timeline``: top-k over sliding windows of each video, written as CSV,
JSON and PNG.

Where the time goes: the videos are decoded in a background thread (``Prefetch``) two ahead of
the model, and with ``--checkpoint`` that thread starts as soon as the clip spec has been read from
the checkpoint's metadata, so the first videos decode while the model code (timm) is imported and
the weights are loaded. ``--json``'s ``timing`` (and ``--timings``, one line on stderr) splits the
whole command, from its process start, into imports, load, waiting for decoding, model and output.
The model code, onnxruntime and the timeline's modules are imported only on the paths that use them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from xvit.data.clip import ClipSpec, parse_views
from xvit.data.video import DECODERS, VideoDecodeError, check_decoder
from xvit.engine.checkpoint import load_checkpoint, read_meta
from xvit.engine.eval.predict import top_classes, video_views, views_scores
from xvit.engine.eval.prefetch import Prefetch
from xvit.engine.runtime import resolve_device, resolve_dtype
from xvit.engine.timing import PhaseClock, start_method
from xvit.errors import UserError

# the phases of --json's timing, in the order they happen (other_seconds: the rest of the command)
PHASES = ("imports", "load", "decode_wait", "model", "output")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit predict``."""
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="model checkpoint (.safetensors written by xvit)")
    source.add_argument("--model", help="ONNX file written by xvit export --format onnx (run by onnxruntime, CPU)")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per video (default 5)")
    parser.add_argument(
        "--views", help="TxS temporal clips x spatial crops (default: the checkpoint's test views, as xvit eval)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument(
        "--timings",
        action="store_true",
        help="one line on stderr: the whole command's seconds split into imports, load, decode wait, model, output "
        "(not with --timeline)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype (default none)")
    parser.add_argument(
        "--decoder", choices=DECODERS, default="pyav", help="video decoder: pyav (default) or torchcodec"
    )
    timeline = parser.add_argument_group("timeline over a long video")
    timeline.add_argument("--timeline", action="store_true", help="top-k per sliding window; CSV, JSON and PNG")
    timeline.add_argument(
        "--window-stride", type=float, metavar="SECONDS", help="seconds between window starts (default: one window)"
    )
    timeline.add_argument(
        "--window",
        type=float,
        metavar="SECONDS",
        help="window length, segment-sampling models only (default T x stride)",
    )
    timeline.add_argument("--out", default="timeline", help="folder of the timeline files (default ./timeline)")
    timeline.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")


def load_predictor(args: argparse.Namespace) -> tuple[nn.Module, ClipSpec, str | None, torch.device]:
    """The model (a PyTorch checkpoint or an onnxruntime session), its clip spec, name and device."""
    if args.model:
        if args.device not in (None, "cpu") or args.amp != "none":
            raise UserError("--model runs the ONNX file with onnxruntime on CPU; drop --device / --amp")
        from xvit.engine.deploy.onnx_model import OnnxModel

        model = OnnxModel(args.model)
        return model, model.clip, model.name, torch.device("cpu")
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device=device)
    return model, meta.clip, meta.name, device


def with_views(clip: ClipSpec, args: argparse.Namespace) -> ClipSpec:
    """``clip`` with ``--views`` when given."""
    return clip.replace(views=parse_views(args.views, key="--views")) if args.views else clip


def _decoded(paths: list[str], clip: ClipSpec, decoder: str) -> Iterator[tuple[str, Tensor | VideoDecodeError]]:
    """(path, views (V, C, T, H, W)) per video, or (path, the error) for one that cannot be read."""
    for path in paths:
        try:
            yield path, video_views(path, clip, decoder=decoder)
        except VideoDecodeError as err:
            yield path, err


def run(args: argparse.Namespace) -> int:
    """``xvit predict``: one table (or JSON document) of predictions; exit 1 if a video failed."""
    clock = PhaseClock()
    clock.add("imports", clock.elapsed())  # process start -> here: interpreter, torch, the data pipeline
    if args.topk < 1:
        raise UserError(f"--topk {args.topk}: must be >= 1")
    check_decoder(args.decoder)
    if args.timeline:
        model, clip, name, device = load_predictor(args)
        return run_timeline(args, model, with_views(clip, args), name, device)
    with clock.phase("load"):  # ONNX: the session, which holds the clip spec; a checkpoint: its metadata only
        if args.model:
            model, clip, name, device = load_predictor(args)
        else:
            model, meta = None, read_meta(args.checkpoint)
            clip, name = meta.clip, meta.name
    clip = with_views(clip, args)
    with Prefetch(_decoded(args.videos, clip, args.decoder), depth=2) as decoded:  # decoding starts now
        if model is None:  # the model code and weights load while the first videos decode
            with clock.phase("imports"):
                importlib.import_module("xvit.models.factory")
            with clock.phase("load"):
                model, _, _, device = load_predictor(args)
        results, failed, loop_s = predict_videos(args, model, clip, device, decoded, clock)
    clock.add("decode_wait", decoded.wait_seconds)
    timing = command_timing(args, clock, videos=len(results) - failed, loop_s=loop_s)
    if args.timings:
        print(timings_line(timing), file=sys.stderr, flush=True)
    if args.json:
        source = {"onnx": str(args.model)} if args.model else {"checkpoint": str(args.checkpoint)}
        doc = {**source, "model": name, "views": clip.views_text, "timing": timing, "results": results}
        print(json.dumps(doc, indent=2))
    return 1 if failed else 0


def predict_videos(
    args: argparse.Namespace, model: nn.Module, clip: ClipSpec, device, decoded: Prefetch, clock: PhaseClock
) -> tuple[list[dict], int, float]:
    """Score every decoded video in order, printing its table unless ``--json``: (results, failures, seconds)."""
    names = clip.names(model.num_classes)
    amp_dtype = resolve_dtype(args.amp)
    results, failed, start = [], 0, time.perf_counter()
    for path, views in decoded:
        if isinstance(views, VideoDecodeError):  # missing, empty, truncated, not a video: report, go on
            failed += 1
            print(f"{path}: {views.reason}".replace("\n", " "), file=sys.stderr, flush=True)
            results.append({"path": str(path), "error": views.reason})
            continue
        with clock.phase("model"):
            scores = views_scores(model, views, device=device, amp_dtype=amp_dtype)
        with clock.phase("output"):
            top = top_classes(scores, names, args.topk)
            results.append({"path": str(path), "predictions": top})
            if not args.json:
                print_table(path, top)
    return results, failed, time.perf_counter() - start


def command_timing(args: argparse.Namespace, clock: PhaseClock, videos: int, loop_s: float) -> dict:
    """``--json``'s ``timing``: the loop's figures (``seconds``: from the model loaded to the last video)
    and the whole command's split into ``PHASES`` (``command_seconds`` from the process start)."""
    parts = clock.breakdown(PHASES)
    return {
        "videos": videos,
        "seconds": round(loop_s, 4),
        "model_seconds": round(parts["model_seconds"], 4),
        "videos_per_s": round(videos / loop_s, 3) if loop_s > 0 else None,
        "runtime": "onnxruntime" if args.model else "pytorch",
        "threads": torch.get_num_threads(),
        **{key: round(value, 4) for key, value in parts.items() if key != "model_seconds"},
        "model_fraction": round(parts["model_seconds"] / parts["command_seconds"], 4),
        "start": start_method(),
    }


def timings_line(t: dict) -> str:
    """``--timings``: the whole command's seconds and their split, on one line."""
    parts = " + ".join(f"{name.replace('_', ' ')} {t[f'{name}_seconds']:.2f}" for name in (*PHASES, "other"))
    return (
        f"timings: command {t['command_seconds']:.2f} s = {parts}; model / command {t['model_fraction']:.3f} "
        f"({t['videos']} videos, {t['threads']} threads, {t['runtime']}, start from {t['start']})"
    )


def run_timeline(args: argparse.Namespace, model: nn.Module, clip: ClipSpec, name: str | None, device) -> int:
    """``--timeline``: windows of every video -> CSV, JSON, PNG under ``--out``; exit 1 if a video failed."""
    from xvit.engine.eval.timeline import video_timeline, write_timeline
    from xvit.engine.eval.timeline_plot import plot_timeline

    if args.decoder != "pyav":
        raise UserError(f"--timeline streams the video in one pass with PyAV; drop --decoder {args.decoder}")
    if args.views and clip.views[0] != 1:
        raise UserError(f"--views {args.views}: a timeline has one temporal clip per window; give 1xS (e.g. 1x3)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    failed = 0
    for path in args.videos:
        try:
            timeline = video_timeline(
                model,
                clip,
                path,
                stride_seconds=args.window_stride,
                window_seconds=args.window,
                batch_size=args.batch_size,
                device=device,
            )
        except VideoDecodeError as err:
            failed += 1
            print(f"{path}: {err.reason}".replace("\n", " "), file=sys.stderr, flush=True)
            continue
        paths = write_timeline(timeline, args.out, args.topk, name)
        paths["png"] = plot_timeline(timeline, Path(args.out) / f"{Path(path).stem}.timeline.png")
        plan = timeline.plan
        windows = f"{len(plan.starts)} windows of {plan.length / plan.fps:.2f} s every {plan.stride / plan.fps:.2f} s"
        written = ", ".join(str(p) for p in paths.values())
        print(
            f"{path}: {windows} in {timeline.seconds:.1f} s, peak RSS {timeline.peak_rss_mib:.0f} MiB -> {written}",
            flush=True,
        )
    return 1 if failed else 0


def print_table(path: str | Path, top: list[dict]) -> None:
    """One video's predictions: rank, probability, class name."""
    print(path)
    for rank, t in enumerate(top, 1):
        print(f"  {rank:>2}  {100 * t['prob']:6.2f}%  {t['class']}")
    sys.stdout.flush()
