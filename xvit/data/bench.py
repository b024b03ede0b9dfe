"""Data-loader throughput, seek decoding vs whole-video decoding, per decoder (the library of
``xvit bench-data``).

:func:`bench` times one setting: a ``DataLoader`` with ``workers`` workers produces ``clips``
training clips (random offsets, videos taken in turn); the time is measured from the creation
of the loader's iterator to the last batch, so worker start-up is included (a small cost next
to dozens of clips; skipping the first batch instead would leave out the work the workers
prefetch meanwhile). Methods: ``seek`` = ``Video.get`` (seek to a keyframe, decode only what
the clip needs); ``full`` = ``Video.get_all`` then index. Besides clips/s it gives the process
CPU time per clip and the frames decoded per clip (pyav only: torchcodec does not report it),
which depend less on other load on a shared machine. :func:`bench_interleaved` runs every
setting for every decoder ``repeats`` times, interleaved (each repeat runs every setting once,
the decoders back to back, their order alternating between repeats), so that a change of load
on the machine falls on both decoders alike; it reports the median repeat.
:func:`make_bench_video` writes the standard test video (10 s, 30 fps, 320x240 H.264, keyframe
every ``gop`` frames, moving textured shapes). The command is :mod:`xvit.cli.bench_data`.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xvit.data.sampling import clip_indices
from xvit.data.video import DEFAULT_DECODER, check_decoder, open_video

__all__ = ["METHODS", "bench", "bench_interleaved", "make_bench_video"]

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
    shapes = [(_texture(rng, height // 3, width // 4), rng.uniform(-3, 3, 2), rng.uniform(0, 1, 2)) for _ in range(4)]
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


def make_bench_video(
    path: str | Path, seconds: float = 10.0, fps: int = 30, width: int = 320, height: int = 240, gop: int = 60
) -> Path:
    """Write the standard benchmark video (H.264 yuv420p, crf 23, keyframe every ``gop`` frames)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {
            "g": str(gop),
            "crf": "23",
            "preset": "fast",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
        }
        for image in _bench_frames(seconds, fps, width, height):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


class _Clips(Dataset):
    """``clips`` training clips taken in turn from ``paths``, decoded by ``method`` with ``decoder``."""

    def __init__(
        self,
        paths: list[str],
        clips: int,
        num_frames: int,
        sampling: str,
        stride: int,
        method: str,
        transform=None,
        seed: int = 0,
        decoder: str = DEFAULT_DECODER,
    ) -> None:
        self.paths, self.clips, self.num_frames, self.sampling = paths, clips, num_frames, sampling
        self.stride, self.method, self.transform, self.seed = stride, method, transform, seed
        self.decoder = decoder

    def __len__(self) -> int:
        return self.clips

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, float]:
        cpu = time.process_time()
        rng = np.random.default_rng((self.seed, i))
        with open_video(self.paths[i % len(self.paths)], self.decoder) as video:
            wanted = clip_indices(
                self.sampling, video.num_frames, self.num_frames, stride=self.stride, mode="train", rng=rng
            )
            frames = video.get(wanted) if self.method == "seek" else video.get_all()[wanted]  # (T, H, W, 3)
            decoded = -1 if video.frames_decoded is None else video.frames_decoded  # -1: not reported
        if self.transform is not None:
            frames, _ = self.transform(frames, 0)  # (C, T, crop, crop)
        return frames, decoded, time.process_time() - cpu


def bench(
    paths: list[str],
    *,
    num_frames: int,
    sampling: str,
    method: str,
    workers: int,
    clips: int,
    batch_size: int = 8,
    stride: int = 4,
    transform=None,
    decoder: str = DEFAULT_DECODER,
) -> dict:
    """Clips/s of one setting (worker start-up included), frames decoded and CPU time per clip
    (process CPU time of ``__getitem__``: less sensitive than clips/s to a shared machine)."""
    data = _Clips(paths, clips, num_frames, sampling, stride, method, transform, decoder=check_decoder(decoder))
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, shuffle=False)
    timed = decoded = 0
    cpu, reported = 0.0, True
    start = time.perf_counter()
    for frames, counts, cpu_seconds in loader:
        timed += len(frames)
        decoded += int(counts.sum())
        reported = reported and bool((counts >= 0).all())
        cpu += float(cpu_seconds.sum())
    seconds = time.perf_counter() - start
    return {
        "decoder": decoder,
        "method": method,
        "num_frames": num_frames,
        "sampling": sampling,
        "workers": workers,
        "clips": timed,
        "seconds": round(seconds, 3),
        "clips_per_s": round(timed / seconds, 2) if timed and seconds else None,
        "frames_decoded_per_clip": round(decoded / timed, 1) if timed and reported else None,
        "cpu_ms_per_clip": round(1000 * cpu / timed, 1) if timed else None,
    }


def bench_interleaved(
    paths: list[str],
    *,
    decoders: list[str],
    num_frames: list[int],
    samplings: list[str],
    methods: list[str],
    workers: list[int],
    repeats: int = 1,
    **kwargs,
) -> list[dict]:
    """:func:`bench` of every decoder x frames x sampling x method x workers, ``repeats`` times,
    interleaved (see the module docstring). One row per setting: the median clips/s and CPU time
    over the repeats, and every repeat's clips/s under ``repeats``."""
    for decoder in decoders:
        check_decoder(decoder)
    settings = list(itertools.product(num_frames, samplings, methods, workers))
    runs: dict[tuple, list[dict]] = {}
    for r in range(repeats):
        order = decoders if r % 2 == 0 else decoders[::-1]
        for (t, s, m, w), d in itertools.product(settings, order):
            row = bench(paths, num_frames=t, sampling=s, method=m, workers=w, decoder=d, **kwargs)
            runs.setdefault((d, t, s, m, w), []).append(row)
    rows = []
    for (t, s, m, w), d in itertools.product(settings, decoders):
        done = runs[(d, t, s, m, w)]
        rates = [r["clips_per_s"] for r in done]
        rows.append(
            {
                **done[0],
                "clips_per_s": _median(rates),
                "cpu_ms_per_clip": _median([r["cpu_ms_per_clip"] for r in done]),
                "seconds": _median([r["seconds"] for r in done]),
                "repeats": rates,
            }
        )
    return rows


def _median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None
