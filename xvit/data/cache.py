"""Decoded-frame cache: decode each video once, then sample and augment from uint8 frames.

Training decodes every video again each epoch; on a small dataset of short videos (the built-in
benchmark) decoding costs more than the model. A ``FrameCache`` holds every frame of every video
as uint8 ``(T, H, W, 3)``, at native resolution or with the short side reduced to what the
transforms use (``short_side``; frames are never enlarged), so random temporal sampling, crops,
flips and AutoAugment stay exactly what they are: they run on the cached frames.

- ``memory``: the frames live in this process (one numpy array per video, built before the
  data-loader workers start, which share it copy-on-write when forked). Built anew by every run
  and every DDP process.
- ``disk``: one memory-mapped file per dataset (``<dir>/<key>.u8`` + ``<key>.json``, the key a
  hash of what the frames depend on: the video list, the short side, the decoder with its
  libraries' versions and torchvision's, which resizes), built once and reused by later runs,
  every worker and every DDP process; entries whose file changed (size or mtime) are decoded
  again and appended. One process at a time fills it (a lock file beside it): another job on the
  same videos waits, then reads what the first decoded. Size: ``frames x H x W x 3`` bytes (the
  built-in benchmark: ~50 KB per video).

An unreadable video is cached as its error: reading it raises the same ``VideoDecodeError``.
The cache is built with the run's decoder (``data.decoder``). The decoders aim at the same frames
(``xvit.data.video``) but a codec's output may differ by a few levels between FFmpeg builds, so a
disk cache filled by one decoder (or one version of it) never serves another.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.transforms.v2 import functional as TF

from xvit.data.video import DEFAULT_DECODER, VideoDecodeError, check_decoder, decoder_version, open_video
from xvit.errors import UserError
from xvit.progress import progress_bar

log = logging.getLogger(__name__)

CACHE_MODES = ("none", "memory", "disk")
CACHE_VERSION = 2  # 2: the key names the decoder and the libraries' versions


@dataclass(frozen=True)
class Entry:
    """Where one video's frames are (``offset`` in bytes into the disk file), and the file it came from."""

    path: str
    size: int  # file size in bytes when decoded (invalidation)
    mtime_ns: int  # file modification time when decoded (invalidation)
    num_frames: int = 0
    height: int = 0
    width: int = 0
    offset: int = 0
    error: str | None = None  # why the video could not be read

    @property
    def nbytes(self) -> int:
        return self.num_frames * self.height * self.width * 3


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _decode(job: tuple[str, int | None, str]) -> tuple[Entry, np.ndarray | None]:
    """Decode every frame of one video with a decoder (short side reduced to ``short_side`` when larger)."""
    path, short_side, decoder = job
    size, mtime = _stat(path)
    try:
        with open_video(path, decoder) as video:
            frames = video.get_all()  # (T, H, W, 3) uint8
    except VideoDecodeError as err:
        return Entry(path, size, mtime, error=err.reason), None
    T, H, W, _ = frames.shape
    if short_side is not None and min(H, W) > short_side:
        scale = short_side / min(H, W)
        size_hw = [max(1, round(H * scale)), max(1, round(W * scale))]
        frames = TF.resize(frames.permute(0, 3, 1, 2), size_hw, antialias=True).permute(0, 2, 3, 1)  # (T, h, w, 3)
    arr = np.ascontiguousarray(frames.numpy())
    return Entry(path, size, mtime, *arr.shape[:3]), arr


def _init_worker() -> None:
    torch.set_num_threads(1)


def _decode_all(jobs: list[tuple[str, int | None, str]], workers: int, progress: bool, desc: str) -> Iterator:
    """``_decode`` over ``jobs`` in order, in a process pool when ``workers > 1``."""
    bar = progress_bar(total=len(jobs), desc=desc, unit="video", disable=not progress)
    try:
        if workers <= 1 or len(jobs) < 2:
            for job in jobs:
                yield _decode(job)
                bar.update()
            return
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
            for result in pool.map(_decode, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers)))):
                yield result
                bar.update()
    finally:
        bar.close()


class CachedVideo:
    """A cached video with the reader interface the datasets use (``num_frames``, ``get``)."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames  # (T, H, W, 3) uint8

    def __enter__(self) -> CachedVideo:
        return self

    def __exit__(self, *exc) -> None:
        pass

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) -> uint8 ``(len(indices), H, W, 3)``."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            raise ValueError("indices is empty; pass at least one frame index")
        idx = np.minimum(idx, len(self.frames) - 1)  # as a decoder: past the end reads the last frame
        return torch.from_numpy(self.frames[idx])


class FrameCache:
    """Every frame of a list of videos; ``open(i)`` gives video ``i`` as a ``CachedVideo``."""

    def __init__(
        self, entries: list[Entry], arrays: list[np.ndarray | None] | None = None, file: Path | None = None
    ) -> None:
        self.entries, self.arrays, self.file = entries, arrays, file
        self._mmap: np.memmap | None = None

    @property
    def mode(self) -> str:
        return "memory" if self.file is None else "disk"

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_mmap"] = None  # each process maps the file itself
        return state

    def subset(self, start: int, stop: int) -> FrameCache:
        """Videos ``start .. stop-1`` as a cache of their own (the same memory or file)."""
        arrays = None if self.arrays is None else self.arrays[start:stop]
        return FrameCache(self.entries[start:stop], arrays, self.file)

    def _frames(self, index: int) -> np.ndarray:
        e = self.entries[index]
        if self.arrays is not None:
            return self.arrays[index]
        if self._mmap is None:
            self._mmap = np.memmap(self.file, dtype=np.uint8, mode="r")
        return self._mmap[e.offset : e.offset + e.nbytes].reshape(e.num_frames, e.height, e.width, 3)

    def open(self, index: int) -> CachedVideo:
        """Video ``index``; raises the ``VideoDecodeError`` it had when it was decoded."""
        e = self.entries[index]
        if e.error is not None:
            raise VideoDecodeError(e.path, e.error)
        return CachedVideo(self._frames(index))

    def summary(self) -> str:
        bad = sum(e.error is not None for e in self.entries)
        frames = sum(e.num_frames for e in self.entries)
        where = f" in {self.file}" if self.file else " in memory"
        return (
            f"frame cache: {len(self)} videos ({bad} unreadable), {frames} frames, {self.nbytes / 2**20:.1f} MiB{where}"
        )


def build_memory_cache(
    paths: Sequence[str],
    short_side: int | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
    decoder: str = DEFAULT_DECODER,
) -> FrameCache:
    """Decode every video into this process's memory (a path listed twice is decoded once)."""
    paths = [str(p) for p in paths]
    unique = list(dict.fromkeys(paths))
    jobs = [(p, short_side, decoder) for p in unique]
    decoded = dict(zip(unique, _decode_all(jobs, workers, progress, "frame cache")))
    return FrameCache([decoded[p][0] for p in paths], [decoded[p][1] for p in paths])


def frames_source(decoder: str) -> str:
    """What decoded and resized cached frames depend on besides the files: the decoder with its
    libraries' versions and torchvision's (the resize)."""
    return f"{decoder_version(decoder)}; torchvision {torchvision.__version__}"


def cache_key(paths: Sequence[str], short_side: int | None, decoder: str = DEFAULT_DECODER) -> str:
    """The disk cache's name: a hash of the video paths (in order), the short side and ``frames_source``."""
    doc = [CACHE_VERSION, short_side, frames_source(decoder), [os.path.abspath(p) for p in paths]]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


def _read_index(index_file: Path, data_file: Path) -> dict[str, Entry]:
    if not (index_file.is_file() and data_file.is_file()):
        return {}
    try:
        doc = json.loads(index_file.read_text())
        entries = [Entry(**e) for e in doc["entries"]]
    except (ValueError, KeyError, TypeError) as err:
        log.warning("frame cache index %s is unreadable (%s); decoding again", index_file, err)
        return {}
    length = data_file.stat().st_size
    return {e.path: e for e in entries if doc.get("version") == CACHE_VERSION and e.offset + e.nbytes <= length}


def build_disk_cache(
    paths: Sequence[str],
    directory: str | Path,
    short_side: int | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
    decoder: str = DEFAULT_DECODER,
) -> FrameCache:
    """Open (or build, or bring up to date) the memory-mapped cache of ``paths`` under ``directory``.

    Entries whose video changed (size or mtime) or that are new are decoded and appended; the
    index is written last (atomically), so a killed build leaves a cache that is reused as far
    as it got.
    """
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the frame cache folder {directory} ({err}); set data.frame_cache_dir") from None
    key = cache_key(paths, short_side, decoder)
    data_file, index_file = directory / f"{key}.u8", directory / f"{key}.json"
    with _building(directory / f"{key}.lock", data_file):
        return _build_locked(paths, data_file, index_file, short_side, workers, progress, decoder)


@contextlib.contextmanager
def _building(lock_file: Path, data_file: Path) -> Iterator[None]:
    """One process at a time checks and fills a disk cache (another ``xvit train`` on the same data,
    a study's second process): appends from two processes would interleave in the data file and
    each index would point at the other's bytes. A process that finds the lock taken waits, then
    finds the videos the other one decoded already in the index. Where no lock can be taken (a
    read-only folder, a file system without locks) the cache is used as before, unlocked."""
    with contextlib.ExitStack() as stack:
        try:
            lock = stack.enter_context(open(lock_file, "a"))
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("frame cache %s: another process is filling it; waiting for it", data_file)
                fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as err:
            log.debug("frame cache %s: no lock (%s)", data_file, err)
        yield  # the lock goes with the file's closing


def _build_locked(
    paths: Sequence[str],
    data_file: Path,
    index_file: Path,
    short_side: int | None,
    workers: int,
    progress: bool,
    decoder: str,
) -> FrameCache:
    known = _read_index(index_file, data_file)
    paths = [str(p) for p in paths]
    fresh = {p for p in paths if p in known and (known[p].size, known[p].mtime_ns) == _stat(p)}
    todo = [p for p in dict.fromkeys(paths) if p not in fresh]
    if todo:
        log.info("frame cache %s: decoding %d of %d videos", data_file, len(todo), len(paths))
        with open(data_file, "ab") as f:
            for entry, arr in _decode_all([(p, short_side, decoder) for p in todo], workers, progress, "frame cache"):
                if arr is not None:
                    entry = Entry(**{**asdict(entry), "offset": f.tell()})
                    f.write(arr.tobytes())
                known[entry.path] = entry
            f.flush()
            os.fsync(f.fileno())
        doc = {
            "version": CACHE_VERSION,
            "short_side": short_side,
            "source": frames_source(decoder),
            "entries": [asdict(known[p]) for p in paths],
        }
        tmp = index_file.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, index_file)
    return FrameCache([known[p] for p in paths], file=data_file)


def build_frame_cache(
    mode: str,
    paths: Sequence[str],
    *,
    directory: str | Path | None = None,
    short_side: int | None = None,
    workers: int = 1,
    progress: bool = True,
    decoder: str = DEFAULT_DECODER,
) -> FrameCache | None:
    """``none`` -> None; ``memory`` / ``disk`` -> a ``FrameCache`` of ``paths`` (see the module docstring),
    decoded with ``decoder``."""
    if mode not in CACHE_MODES:
        raise UserError(f"data.cache={mode!r} is unknown; use one of {', '.join(CACHE_MODES)}")
    if mode == "none":
        return None
    check_decoder(decoder)
    if mode == "memory":
        return build_memory_cache(paths, short_side, workers=workers, progress=progress, decoder=decoder)
    if directory is None:
        raise UserError("data.cache=disk needs a folder: set data.frame_cache_dir")
    return build_disk_cache(paths, directory, short_side, workers=workers, progress=progress, decoder=decoder)
