"""Predictions for video files with a model's own test pipeline (its ``ClipSpec``).

Each video is decoded once for all its views (``xvit.data.clip.decode_views``): the frames of the
``num_clips`` temporal clips (sampled as the model was trained: TSN segments or dense strides) are
read in one pass, each clip gives ``num_crops`` spatial crops (view ``v = temporal * num_crops +
spatial``), and the softmax scores are averaged over the views, as ``xvit eval`` does (paper §4).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from xvit.data.clip import ClipSpec, decode_views
from xvit.data.datasets import warn_if_short
from xvit.data.video import DEFAULT_DECODER, open_video
from xvit.engine.eval.evaluate import check_clip_shape, forward_views
from xvit.engine.eval.metrics import aggregate_views


def video_views(
    path: str | Path, clip: ClipSpec, views: tuple[int, int] | None = None, decoder: str = DEFAULT_DECODER
) -> Tensor:
    """The ``T x S`` test views of one video (default: ``clip.views``): ``(V, C, T, H, W)`` float.

    Raises ``VideoDecodeError`` (path and reason) when the file cannot be read; warns when the
    video has fewer frames than a clip needs (they are repeated).
    """
    num_clips, num_crops = views or clip.views
    with open_video(path, decoder) as video:
        warn_if_short(str(path), video.num_frames, clip.num_frames)
        return decode_views(video, clip.clip_indices(video.num_frames, num_clips), clip.test_transform(num_crops))


@torch.inference_mode()
def video_scores(
    model: nn.Module,
    clip: ClipSpec,
    path: str | Path,
    *,
    views: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
    decoder: str = DEFAULT_DECODER,
) -> Tensor:
    """View-averaged softmax scores ``(K,)`` of one video file (all views in one forward by default)."""
    x = video_views(path, clip, views, decoder)  # (V, C, T, H, W)
    return views_scores(model, x, device=device, amp_dtype=amp_dtype, chunk_size=chunk_size)


@torch.inference_mode()
def views_scores(
    model: nn.Module,
    x: Tensor,
    *,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """View-averaged softmax scores ``(K,)`` of one video's decoded views ``(V, C, T, H, W)``."""
    check_clip_shape(model, x[None])
    model.eval()
    logits = forward_views(
        model, x[None], device=device, amp_dtype=amp_dtype, chunk_size=chunk_size or len(x)
    )  # (1, V, K)
    return aggregate_views(logits)[0].cpu()  # (1, V, K) -> (K,)


def top_classes(scores: Tensor, names: list[str], topk: int) -> list[dict]:
    """``[{"class", "index", "prob"}, ...]``: the ``topk`` classes of one video's scores ``(K,)``."""
    probs, classes = scores.topk(min(topk, len(scores)))
    return [{"class": names[c], "index": c, "prob": round(p, 6)} for c, p in zip(classes.tolist(), probs.tolist())]


def predict_video(
    model: nn.Module,
    clip: ClipSpec,
    path: str | Path,
    *,
    views: tuple[int, int] | None = None,
    topk: int = 5,
    device: torch.device | str | None = None,
    decoder: str = DEFAULT_DECODER,
) -> list[tuple[str, float]]:
    """The ``topk`` classes of a video file with their probabilities (softmax averaged over views).

    ``model, clip = xvit.load_model(checkpoint)`` gives both arguments (or, for an ONNX export,
    ``model = OnnxModel(path)`` and ``model.clip``). ``views`` is ``(temporal
    clips, spatial crops)`` (default: the clip spec's). ``device`` defaults to the model's.
    ``decoder``: ``pyav`` | ``torchcodec``. Raises ``VideoDecodeError`` (a ``UserError``) when the
    file cannot be read.
    """
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device  # an OnnxModel has none: cpu
    scores = video_scores(model, clip, path, views=views, device=device, decoder=decoder)
    return [(t["class"], t["prob"]) for t in top_classes(scores, clip.names(len(scores)), topk)]
