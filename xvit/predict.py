"""``xvit predict``: class predictions for video files with a checkpoint's own test pipeline.

Each video is decoded once for all its views: the frames of the ``num_clips`` temporal clips
(sampled as the model was trained: TSN segments or dense strides, SPEC §6) are read in one pass,
each clip gives ``num_crops`` spatial crops (view ``v = temporal * num_crops + spatial``), and
the softmax scores are averaged over the views, as ``xvit eval`` does (X-ViT paper §4).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from xvit.errors import UserError
from xvit.evaluate import (
    AMP_DTYPES,
    check_clip_shape,
    check_pipeline,
    class_names_of,
    default_views,
    forward_views,
    load_checkpoint,
    resolve_device,
    pipeline_from_meta,
)
from xvit.metrics import aggregate_views


def clip_indices(num_video_frames: int, pipeline: dict, num_clips: int) -> list[list[int]]:
    """Frame indices of each of the ``num_clips`` test clips of a video (the dataset's sampling)."""
    from xvit.data.sampling import SAMPLINGS, multi_clip_indices

    if pipeline["sampling"] not in SAMPLINGS:
        raise UserError(f"sampling {pipeline['sampling']!r} in the checkpoint's meta is unknown; "
                        f"use one of {', '.join(SAMPLINGS)}")
    return multi_clip_indices(pipeline["sampling"], num_video_frames, pipeline["num_frames"],
                              stride=pipeline["frame_stride"], num_clips=num_clips)


def build_transform(pipeline: dict, num_crops: int) -> Callable[[Tensor], Tensor]:
    """The checkpoint's test transform: uint8 ``(T, H, W, 3)`` -> float ``(num_crops, C, T, H, W)``."""
    from xvit.data.transforms import build_test_transform

    return build_test_transform(crop_size=pipeline["crop_size"], short_side=pipeline["test_short_side"],
                                num_crops=num_crops, mean=pipeline["mean"], std=pipeline["std"])


def video_views(path: str | Path, pipeline: dict, views: tuple[int, int],
                transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The ``T x S`` test views of one video, decoded once: ``(V, C, T, H, W)`` float.

    Raises ``VideoDecodeError`` (path and reason) when the file cannot be read.
    """
    from xvit.data.decode import open_video

    num_clips, num_crops = views
    transform = transform or build_transform(pipeline, num_crops)
    with open_video(path) as video:
        clips = clip_indices(video.num_frames, pipeline, num_clips)
        wanted = sorted({i for clip in clips for i in clip})
        frames = video.get(wanted)  # (F, H, W, 3) uint8, each wanted frame once
    row = {f: j for j, f in enumerate(wanted)}
    out = [transform(frames[[row[i] for i in clip]]) for clip in clips]  # each (S, C, T, H, W)
    return torch.cat(out)  # (T*S, C, T, H, W), v = temporal * S + spatial


@torch.inference_mode()
def video_scores(model: nn.Module, meta: dict, path: str | Path, *, views: tuple[int, int] = (1, 1),
                 device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None,
                 chunk_size: int | None = None) -> Tensor:
    """View-averaged softmax scores ``(K,)`` of one video file (all views in one forward by default)."""
    pipeline = pipeline_from_meta(meta, model)
    x = video_views(path, pipeline, views)  # (V, C, T, H, W)
    check_clip_shape(model, x[None])
    model.eval()
    logits = forward_views(model, x[None], device=device, amp_dtype=amp_dtype,
                           chunk_size=chunk_size or len(x))  # (1, V, K)
    return aggregate_views(logits)[0].cpu()  # (1, V, K) -> (K,)


def predict_video(model: nn.Module, meta: dict, path: str | Path, *, views: tuple[int, int] = (1, 1),
                  topk: int = 5, device: torch.device | str | None = None) -> list[tuple[str, float]]:
    """The ``topk`` classes of a video file with their probabilities (softmax averaged over views).

    ``meta`` is the checkpoint's metadata (``xvit.checkpoint.load_model`` returns it with the
    model); its ``data`` entry gives the test pipeline and the class names. ``views`` is
    ``(temporal clips, spatial crops)``. ``device`` defaults to the model's. Raises
    ``VideoDecodeError`` (a ``UserError``) when the file cannot be read.
    """
    if device is None:
        device = next(model.parameters()).device
    scores = video_scores(model, meta, path, views=views, device=device)
    names = class_names_of(meta, len(scores))
    probs, classes = scores.topk(min(topk, len(scores)))
    return [(names[c], float(p)) for c, p in zip(classes.tolist(), probs.tolist())]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit predict``."""
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors written by xvit)")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per video (default 5)")
    parser.add_argument("--views", help="TxS temporal clips x spatial crops (default: the checkpoint's test "
                        "views, as xvit eval)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none", help="autocast dtype (default none)")


def run(args: argparse.Namespace) -> int:
    """``xvit predict``: one table (or JSON document) of predictions; exit 1 if a video failed."""
    from xvit.data.decode import VideoDecodeError
    from xvit.data.transforms import parse_views

    if args.topk < 1:
        raise UserError(f"--topk {args.topk}: must be >= 1")
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint)
    model.to(device).eval()
    views = parse_views(args.views or default_views(meta))
    pipeline = pipeline_from_meta(meta, model)
    check_pipeline(pipeline, model, Path(args.checkpoint))
    build_transform(pipeline, views[1])  # a bad pipeline is one error (exit 2), not one per video
    names = class_names_of(meta, model.num_classes)
    results, failed = [], 0
    for path in args.videos:
        try:
            scores = video_scores(model, meta, path, views=views, device=device, amp_dtype=AMP_DTYPES[args.amp])
        except VideoDecodeError as err:  # missing, empty, truncated, not a video: report, go on
            failed += 1
            msg = f"{path}: {err.reason}".replace("\n", " ")
            print(msg, file=sys.stderr, flush=True)
            results.append({"path": str(path), "error": err.reason})
            continue
        probs, classes = scores.topk(min(args.topk, len(scores)))
        top = [{"class": names[c], "index": c, "prob": round(p, 6)} for c, p in zip(classes.tolist(), probs.tolist())]
        results.append({"path": str(path), "predictions": top})
        if not args.json:
            print_table(path, top)
    if args.json:
        doc = {"checkpoint": str(args.checkpoint), "model": (meta.get("model") or {}).get("name"),
               "views": f"{views[0]}x{views[1]}", "results": results}
        print(json.dumps(doc, indent=2))
    return 1 if failed else 0


def print_table(path: str | Path, top: list[dict]) -> None:
    """One video's predictions: rank, probability, class name."""
    print(path)
    for rank, t in enumerate(top, 1):
        print(f"  {rank:>2}  {100 * t['prob']:6.2f}%  {t['class']}")
    sys.stdout.flush()
