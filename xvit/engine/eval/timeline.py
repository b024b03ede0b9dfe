"""Predictions over time for a long video: sliding windows, each one clip of the model's sampling.

A window is the span of one test clip: for dense sampling ``(T - 1) * frame_stride + 1`` frames
(the model sees frames ``stride`` apart, as in training); for segment sampling (TSN) a span of
``--window`` seconds (default ``T * frame_stride`` frames) cut into T segments, the middle frame
of each. Windows start every ``--window-stride`` seconds (default: one window length, so they
tile the video), and a last window is aligned with the video's end so its tail is covered.

The video is read in one sequential decode (``xvit.data.stream``) in a background thread
(``xvit.engine.eval.prefetch``) while the model runs: only the frames of the windows not yet scored
are held, so memory does not grow with the video's length. Each window gets the clip spec's
spatial crops, and the softmax scores are averaged over them, as in ``xvit predict``.
Outputs: ``write_timeline`` (CSV and JSON) and ``xvit.engine.eval.timeline_plot`` (PNG).
"""

from __future__ import annotations

import csv
import json
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xvit.data.clip import ClipSpec
from xvit.data.decode import VideoDecodeError, open_video
from xvit.data.stream import stream_frames
from xvit.engine.eval.evaluate import check_clip_shape, forward_views
from xvit.engine.eval.metrics import aggregate_views
from xvit.engine.eval.predict import top_classes
from xvit.engine.eval.prefetch import prefetch
from xvit.errors import UserError

THUMBNAILS = 8  # frames kept for the picture's time axis
THUMB_HEIGHT = 72  # their height in pixels


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one video are, in frames."""

    num_frames: int  # frames of the video
    fps: float
    length: int  # frames spanned by one window
    stride: int  # frames between two window starts
    offsets: tuple[int, ...]  # the model's T sampled frames, relative to a window's start
    starts: tuple[int, ...]  # first frame of each window

    def indices(self, window: int) -> list[int]:
        """The T frame indices of a window (clamped to the last frame of a short video)."""
        return [min(self.starts[window] + o, self.num_frames - 1) for o in self.offsets]

    def seconds(self, window: int) -> tuple[float, float]:
        """(start, end) of a window in seconds."""
        start = self.starts[window]
        return start / self.fps, min(start + self.length, self.num_frames) / self.fps


def plan_windows(
    clip: ClipSpec,
    num_frames: int,
    fps: float,
    *,
    stride_seconds: float | None = None,
    window_seconds: float | None = None,
) -> WindowPlan:
    """The windows of a ``num_frames``-frame video at ``fps`` for a model fed ``clip``s."""
    if not fps or fps <= 0:
        raise UserError(f"the video has no usable frame rate ({fps}); a timeline needs one to place its windows")
    for flag, value in (("--window-stride", stride_seconds), ("--window", window_seconds)):
        if value is not None and value <= 0:
            raise UserError(f"{flag} {value}: give a positive number of seconds")
    if clip.sampling == "dense":
        if window_seconds is not None:
            raise UserError(
                "--window: a dense-sampling model's window is its clip span "
                f"({(clip.num_frames - 1) * clip.frame_stride + 1} frames); leave --window out"
            )
        length = (clip.num_frames - 1) * clip.frame_stride + 1
    else:
        length = round(window_seconds * fps) if window_seconds else clip.num_frames * clip.frame_stride
        length = max(1, length)
    offsets = tuple(clip.clip_indices(length, 1)[0])  # the test sampling inside one window
    stride = max(1, round(stride_seconds * fps)) if stride_seconds else length
    starts = list(range(0, max(num_frames - length, 0) + 1, stride))
    if starts[-1] + length < num_frames:
        starts.append(num_frames - length)  # cover the tail
    return WindowPlan(num_frames, float(fps), length, stride, offsets, tuple(starts))


def _thumbnail(frame: np.ndarray, height: int = THUMB_HEIGHT) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, W * height / H, 3) uint8."""
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    width = max(1, round(frame.shape[1] * height / frame.shape[0]))
    small = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return small[0].permute(1, 2, 0).clamp(0, 255).to(torch.uint8).numpy()


def window_clips(
    path: str | Path, plan: WindowPlan, transform: Callable[[Tensor], Tensor], thumbs: set[int]
) -> Iterator[tuple[int, Tensor, np.ndarray | None]]:
    """``(window, views (S, C, T, H, W), thumbnail or None)`` for every window, in order, from one
    sequential decode. Frames are dropped as soon as no later window needs them."""
    wanted = sorted({i for w in range(len(plan.starts)) for i in plan.indices(w)})
    frames = stream_frames(path, wanted)
    held: dict[int, np.ndarray] = {}  # decoded frames that this or a later window uses
    ended = False
    for w in range(len(plan.starts)):
        indices = plan.indices(w)
        while not ended and indices[-1] not in held:
            item = next(frames, None)
            if item is None:
                ended = True  # the stream is shorter than its metadata said
            else:
                held[item[0]] = item[1]
        if not held:
            raise VideoDecodeError(str(path), "no decodable video frame")
        newest = held[max(held)]  # past the stream's end, frames repeat its last one
        clip = torch.from_numpy(np.stack([held.get(i, newest) for i in indices]))  # (T, H, W, 3) uint8
        thumb = _thumbnail(clip[len(indices) // 2].numpy()) if w in thumbs else None
        yield w, transform(clip), thumb  # (S, C, T, h, w)
        if w + 1 < len(plan.starts):
            keep_from, last = plan.indices(w + 1)[0], max(held)
            held = {i: f for i, f in held.items() if i >= keep_from or i == last}


@dataclass
class Timeline:
    """The scores of every window of one video."""

    path: str
    plan: WindowPlan
    scores: Tensor  # (windows, K) softmax averaged over the crops
    names: list[str]
    crops: int
    thumbnails: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (time in s, image)
    seconds: float = 0.0  # wall time of decoding + model
    peak_rss_mib: float = 0.0  # the process's peak resident memory when it finished

    def rows(self, topk: int) -> list[dict]:
        """One dict per window: times, frames and its top-k classes."""
        out = []
        for w in range(len(self.plan.starts)):
            start, end = self.plan.seconds(w)
            indices = self.plan.indices(w)
            out.append(
                {
                    "window": w,
                    "start_s": round(start, 3),
                    "end_s": round(end, 3),
                    "frames": [indices[0], indices[-1]],
                    "top": top_classes(self.scores[w], self.names, topk),
                }
            )
        return out


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.inference_mode()
def video_timeline(
    model: nn.Module,
    clip: ClipSpec,
    path: str | Path,
    *,
    stride_seconds: float | None = None,
    window_seconds: float | None = None,
    crops: int | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> Timeline:
    """Scores of every window of a video (``crops`` spatial crops each, default the clip spec's)."""
    start_time = time.perf_counter()
    with open_video(path) as video:
        num_frames, fps = video.num_frames, video.fps
    plan = plan_windows(clip, num_frames, fps, stride_seconds=stride_seconds, window_seconds=window_seconds)
    crops = crops or clip.views[1]
    count = len(plan.starts)
    thumbs = {round(i * (count - 1) / max(1, THUMBNAILS - 1)) for i in range(min(THUMBNAILS, count))}
    model.eval()
    scores, batch, thumbnails = [], [], []

    def flush() -> None:
        x = torch.stack(batch)  # (B, S, C, T, H, W)
        check_clip_shape(model, x)
        scores.append(aggregate_views(forward_views(model, x, device=device, chunk_size=len(x) * crops)))
        batch.clear()

    for w, views, thumb in prefetch(window_clips(path, plan, clip.test_transform(crops), thumbs), depth=batch_size):
        if thumb is not None:
            thumbnails.append((sum(plan.seconds(w)) / 2, thumb))
        batch.append(views)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    probs = torch.cat(scores).cpu()  # (windows, K)
    names = clip.names(probs.shape[1])
    elapsed = time.perf_counter() - start_time
    return Timeline(str(path), plan, probs, names, crops, thumbnails, elapsed, peak_rss_mib())


def write_timeline(timeline: Timeline, out_dir: str | Path, topk: int, model_name: str | None) -> dict[str, Path]:
    """``<stem>.timeline.csv`` and ``.json`` in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(timeline.path).stem
    paths = {"csv": out_dir / f"{stem}.timeline.csv", "json": out_dir / f"{stem}.timeline.json"}
    rows = timeline.rows(topk)
    k = min(topk, len(timeline.names))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["window", "start_s", "end_s", *[f"{c}{r}" for r in range(1, k + 1) for c in ("class", "prob")]]
        )
        for row in rows:
            top = [v for t in row["top"] for v in (t["class"], t["prob"])]
            writer.writerow([row["window"], row["start_s"], row["end_s"], *top])
    plan = timeline.plan
    doc = {
        "video": timeline.path,
        "model": model_name,
        "num_frames": plan.num_frames,
        "fps": plan.fps,
        "duration_s": round(plan.num_frames / plan.fps, 3),
        "window_frames": plan.length,
        "stride_frames": plan.stride,
        "sampled_offsets": list(plan.offsets),
        "crops": timeline.crops,
        "seconds": round(timeline.seconds, 3),
        "peak_rss_mib": round(timeline.peak_rss_mib, 1),
        "windows": rows,
    }
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    return paths
