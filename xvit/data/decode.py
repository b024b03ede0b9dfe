"""The ``pyav`` decoder (the default, ``data.decoder: pyav``): chosen frames by seeking, whole videos,
and metadata. The interface both decoders implement is :mod:`xvit.data.video`.

Frame ``i`` of a video is the ``i``-th frame in presentation order (0-based), for constant and
variable frame rates alike. ``decode_frames`` seeks to the keyframe before the first wanted
frame and decodes forward only as far as the wanted frames need, seeking again when the next
wanted frame lies past a later keyframe (or, without a keyframe index, more than
``SEEK_GAP_SECONDS`` ahead). Indices are mapped to timestamps in one of three ways, each checked
against the timestamps of the frames actually decoded, falling back to the next on a mismatch:

1. constant rate: ``pts = start + i / (rate * time_base)`` (no file scan; B-frames are fine
   because decoded frames come out in presentation order);
2. timestamp table: the sorted pts of all packets, read by demuxing without decoding (variable
   frame rate, or a stream whose rate metadata disagrees with its timestamps);
3. sequential: decode from the start and count frames (streams without usable timestamps).

Frames are returned as RGB ``torch.uint8`` tensors ``(T, H, W, 3)``, rotated upright by the
stream's display matrix (multiples of 90 degrees; mirror flags are ignored). Every failure to
read a file raises ``VideoDecodeError(path, reason)``; containers are always closed.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Self

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

# the rules shared with the torchcodec decoder; open_video & co. stay importable from here
from xvit.data.video import (
    EMPTY_STREAM,
    NO_FRAME,
    NO_VIDEO_STREAM,
    VideoDecodeError,
    VideoInfo,
    check_file,
    check_past_end,
    decode_all,
    decode_frames,
    display_rotation,
    open_video,
    sorted_indices,
    video_info,
)

__all__ = ["VideoDecodeError", "VideoInfo", "VideoReader", "open_video", "decode_frames", "decode_all", "video_info"]

logger = logging.getLogger("xvit.data")

SEEK_GAP_SECONDS = 2.0  # without a keyframe index: seek again when the next frame is this far ahead
MIN_SEEK_GAIN = 4  # seek only when it skips more than this many frames of decoding
COUNT_MAX_BYTES = 64 << 20  # files without a frame count up to this size are counted, not estimated
THREADS_MIN_PIXELS = 640 * 480  # frame threading pays off for long decodes of frames this large
_AV_ERRORS = (av.FFmpegError, OSError, EOFError, ValueError, RuntimeError)


class _Mismatch(Exception):
    """The index <-> pts mapping disagrees with the decoded frames: use the next method."""


class _RateMap:
    """Constant frame rate: frame ``i`` has ``pts = start + i * ticks`` (ticks per frame)."""

    strict = True  # decoded indices must be consecutive

    def __init__(self, start: int, ticks: Fraction, keyframes: list[int] | None) -> None:
        self.start, self.ticks, self.keyframes = start, ticks, keyframes

    def pts_of(self, index: int) -> int:
        return self.start + math.floor(index * self.ticks)

    def index_of(self, pts: int | None) -> int:
        if pts is None:
            raise _Mismatch("frame without pts")
        exact = (pts - self.start) / self.ticks
        index = round(exact)
        if abs(exact - index) > 0.25:
            raise _Mismatch(f"pts {pts} is not on the {self.ticks}-tick frame grid")
        return index


class _TableMap:
    """Exact presentation timestamps of every frame, from the demuxed packets."""

    strict = False

    def __init__(self, pts: list[int], keyframes: list[int]) -> None:
        self.pts, self.keyframes = pts, keyframes
        self.index = {p: i for i, p in enumerate(pts)}

    def pts_of(self, index: int) -> int:
        return self.pts[min(index, len(self.pts) - 1)]

    def index_of(self, pts: int | None) -> int:
        if pts not in self.index:
            raise _Mismatch(f"decoded pts {pts} is not a packet pts")
        return self.index[pts]


_IndexMap = _RateMap | _TableMap


def _quarter_turns(rotation: float) -> int:
    """Display rotation in degrees -> counter-clockwise quarter turns in 0..3."""
    return round(rotation / 90) % 4


def _rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate (H, W, 3) counter-clockwise by ``rotation`` degrees (rounded to 90)."""
    k = _quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def _to_rgb(frame: av.VideoFrame, reformatter: VideoReformatter) -> np.ndarray:
    """Decoded frame -> upright RGB (H, W, 3) uint8 (a reused reformatter keeps its swscale context)."""
    rgb = reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
    return _rotate(rgb, int(frame.rotation or 0))


def library_version() -> str:
    """PyAV's version and the FFmpeg libraries its wheel bundles (``data.video.decoder_version``)."""
    libs = ", ".join(f"{name} {'.'.join(map(str, v))}" for name, v in sorted(av.library_versions.items()))
    return f"av {av.__version__} ({libs})"


class _VideoStream:
    """An open file's first video stream: its metadata, and the decoder loop the reader's frame
    access is built on (``VideoReader``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        check_file(self.path)
        try:
            self._container = av.open(self.path, metadata_errors="ignore")
        except _AV_ERRORS as err:
            raise VideoDecodeError(self.path, f"cannot open: {err}") from None
        if not self._container.streams.video:
            self.close()
            raise VideoDecodeError(self.path, NO_VIDEO_STREAM)
        self._stream = self._container.streams.video[0]
        self._num_frames: tuple[int, bool] | None = None
        self._info: VideoInfo | None = None
        self.frames_decoded = 0  # decoder output count, for tests and benchmarks
        self._reformatter = VideoReformatter()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file and free the decoder now: its codec context owns FFmpeg's slice threads,
        and one left for the garbage collector can be freed in a forked DataLoader worker, where
        those threads do not exist and the free blocks forever."""
        if self._container is not None:
            self._container.close()
        self._container = self._stream = None

    # ---- metadata ---------------------------------------------------------------------------
    @property
    def fps(self) -> float:
        stream = self._stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return float(rate) if rate else 0.0

    def _duration(self) -> float:
        stream, container = self._stream, self._container
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        return container.duration / 1e6 if container.duration else 0.0

    def _looks_vfr(self) -> bool:
        avg, base = self._stream.average_rate, self._stream.base_rate
        return not avg or not base or abs(float(avg) / float(base) - 1) > 0.01

    @property
    def num_frames(self) -> int:
        """Frame count: the container's, else counted from packets (demux only, no decoding) for
        files up to ``COUNT_MAX_BYTES``, else duration * fps."""
        if self._num_frames is None:
            if self._stream.frames > 0:
                self._num_frames = (self._stream.frames, True)
            elif os.path.getsize(self.path) <= COUNT_MAX_BYTES or not self._duration() or not self.fps:
                self._num_frames = (self._count_packets(), True)
            else:
                self._num_frames = (max(1, round(self._duration() * self.fps)), False)
        return self._num_frames[0]

    @property
    def num_frames_exact(self) -> bool:
        """Whether ``num_frames`` is a count (container or packets) rather than an estimate."""
        return self.num_frames >= 0 and self._num_frames[1]

    @property
    def expected_frames(self) -> int:
        """duration * fps from the metadata (0 if unknown): compare with ``num_frames``."""
        return round(self._duration() * self.fps) if self._duration() and self.fps else 0

    def _count_packets(self) -> int:
        with self._errors("counting frames"):
            self._restart()
            count = sum(1 for p in self._container.demux(self._stream) if p.size)
            self._restart()
        if count == 0:
            raise VideoDecodeError(self.path, EMPTY_STREAM)
        return count

    def info(self) -> VideoInfo:
        """``VideoInfo``; decodes the first frame to read its size and rotation."""
        if self._info is None:
            with self._errors("decoding the first frame"):
                self._restart()
                frame = next(self._decode(), None)
            if frame is None:
                raise VideoDecodeError(self.path, NO_FRAME)
            rotation = display_rotation(frame.rotation or 0)
            width, height = frame.width, frame.height
            if rotation in (90, -90):
                width, height = height, width
            fps = self.fps or (self.num_frames / self._duration() if self._duration() else 0.0)
            duration = self._duration() or (self.num_frames / fps if fps else 0.0)
            self._info = VideoInfo(self.num_frames, fps, width, height, duration, rotation)
        return self._info

    # ---- decoding ---------------------------------------------------------------------------
    def _errors(self, what: str):
        """Context turning PyAV/OS errors into ``VideoDecodeError`` naming ``what`` failed."""
        return _av_errors(self.path, what)

    def _decode(self) -> Iterator[av.VideoFrame]:
        for frame in self._container.decode(self._stream):
            self.frames_decoded += 1
            yield frame

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        return _to_rgb(frame, self._reformatter)

    def _restart(self) -> None:
        """Back to the first frame (and flush the decoder)."""
        start = self._stream.start_time
        self._container.seek(start if start is not None else 0, stream=self._stream, backward=True)

    def _set_threads(self, long_decode: bool) -> None:
        """Frame + slice threads for long sequential decodes of large frames only: after a seek only
        a few frames are decoded, and frame threading delays every output by the thread count."""
        ctx = self._stream.codec_context
        big = (ctx.width or 0) * (ctx.height or 0) >= THREADS_MIN_PIXELS
        if long_decode and big and not ctx.is_open:
            self._stream.thread_type = "AUTO"


class VideoReader(_VideoStream):
    """An open video file (use as a context manager): metadata (``_VideoStream``) and frame access
    by index: seeking through a frame index map, else decoding from the start."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self._maps: dict[str, _IndexMap | None] = {}  # "rate" / "table" -> frame index map, or None

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) -> uint8 (len(indices), H, W, 3)."""
        wanted = sorted_indices(indices)
        with self._errors(f"decoding frames {wanted[0]}..{wanted[-1]}"):
            frames = self._get_sorted(wanted)
        return torch.from_numpy(np.stack([frames[int(i)] for i in indices]))

    def get_all(self) -> torch.Tensor:
        """Every frame, decoded sequentially -> uint8 (N, H, W, 3)."""
        self._set_threads(long_decode=True)
        with self._errors("decoding"):
            self._restart()
            frames = [self._rgb(f) for f in self._decode()]
        if not frames:
            raise VideoDecodeError(self.path, NO_FRAME)
        return torch.from_numpy(np.stack(frames))

    def _get_sorted(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Try the constant-rate map, then the timestamp table, then sequential decoding."""
        for kind, make_map in (("rate", self._rate_map), ("table", self._table_map)):
            if kind not in self._maps:  # built once per reader (the table demuxes the whole file)
                self._maps[kind] = make_map()
            mapper = self._maps[kind]
            if mapper is None:
                continue
            try:
                frames = self._decode_seek(wanted, mapper)
            except _Mismatch as why:
                logger.debug("%s: %s; trying the next index method", self.path, why)
                self._maps[kind] = None
                continue
            if len(frames) == len(wanted):
                return frames
            break  # frames past the end of the stream: count them exactly below
        return self._decode_sequential(wanted)

    def _rate_map(self) -> _RateMap | None:
        """Constant-rate map, unless the rate metadata is missing or looks variable."""
        stream = self._stream
        rate, time_base, start = stream.average_rate, stream.time_base, stream.start_time
        if not rate or not time_base or start is None or self._looks_vfr():
            return None
        ticks = 1 / (Fraction(rate) * Fraction(time_base))
        if ticks < 1:
            return None
        entries = [e.timestamp for e in stream.index_entries if e.is_keyframe]
        keyframes = sorted({max(0, round((t - start) / ticks)) for t in entries}) if len(entries) > 1 else None
        return _RateMap(start, ticks, keyframes)

    def _table_map(self) -> _TableMap | None:
        """Exact pts of every frame from the demuxed packets (no decoding); None without pts."""
        pts, keyframe_pts = [], set()
        self._restart()
        for packet in self._container.demux(self._stream):
            if not packet.size or packet.is_discard:
                continue
            if packet.pts is None:
                self._restart()
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframe_pts.add(packet.pts)
        self._restart()
        pts.sort()
        if not pts or len(set(pts)) != len(pts):
            return None
        return _TableMap(pts, [i for i, p in enumerate(pts) if p in keyframe_pts])

    def _worth_seeking(self, pos: int, target: int, keyframes: list[int] | None) -> bool:
        """Seek rather than decode on from frame ``pos`` to frame ``target``?"""
        if keyframes:
            k = bisect.bisect_right(keyframes, target) - 1
            return k >= 0 and keyframes[k] > pos + MIN_SEEK_GAIN
        return target - pos > max(MIN_SEEK_GAIN, SEEK_GAP_SECONDS * (self.fps or 30.0))

    def _decode_seek(self, wanted: list[int], mapper: _IndexMap) -> dict[int, np.ndarray]:
        """Seek-and-decode the sorted ``wanted`` frames; frames past the stream's end are absent."""
        out: dict[int, np.ndarray] = {}
        frames: Iterator[tuple[int, av.VideoFrame]] | None = None
        pos = -1
        for w in wanted:
            if frames is None or self._worth_seeking(pos, w, mapper.keyframes):
                frames = self._frames_from(w, mapper)
            for pos, frame in frames:  # noqa: B007  (frame is the one kept after the break)
                if pos >= w:
                    break
            else:
                return out  # end of stream before frame w
            if pos != w:
                raise _Mismatch(f"frame {w} was never decoded (jumped to {pos})")
            out[w] = self._rgb(frame)
        return out

    def _frames_from(self, target: int, mapper: _IndexMap) -> Iterator[tuple[int, av.VideoFrame]]:
        """(index, frame) from a keyframe at or before frame ``target`` to the end of the stream."""
        margin = 0
        while True:
            if target - margin <= 0:
                self._restart()
            else:
                self._container.seek(mapper.pts_of(target - margin), stream=self._stream, backward=True)
            frames = self._indexed(mapper)
            first = next(frames, None)
            if first is None:
                return
            if first[0] <= target or target - margin <= 0:
                yield first
                yield from frames
                return
            margin = max(8, 2 * margin)  # landed after the target (B-frame reordering): back off

    def _indexed(self, mapper: _IndexMap) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames with their index; ``_Mismatch`` when the indices are not in sequence."""
        prev = None
        for frame in self._decode():
            index = mapper.index_of(frame.pts)
            if prev is not None and (index != prev + 1 if mapper.strict else index <= prev):
                raise _Mismatch(f"frame index {index} follows {prev}")
            prev = index
            yield index, frame

    def _decode_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Decode from the start counting frames; pads a slightly short stream with its last frame."""
        self._set_threads(long_decode=True)
        self._restart()
        out: dict[int, np.ndarray] = {}
        wanted_set, last, count = set(wanted), None, 0
        for count, frame in enumerate(self._decode(), start=1):
            last = frame
            if count - 1 in wanted_set:
                out[count - 1] = self._rgb(frame)
            if count > wanted[-1]:
                return out
        if last is None:
            raise VideoDecodeError(self.path, NO_FRAME)
        check_past_end(self.path, count, wanted[-1], self.num_frames)
        logger.debug(
            "%s: stream ends after %d frames; frames up to %d repeat the last one", self.path, count, wanted[-1]
        )
        tail = self._rgb(last)
        return {w: out.get(w, tail) for w in wanted}


@contextlib.contextmanager
def _av_errors(path: str, what: str) -> Iterator[None]:
    try:
        yield
    except VideoDecodeError:
        raise
    except _AV_ERRORS as err:
        raise VideoDecodeError(path, f"{what}: {err}") from None
