"""One sequential pass through a video file: chosen frames, in order, in bounded memory.

``stream_frames(path, wanted)`` decodes the video from its first frame to the last wanted one
and yields ``(index, frame)`` for the wanted indices only; frame ``i`` is the ``i``-th frame in
presentation order (``xvit.data.decode``'s numbering). Nothing is kept between frames: only a
wanted frame is converted to RGB, so the memory used does not grow with the video's length.
This is the reading pattern of a timeline over a long video (every few seconds a clip), where
seeking once per clip would decode each keyframe interval again.

Frames are uint8 RGB ``(H, W, 3)`` numpy arrays, rotated upright by the stream's display
rotation (multiples of 90 degrees), as ``decode_frames`` returns them. A file that cannot be
read raises ``VideoDecodeError`` (path and reason).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import av
import numpy as np

from xvit.data.decode import VideoDecodeError

__all__ = ["stream_frames"]

_AV_ERRORS = (av.FFmpegError, OSError, EOFError, ValueError, RuntimeError)


def _upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Decoded frame -> RGB (H, W, 3) uint8, rotated counter-clockwise by its display rotation."""
    rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
    k = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def stream_frames(path: str | os.PathLike, wanted: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, RGB frame)`` for each distinct index of ``wanted``, in increasing order, from one
    sequential decode. Indices past the end of the stream are not yielded (the caller decides
    what a short stream means)."""
    targets = sorted({int(i) for i in wanted})
    if not targets:
        return
    path = str(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    try:
        container = av.open(path, metadata_errors="ignore")
    except _AV_ERRORS as err:
        raise VideoDecodeError(path, f"cannot open: {err}") from None
    try:
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream (audio-only or not a video)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # one long sequential decode: frame threads pay off
        position = 0  # into targets
        index = -1
        frames = container.decode(stream)
        while position < len(targets):
            try:
                frame = next(frames, None)
            except _AV_ERRORS as err:
                raise VideoDecodeError(path, f"decoding frame {index + 1}: {err}") from None
            if frame is None:
                return  # end of stream
            index += 1
            if index == targets[position]:
                position += 1
                yield index, _upright_rgb(frame)
    finally:
        container.close()
