"""Reading videos: the decoder interface, chosen per run (``data.decoder``, ``--decoder``).

Two decoders implement :class:`Video`: ``pyav`` (:mod:`xvit.data.decode`, the default: PyAV's
wheels bundle FFmpeg) and ``torchcodec`` (:mod:`xvit.data.decode_torchcodec`: the PyTorch
decoder, linked against the system's FFmpeg; ``pip install 'xvit[torchcodec]'`` plus
``apt-get install ffmpeg``). Both give the same thing for the same file: frame ``i`` is the
``i``-th frame in presentation order, returned as upright RGB ``uint8 (T, H, W, 3)``; a file
that cannot be read raises :class:`VideoDecodeError` with its path and one of the same reasons
(missing, directory, empty, cannot open, no video stream, decoding error, stream ends early).
The rules both apply are written once here: the file checks before opening, index validation,
and what happens when frames past the end of a stream are asked for (the last frame repeats
within a small slack, else the file is reported truncated).

The decoders are a registry of names (``REGISTRY``): their modules are imported when first
selected, so torchcodec stays optional, and a decoder depends on this interface only. A third
decoder is a module with a reader class implementing :class:`Video` and one entry here.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from xvit.errors import UserError

if TYPE_CHECKING:  # this module imports no torch: the command line's start stays light
    import torch

__all__ = [
    "DECODERS",
    "DEFAULT_DECODER",
    "Video",
    "VideoDecodeError",
    "VideoInfo",
    "check_decoder",
    "decoder_version",
    "decode_all",
    "decode_frames",
    "open_video",
    "video_info",
]


@dataclass(frozen=True)
class DecoderEntry:
    """A decoder of the registry, named by module so that it is imported when first selected: this
    module depends on no decoder, and a decoder only on this interface."""

    module: str  # implements the interface
    reader: str  # its class: reader(path) -> Video
    check: str | None = None  # its function that raises a UserError when the decoder cannot run here
    version: str = "library_version"  # its function naming the libraries (and versions) that decode


REGISTRY = {
    "pyav": DecoderEntry("xvit.data.decode", "VideoReader"),
    "torchcodec": DecoderEntry("xvit.data.decode_torchcodec", "TorchcodecReader", check="load_torchcodec"),
}
DECODERS = tuple(REGISTRY)
DEFAULT_DECODER = "pyav"
INSTALL_TORCHCODEC = (
    "pip install 'xvit[torchcodec]' and FFmpeg's shared libraries (Debian/Ubuntu: apt-get install ffmpeg), "
    "or use the default decoder (data.decoder=pyav / --decoder pyav)"
)

NO_VIDEO_STREAM = "no video stream (audio-only or not a video)"
NO_FRAME = "no decodable video frame"
EMPTY_STREAM = "the video stream has no frames"


class VideoDecodeError(UserError):
    """A video file that cannot be read: missing, empty, truncated, without video, undecodable."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a video stream; width/height are the displayed (rotated) sizes."""

    num_frames: int  # frames in presentation order (container count, else counted from packets)
    fps: float  # average frame rate
    width: int
    height: int
    duration: float  # seconds
    rotation: int  # degrees counter-clockwise applied to decoded frames (0, 90, 180, -90)


class Video(Protocol):
    """An open video file, as every decoder gives it (use as a context manager)."""

    path: str
    frames_decoded: int | None  # frames the decoder has output so far (None: the decoder does not say)

    @property
    def num_frames(self) -> int:
        """Frame count: the container's, else counted from the packets (no decoding)."""

    @property
    def expected_frames(self) -> int:
        """duration * fps from the metadata (0 if unknown): compare with ``num_frames``."""

    def info(self) -> VideoInfo:
        """``VideoInfo``; decodes the first frame."""

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) -> uint8 (len(indices), H, W, 3)."""

    def get_all(self) -> torch.Tensor:
        """Every frame -> uint8 (N, H, W, 3)."""

    def close(self) -> None: ...

    def __enter__(self) -> Video: ...

    def __exit__(self, *exc) -> None: ...


# ---- rules shared by the decoders ---------------------------------------------------------------
def check_file(path: str) -> None:
    """The checks before a decoder opens ``path``: it exists, is a file, is not empty."""
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.isdir(path):
        raise VideoDecodeError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def display_rotation(degrees: float) -> int:
    """A display matrix's rotation (degrees counter-clockwise) -> the nearest of 0, 90, 180, -90."""
    return (0, 90, 180, -90)[round(degrees / 90) % 4]


def check_index(index: int) -> int:
    if int(index) != index or index < 0:
        raise ValueError(f"frame index {index!r} is not a non-negative integer")
    return int(index)


def sorted_indices(indices: Sequence[int]) -> list[int]:
    """The distinct frame indices, sorted; ``ValueError`` for none or a negative one."""
    wanted = sorted({check_index(i) for i in indices})
    if not wanted:
        raise ValueError("decode_frames: indices is empty; pass at least one frame index")
    return wanted


def tail_slack(num_frames: int) -> int:
    """Frames past the end of a stream that repeat its last frame instead of failing: metadata
    counts are often a frame or two (or ~2%) more than the frames a stream really holds."""
    return max(2, math.ceil(0.02 * num_frames))


def check_past_end(path: str, count: int, last: int, num_frames: int) -> None:
    """``VideoDecodeError`` when frame ``last`` lies more than the slack past a stream of ``count`` frames."""
    if last - (count - 1) > tail_slack(num_frames):
        raise VideoDecodeError(
            path,
            f"the stream ends after {count} frames but frame {last} was requested "
            f"(metadata: {num_frames} frames); the file is probably truncated",
        )


# ---- choosing a decoder ---------------------------------------------------------------------------
def check_decoder(decoder: str) -> str:
    """``decoder`` if it is known and usable here; else a ``UserError`` saying what to install."""
    if decoder not in REGISTRY:
        raise UserError(f"decoder {decoder!r} is unknown; use one of {', '.join(REGISTRY)}")
    entry = REGISTRY[decoder]
    if entry.check is not None:
        getattr(importlib.import_module(entry.module), entry.check)()
    return decoder


def decoder_version(decoder: str) -> str:
    """The decoder's name and the versions of the libraries it decodes with (``"pyav: av 18.1.0, ..."``):
    what the frames it gives depend on besides the file (the frame cache's key names it)."""
    entry = REGISTRY[check_decoder(decoder)]
    return f"{decoder}: {getattr(importlib.import_module(entry.module), entry.version)()}"


def open_video(path: str | os.PathLike, decoder: str = DEFAULT_DECODER) -> Video:
    """Open a video for several reads (``with open_video(p) as v: v.num_frames; v.get([0, 4])``)."""
    if decoder not in REGISTRY:
        check_decoder(decoder)
    entry = REGISTRY[decoder]
    return getattr(importlib.import_module(entry.module), entry.reader)(path)


def decode_frames(path: str | os.PathLike, indices: Sequence[int], decoder: str = DEFAULT_DECODER) -> torch.Tensor:
    """Frames at ``indices`` (presentation order, 0-based) -> uint8 (len(indices), H, W, 3) RGB."""
    with open_video(path, decoder) as video:
        return video.get(indices)


def decode_all(path: str | os.PathLike, decoder: str = DEFAULT_DECODER) -> torch.Tensor:
    """Every frame of the video -> uint8 (N, H, W, 3) RGB (the reference path)."""
    with open_video(path, decoder) as video:
        return video.get_all()


def video_info(path: str | os.PathLike, decoder: str = DEFAULT_DECODER) -> VideoInfo:
    """``VideoInfo`` of the first video stream of ``path``."""
    with open_video(path, decoder) as video:
        return video.info()
