"""The ``torchcodec`` decoder (``data.decoder: torchcodec``): PyTorch's video decoder, which links
the system's FFmpeg (``pip install 'xvit[torchcodec]'``, ``apt-get install ffmpeg``).

Opening builds a ``VideoDecoder`` of the best video stream in ``seek_mode="exact"``: torchcodec
demuxes the file once without decoding and maps frame index ``i`` to the ``i``-th timestamp in
presentation order, which is the pyav decoder's definition of a frame index for constant and
variable frame rates alike; it then seeks to the keyframe before the frames asked for and decodes
only what they need. Frames come out rotated upright by the display matrix, RGB, ``uint8``.

Where the two libraries differ, this module does what :mod:`xvit.data.decode` does (tested in
``tests/test_data_decoders.py``):

- ``num_frames``: the container's frame count when it has one, else the scan's;
- frames asked for past the real end of the stream (the scan's count): the last frame is decoded
  and repeats within :func:`xvit.data.video.tail_slack`, else "the stream ends after ..."; as
  the last real frame is always decoded, damaged last packets fail as a decoding error, as with
  PyAV;
- ``fps``: the scan's average rate (frames / duration of the content), else the header's rate;
  ``duration``: the stream's header, else the container's, else the scan's;
- errors: torchcodec's messages without their C++ source location, under the same reasons
  (``cannot open: ...``, ``decoding frames a..b: ...``); a file it refuses is read again by
  ``get_container_metadata`` (the header only) to tell "no video stream" from "cannot open".

``frames_decoded`` is None: torchcodec does not report how many frames it decoded. One FFmpeg
thread per decoder: data-loader workers give the parallelism.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

import torch

from xvit.data.video import (
    EMPTY_STREAM,
    INSTALL_TORCHCODEC,
    NO_FRAME,
    NO_VIDEO_STREAM,
    VideoDecodeError,
    VideoInfo,
    check_file,
    check_past_end,
    display_rotation,
    sorted_indices,
)
from xvit.errors import UserError

__all__ = ["TorchcodecReader", "library_version", "load_torchcodec"]

logger = logging.getLogger("xvit.data")

_ERRORS = (RuntimeError, ValueError, IndexError, OSError)
_LOCATION = re.compile(r"^\w+, \S+:\d+, ")  # "function, /path/File.cpp:123, " before torchcodec's messages


def load_torchcodec() -> ModuleType:
    """``torchcodec.decoders``, or a ``UserError`` saying what to install."""
    try:
        import torchcodec
        from torchcodec import decoders
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == "torchcodec":
            raise UserError(
                f"the torchcodec decoder is selected but torchcodec is not installed; {INSTALL_TORCHCODEC}"
            ) from None
        raise UserError(f"torchcodec cannot be imported ({err}); {INSTALL_TORCHCODEC}") from None
    except Exception as err:  # a wheel built for another torch: undefined symbols, ...
        raise UserError(
            f"torchcodec cannot be loaded ({_reason(err)}); it must match the installed torch "
            f"{torch.__version__}: {INSTALL_TORCHCODEC}"
        ) from None
    if not hasattr(decoders, "get_container_metadata"):
        raise UserError(
            f"torchcodec {getattr(torchcodec, '__version__', '?')} is too old for xvit; {INSTALL_TORCHCODEC}"
        )
    if getattr(torchcodec, "ffmpeg_major_version", None) is None:
        raise UserError(
            "the torchcodec decoder is selected but torchcodec finds no FFmpeg libraries (libavcodec, "
            "libavformat, ...); install them (Debian/Ubuntu: apt-get install ffmpeg) or use the default "
            "decoder (data.decoder=pyav / --decoder pyav)"
        )
    return decoders


def library_version() -> str:
    """torchcodec's version and the FFmpeg major version it loaded (``data.video.decoder_version``)."""
    load_torchcodec()
    import torchcodec

    return f"torchcodec {torchcodec.__version__} (FFmpeg {torchcodec.ffmpeg_major_version})"


def _reason(err: BaseException) -> str:
    """The first line of an error's message, without torchcodec's C++ source location."""
    lines = str(err).strip().splitlines()
    return _LOCATION.sub("", lines[0]) if lines else type(err).__name__


@contextmanager
def _errors(path: str, what: str) -> Iterator[None]:
    """torchcodec's errors -> ``VideoDecodeError(path, "what: message")``."""
    try:
        yield
    except _ERRORS as err:
        raise VideoDecodeError(path, f"{what}: {_reason(err)}") from None


class TorchcodecReader:
    """An open video file (use as a context manager): metadata and frame access by index."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        check_file(self.path)
        self._decoders = load_torchcodec()
        try:  # the best video stream, as PyAV's first one: the same stream in any common file
            self._decoder = self._decoders.VideoDecoder(
                self.path, dimension_order="NHWC", seek_mode="exact", num_ffmpeg_threads=1, device="cpu"
            )
        except _ERRORS as err:
            raise VideoDecodeError(self.path, self._open_error(err)) from None
        meta = self._decoder.metadata
        self._count = meta.num_frames_from_content or 0  # frames the stream really holds (the scan)
        self._header_frames = meta.num_frames_from_header or 0
        self._stream_duration = float(meta.duration_seconds_from_header or 0.0)
        self._content_duration = float(meta.duration_seconds or 0.0)
        self.fps = float(meta.average_fps or meta.average_fps_from_header or 0.0)
        self._rotation = display_rotation(meta.rotation or 0)
        self._info: VideoInfo | None = None
        self.frames_decoded: int | None = None  # not reported by torchcodec

    def _open_error(self, err: BaseException) -> str:
        """Why ``VideoDecoder`` refused the file: no video stream (from the container header), else
        FFmpeg's reason ("Could not open input file: PATH REASON": the path is said once already)."""
        try:
            container = self._decoders.get_container_metadata(self.path)
        except _ERRORS:
            container = None
        if container is not None and container.best_video_stream_index is None:
            return NO_VIDEO_STREAM
        return "cannot open: " + _reason(err).replace(f"Could not open input file: {self.path}", "").strip()

    def __enter__(self) -> TorchcodecReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._decoder = None  # the last reference: torchcodec closes the file

    # ---- metadata ---------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        """Frame count: the container's, else the scan's (packets in the file, no decoding)."""
        count = self._header_frames or self._count
        if count <= 0:
            raise VideoDecodeError(self.path, EMPTY_STREAM)
        return count

    @functools.cached_property
    def _duration(self) -> float:
        """Seconds: the stream's header, else the container's (read again), else the scan's."""
        if self._stream_duration:
            return self._stream_duration
        with _errors(self.path, "reading the container header"):
            container = self._decoders.get_container_metadata(self.path).duration_seconds_from_header
        return float(container or self._content_duration)

    @property
    def expected_frames(self) -> int:
        """duration * fps from the metadata (0 if unknown): compare with ``num_frames``."""
        return round(self._duration * self.fps) if self._duration and self.fps else 0

    def info(self) -> VideoInfo:
        """``VideoInfo``; decodes the first frame to read its (upright) size."""
        if self._info is None:
            if self._count == 0:
                raise VideoDecodeError(self.path, NO_FRAME)
            with _errors(self.path, "decoding the first frame"):
                first = self._decoder.get_frames_at([0]).data  # (1, H, W, 3)
            num_frames = self.num_frames
            fps = self.fps or (num_frames / self._duration if self._duration else 0.0)
            duration = self._duration or (num_frames / fps if fps else 0.0)
            height, width = first.shape[1:3]
            self._info = VideoInfo(num_frames, fps, int(width), int(height), duration, self._rotation)
        return self._info

    # ---- decoding ---------------------------------------------------------------------------
    def get(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) -> uint8 (len(indices), H, W, 3)."""
        wanted = sorted_indices(indices)
        count = self._count
        if count == 0:
            raise VideoDecodeError(self.path, NO_FRAME)
        need = [w for w in wanted if w < count]
        if wanted[-1] >= count and count - 1 not in need:
            need.append(count - 1)  # the last real frame stands in for frames past the end
        with _errors(self.path, f"decoding frames {wanted[0]}..{wanted[-1]}"):
            batch = self._decoder.get_frames_at(need).data  # (len(need), H, W, 3)
        if wanted[-1] >= count:
            check_past_end(self.path, count, wanted[-1], self.num_frames)
            logger.debug(
                "%s: stream ends after %d frames; frames up to %d repeat the last one", self.path, count, wanted[-1]
            )
        row = {w: k for k, w in enumerate(need)}
        return batch[[row[min(int(i), count - 1)] for i in indices]]  # (len(indices), H, W, 3)

    def get_all(self) -> torch.Tensor:
        """Every frame -> uint8 (N, H, W, 3)."""
        if self._count == 0:
            raise VideoDecodeError(self.path, NO_FRAME)
        with _errors(self.path, "decoding"):
            return self._decoder.get_frames_in_range(0, self._count).data.contiguous()
