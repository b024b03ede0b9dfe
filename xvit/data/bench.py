"""``xvit bench-data``: data-loader throughput, seek decoding vs whole-video decoding.

For every combination of ``--num-frames`` x ``--sampling`` x method, a ``DataLoader`` with
``--workers`` workers produces ``--clips`` training clips (random offsets, videos taken in turn);
the time is measured from the creation of the loader's iterator to the last batch, so worker
start-up is included (a small cost next to dozens of clips; skipping the first batch instead
would leave out the work the workers prefetch meanwhile). Methods: ``seek`` = ``decode_frames``
(seek to a keyframe, decode only what the clip needs); ``full`` = ``decode_all`` then index.
Besides clips/s, the table gives the process CPU time per clip and the frames decoded per clip,
which depend less on other load on a shared machine. ``--transform`` adds the training
transform (short side 256-320, crop 224). ``--make-video`` writes the standard test video
(10 s, 30 fps, 320x240 H.264, keyframe every ``--gop`` frames, moving textured shapes) and
benchmarks it with 8 and 16 frames, dense and segment sampling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xvit.data.annotations import FORMATS, load_annotations
from xvit.data.decode import open_video, video_info
from xvit.data.sampling import SAMPLINGS, clip_indices
from xvit.errors import UserError

__all__ = ["make_bench_video", "bench", "add_arguments", "run"]

METHODS = ("seek", "full")


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random colour texture (h, w, 3) uint8: noise upsampled from an 8x coarser grid."""
    coarse = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    fine = np.repeat(np.repeat(coarse, 8, 0), 8, 1)[:h, :w]
    return np.clip(fine + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _bench_frames(seconds: float, fps: int, width: int, height: int, seed: int = 0):
    """Frames (H, W, 3) uint8: a scrolling textured background and 4 textured shapes moving on it."""
    rng = np.random.default_rng(seed)
    background = _texture(rng, 2 * height, 2 * width)
    shapes = [(_texture(rng, height // 3, width // 4), rng.uniform(-3, 3, 2), rng.uniform(0, 1, 2))
              for _ in range(4)]
    ys, xs = np.mgrid[: height // 3, : width // 4]
    disc = (ys / (height // 3) - 0.5) ** 2 + (xs / (width // 4) - 0.5) ** 2 < 0.25  # elliptic mask
    for t in range(int(seconds * fps)):
        dy, dx = (t * 2) % height, (t * 3) % width
        frame = background[dy : dy + height, dx : dx + width].copy()
        for i, (tex, velocity, origin) in enumerate(shapes):
            y = int(origin[0] * height + velocity[0] * t) % (height - tex.shape[0])
            x = int(origin[1] * width + velocity[1] * t) % (width - tex.shape[1])
            patch = frame[y : y + tex.shape[0], x : x + tex.shape[1]]
            mask = disc if i % 2 else np.ones_like(disc)  # ellipses and rectangles
            patch[mask] = tex[mask]
        yield frame


def make_bench_video(path: str | Path, seconds: float = 10.0, fps: int = 30, width: int = 320,
                     height: int = 240, gop: int = 60) -> Path:
    """Write the standard benchmark video (H.264 yuv420p, crf 23, keyframe every ``gop`` frames)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"g": str(gop), "crf": "23", "preset": "fast",
                                        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for image in _bench_frames(seconds, fps, width, height):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


class _Clips(Dataset):
    """``clips`` training clips taken in turn from ``paths``, decoded by ``method``."""

    def __init__(self, paths: list[str], clips: int, num_frames: int, sampling: str, stride: int,
                 method: str, transform=None, seed: int = 0) -> None:
        self.paths, self.clips, self.num_frames, self.sampling = paths, clips, num_frames, sampling
        self.stride, self.method, self.transform, self.seed = stride, method, transform, seed

    def __len__(self) -> int:
        return self.clips

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, float]:
        cpu = time.process_time()
        rng = np.random.default_rng((self.seed, i))
        with open_video(self.paths[i % len(self.paths)]) as video:
            wanted = clip_indices(self.sampling, video.num_frames, self.num_frames, stride=self.stride,
                                  mode="train", rng=rng)
            frames = video.get(wanted) if self.method == "seek" else video.get_all()[wanted]  # (T, H, W, 3)
            decoded = video.frames_decoded
        if self.transform is not None:
            frames, _ = self.transform(frames, 0)  # (C, T, crop, crop)
        return frames, decoded, time.process_time() - cpu


def bench(paths: list[str], *, num_frames: int, sampling: str, method: str, workers: int, clips: int,
          batch_size: int = 8, stride: int = 4, transform=None) -> dict:
    """Clips/s of one setting (worker start-up included), frames decoded and CPU time per clip
    (process CPU time of ``__getitem__``: less sensitive than clips/s to a shared machine)."""
    data = _Clips(paths, clips, num_frames, sampling, stride, method, transform)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, shuffle=False)
    timed = decoded = 0
    cpu = 0.0
    start = time.perf_counter()
    for frames, counts, cpu_seconds in loader:
        timed += len(frames)
        decoded += int(counts.sum())
        cpu += float(cpu_seconds.sum())
    seconds = time.perf_counter() - start
    return {"method": method, "num_frames": num_frames, "sampling": sampling, "workers": workers,
            "clips": timed, "seconds": round(seconds, 3),
            "clips_per_s": round(timed / seconds, 2) if timed and seconds else None,
            "frames_decoded_per_clip": round(decoded / timed, 1) if timed else None,
            "cpu_ms_per_clip": round(1000 * cpu / timed, 1) if timed else None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit bench-data``."""
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="video files to read")
    parser.add_argument("--list", help="annotation file of a dataset (instead of VIDEO...)")
    parser.add_argument("--root", help="video folder of --list")
    parser.add_argument("--format", choices=FORMATS, help="format of --list (default: from its name)")
    parser.add_argument("--make-video", action="store_true", help="write and use the standard test video "
                        "(10 s, 30 fps, 320x240 H.264)")
    parser.add_argument("--gop", type=int, default=60, help="keyframe interval of --make-video (default 60 = 2 s)")
    parser.add_argument("--out-dir", help="where --make-video writes (default: a temporary folder)")
    parser.add_argument("--num-frames", type=int, nargs="+", default=[8, 16], help="frames per clip (default 8 16)")
    parser.add_argument("--sampling", nargs="+", choices=SAMPLINGS, default=list(SAMPLINGS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--stride", type=int, default=4, help="dense sampling frame stride (default 4)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--clips", type=int, default=64, help="clips per setting (default 64)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--transform", action="store_true", help="add the training transform (crop 224)")
    parser.add_argument("--json", metavar="OUT", help="write settings and results as JSON")


def _video_paths(args: argparse.Namespace, tmp: str) -> list[str]:
    if args.make_video:
        out = Path(args.out_dir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        return [str(make_bench_video(out / "bench_320x240_30fps_10s.mp4", gop=args.gop))]
    if args.list:
        samples, _ = load_annotations(args.format, args.list, args.root)
        return list(dict.fromkeys(s.path for s in samples))
    if not args.videos:
        raise UserError("no videos: pass VIDEO..., --list FILE --root DIR, or --make-video")
    missing = [v for v in args.videos if not os.path.isfile(v)]
    if missing:
        raise UserError(f"video {missing[0]} does not exist; pass existing video files")
    return list(args.videos)


def _print_table(rows: list[dict], settings: dict) -> None:
    print("  ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"{'frames':>6} {'sampling':>8} {'method':>6} {'workers':>7} {'clips':>5} {'clips/s':>8} "
          f"{'ms/clip':>8} {'cpu ms/clip':>11} {'decoded/clip':>12} {'seek speed-up':>13}")
    for r in rows:
        full = next((f for f in rows if f["method"] == "full" and f["num_frames"] == r["num_frames"]
                     and f["sampling"] == r["sampling"]), None)
        speedup = (f"{r['clips_per_s'] / full['clips_per_s']:.1f}x" if r["method"] == "seek" and full
                   and full["clips_per_s"] and r["clips_per_s"] else "")
        ms = f"{1000 / r['clips_per_s']:.1f}" if r["clips_per_s"] else "-"
        print(f"{r['num_frames']:>6} {r['sampling']:>8} {r['method']:>6} {r['workers']:>7} {r['clips']:>5} "
              f"{r['clips_per_s'] or '-':>8} {ms:>8} {r['cpu_ms_per_clip'] or '-':>11} "
              f"{r['frames_decoded_per_clip'] or '-':>12} {speedup:>13}")


def run(args: argparse.Namespace) -> int:
    """``xvit bench-data``: print the throughput table (and write ``--json``)."""
    if args.clips < 1 or args.batch_size < 1 or args.workers < 0:
        raise UserError(f"--clips {args.clips} / --batch-size {args.batch_size} / --workers {args.workers}: "
                        f"use clips >= 1, batch size >= 1, workers >= 0")
    transform = None
    if args.transform:
        from xvit.data.transforms import build_train_transform

        transform = build_train_transform(crop_size=224, short_side_range=(256, 320))
    with tempfile.TemporaryDirectory(prefix="xvit-bench-data-") as tmp:
        paths = _video_paths(args, tmp)
        first = video_info(paths[0])
        settings = {"videos": len(paths), "resolution": f"{first.width}x{first.height}"
                    + (" (first video)" if len(paths) > 1 else ""), "fps": round(first.fps, 2),
                    "video_frames": first.num_frames, "stride": args.stride, "batch": args.batch_size,
                    "transform": "train crop 224" if transform else "none", "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "pyav": av.__version__,
                    "python": platform.python_version()}
        rows = [bench(paths, num_frames=t, sampling=s, method=m, workers=args.workers, clips=args.clips,
                      batch_size=args.batch_size, stride=args.stride, transform=transform)
                for t in args.num_frames for s in args.sampling for m in args.methods]
    _print_table(rows, settings)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"settings": settings, "results": rows}, f, indent=2)
    return 0
