"""Small real video files for tests, written with PyAV (H.264 via libx264, VP9 via libvpx-vp9).

``index_frames(T, H, W)`` makes frames whose index can be read back after lossy compression
(``read_frame_index``): frame ``t`` is a flat colour that encodes ``t`` in two channels plus a
moving white bar, so the codec has motion to code. ``write_video`` encodes them with chosen
codec, GOP, B-frames, pixel format, rotation metadata or a variable frame rate; the other
helpers write the broken files the data pipeline must survive (truncated, empty, audio-only,
not a video).

Odd sizes: 4:2:0 (``yuv420p``) needs even sizes with libx264, so odd sizes are written with
``pix_fmt="yuv444p"`` (libx264) or with VP9, which accepts odd 4:2:0 sizes.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np

# Colour steps large enough to survive compression: frame t -> (R, G) = 16 + 16 * (t % 14, t // 14 % 14).
_STEP, _BASE, _PERIOD = 16, 16, 14
MAX_INDEX = _PERIOD * _PERIOD  # frame indices are unique below this


def index_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 whose index ``t`` is readable with ``read_frame_index``."""
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    bar = max(1, width // 16)
    for t in range(num_frames):
        frames[t] = (_BASE + _STEP * (t % _PERIOD), _BASE + _STEP * (t // _PERIOD % _PERIOD), 128)
        x = (t * bar) % max(1, width - bar)
        frames[t, :, x : x + bar] = 255  # moving bar: real motion for the encoder
    return frames


def read_frame_index(frame: np.ndarray) -> int:
    """Index ``t`` of a decoded frame (H, W, 3) made by ``index_frames`` (any rotation)."""
    r, g = np.median(np.asarray(frame).reshape(-1, 3)[:, :2], axis=0)
    return int(round((r - _BASE) / _STEP)) + _PERIOD * int(round((g - _BASE) / _STEP))


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 25,
    codec: str = "libx264",
    bframes: int = 0,
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    vfr: bool = False,
    *,
    gop: int = 12,
    faststart: bool = False,
) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB to ``path``; returns the path.

    ``codec``: ``"libx264"`` (MP4/MKV) or ``"libvpx-vp9"`` (WebM). ``bframes``: B-frames between
    reference frames (libx264 only). ``gop``: keyframe interval (scene-cut detection off, so
    keyframes are exactly every ``gop`` frames).
    ``rotation``: display-matrix rotation in degrees counter-clockwise (the value PyAV reads back
    as ``VideoFrame.rotation``). ``vfr``: frame durations alternate 1.5/fps and 0.75/fps
    (time base 1/1000 s). ``faststart``: MP4 index at the front, so a truncated file still opens.
    """
    path = Path(path)
    options: dict[str, str] = {"g": str(gop)}
    if codec == "libx264":
        options.update(
            {
                "bf": str(bframes),
                "crf": "12",
                "preset": "veryfast",
                "x264-params": f"scenecut=0:keyint={gop}:min-keyint={gop}",
            }
        )
    elif codec == "libvpx-vp9":
        options.update({"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"})
    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = pix_fmt
        stream.codec_context.options = options
        if vfr:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        pts = 0
        for t, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if vfr:
                frame.pts, frame.time_base = pts, fractions.Fraction(1, 1000)
                pts += int(1000 / fps * (1.5 if t % 2 == 0 else 0.75))
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_index_video(path: str | Path, num_frames: int = 30, height: int = 48, width: int = 64, **kwargs) -> Path:
    """``write_video`` of ``index_frames(num_frames, height, width)``."""
    return write_video(path, index_frames(num_frames, height, width), **kwargs)


def write_one_frame(path: str | Path, **kwargs) -> Path:
    """A video with a single frame (frame 0 of ``index_frames``)."""
    return write_index_video(path, 1, **kwargs)


def write_truncated(path: str | Path, source: str | Path, keep: float = 0.5) -> Path:
    """Copy of ``source`` cut to the first ``keep`` fraction of its bytes."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def write_empty(path: str | Path) -> Path:
    """A zero-byte file."""
    Path(path).write_bytes(b"")
    return Path(path)


def write_garbage(path: str | Path, size: int = 4096) -> Path:
    """A file of random bytes (not a video) of ``size`` bytes."""
    Path(path).write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return Path(path)


def write_audio_only(path: str | Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    """An AAC-in-MP4 file with one audio stream and no video stream."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        for i in range(int(seconds * rate) // 1024):
            samples = np.sin(np.arange(1024, dtype=np.float32) / 10.0)[None]  # (1, 1024) mono
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return Path(path)


# name -> write_index_video keyword arguments of the standard test set (48x64 unless stated).
STANDARD_VIDEOS: dict[str, dict] = {
    "h264.mp4": dict(num_frames=40, fps=25),
    "h264_bframes.mp4": dict(num_frames=60, fps=30, bframes=3, gop=12),
    "h264_long_gop.mp4": dict(num_frames=150, fps=25, gop=30, bframes=2),
    "vp9.webm": dict(num_frames=50, fps=12, codec="libvpx-vp9", gop=10),
    "vp9_odd_97x61.webm": dict(num_frames=20, fps=15, codec="libvpx-vp9", height=61, width=97),
    "h264_odd_321x239.mp4": dict(num_frames=12, fps=24, height=239, width=321, pix_fmt="yuv444p", gop=6),
    "h264_vfr.mp4": dict(num_frames=40, fps=25, vfr=True, gop=10),
    "h264_vfr.mkv": dict(num_frames=40, fps=25, vfr=True, gop=10, bframes=2),
    "h264_rot90.mp4": dict(num_frames=12, fps=25, rotation=90, gop=6),
    "h264_rot180.mp4": dict(num_frames=12, fps=25, rotation=180, gop=6),
    "h264_unrotated.mp4": dict(num_frames=12, fps=25, gop=6),
    "one_frame.mp4": dict(num_frames=1, fps=25),
    "short5.mp4": dict(num_frames=5, fps=25),
    "faststart.mp4": dict(num_frames=40, fps=25, gop=10, faststart=True),
}
BROKEN_VIDEOS = (
    "truncated.mp4",
    "truncated_faststart.mp4",
    "truncated.webm",
    "empty.mp4",
    "garbage.mp4",
    "audio_only.m4a",
)


def standard_videos(folder: str | Path) -> dict[str, Path]:
    """Write the standard test set into ``folder`` once (later calls reuse it): name -> path.

    Good files are ``STANDARD_VIDEOS``; broken ones ``BROKEN_VIDEOS``: an MP4 cut in half (index
    at the end: cannot open), a fast-start MP4 cut in half (opens, its second half is missing),
    a WebM cut in half, a zero-byte file, random bytes, and an audio-only file.
    """
    folder = Path(folder)
    done = folder / ".complete"
    paths = {name: folder / name for name in (*STANDARD_VIDEOS, *BROKEN_VIDEOS)}
    if done.exists():
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for name, kwargs in STANDARD_VIDEOS.items():
        write_index_video(folder / name, **kwargs)
    write_truncated(paths["truncated.mp4"], paths["h264_long_gop.mp4"])
    write_truncated(paths["truncated_faststart.mp4"], paths["faststart.mp4"])
    write_truncated(paths["truncated.webm"], paths["vp9.webm"])
    write_empty(paths["empty.mp4"])
    write_garbage(paths["garbage.mp4"])
    write_audio_only(paths["audio_only.m4a"])
    done.touch()
    return paths
