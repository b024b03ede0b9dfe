"""Video datasets: sampled, decoded and transformed clips for training and multi-view testing.

Training items are ``(clip (C, T, H, W) float, label)``: one clip per video, its frames drawn by
dense or segment sampling (X-ViT paper §4) with a random offset. Test items are
``(views (V, C, T, H, W) float | None, label, index)`` with ``V = num_clips * num_crops`` and
view ``v = temporal * num_crops + spatial`` (PySlowFast): the union of all temporal clips' frames
is decoded in one call and every view is cut from that decode.

Bad data never stops a run: a video that cannot be read (missing, empty, truncated, audio-only,
undecodable) is logged once per path and process on the ``xvit.data`` logger and appended to the
dataset's ``skipped`` list as ``(path, reason)`` (the training loader ships these to the run's
skip ledger, ``xvit.engine.train.ledger``); training draws another random video (at most
``max_retries`` times in a row, then a ``UserError``), testing returns ``views=None`` and
``collate_views`` lists the index under ``missing``. A test video with fewer frames than a clip
needs is warned about once (its frames are repeated to fill the clip).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from xvit.data.annotations import ClassNames, VideoSample, check_labels, detect_format, load_annotations
from xvit.data.cache import CachedVideo, FrameCache
from xvit.data.clip import Augment, ClipSpec, decode_views
from xvit.data.sampling import SAMPLINGS, clip_indices, multi_clip_indices
from xvit.data.video import DEFAULT_DECODER, Video, VideoDecodeError, check_decoder, open_video
from xvit.errors import UserError

__all__ = ["VideoDataset", "build_dataset", "collate_views", "SPLITS"]

logger = logging.getLogger("xvit.data")
SPLITS = ("train", "val", "test")
_reported: set[str] = set()  # paths already logged as unreadable in this process


_short: set[str] = set()  # paths already warned about as shorter than a clip


def _report_bad(err: VideoDecodeError) -> None:
    if err.path not in _reported:
        _reported.add(err.path)
        logger.warning("skipping unreadable video %s: %s", err.path, err.reason)


def warn_if_short(path: str, num_frames: int, needed: int) -> None:
    """Warn once per path when a video has fewer frames than a clip needs (they are repeated)."""
    if num_frames < needed and str(path) not in _short:
        _short.add(str(path))
        logger.warning(
            "%s has %d frame%s, fewer than the %d a clip needs: its frames are repeated to fill the clip "
            "(is it a still image or a very short video?)",
            path,
            num_frames,
            "" if num_frames == 1 else "s",
            needed,
        )


def to_float_clip(frames: torch.Tensor, label: int) -> tuple[torch.Tensor, int]:
    """Default train transform: uint8 (T, H, W, C) -> float (C, T, H, W) in [0, 1]."""
    return frames.permute(3, 0, 1, 2).float().div_(255), label  # (T, H, W, C) -> (C, T, H, W)


def to_float_views(frames: torch.Tensor) -> torch.Tensor:
    """Default test transform: uint8 (T, H, W, C) -> float (1, C, T, H, W) in [0, 1]."""
    return to_float_clip(frames, 0)[0][None]  # (1, C, T, H, W)


class VideoDataset(Dataset):
    """Clips of ``samples`` (see the module docstring for the item layouts).

    ``transform``: train ``(uint8 (T, H, W, C), label) -> (float (C, T, H, W), label)``; test
    ``uint8 (T, H, W, C) -> float (num_crops, C, T, H, W)``; default: scale to [0, 1], one crop.
    ``frame_stride`` is used by dense sampling only. A training item's temporal sampling (and
    the replacement of an unreadable video) draws from a numpy generator seeded by ``(seed,
    epoch, index)``, so it does not depend on the worker or the order items are loaded in; call
    ``set_epoch`` every epoch.
    ``decoder`` reads the files (``pyav`` | ``torchcodec``, see ``xvit.data.video``).
    """

    def __init__(
        self,
        samples: Sequence[VideoSample],
        class_names: Sequence[str],
        *,
        num_frames: int,
        sampling: str = "dense",
        frame_stride: int = 4,
        mode: str = "train",
        transform: Callable[..., Any] | None = None,
        num_clips: int = 1,
        num_crops: int = 1,
        seed: int = 0,
        max_retries: int = 20,
        decoder: str = DEFAULT_DECODER,
    ) -> None:
        if sampling not in SAMPLINGS:
            raise UserError(f"sampling {sampling!r} is unknown; use one of {', '.join(SAMPLINGS)}")
        if mode not in ("train", "test"):
            raise UserError(f"mode {mode!r} is unknown; use 'train' or 'test'")
        for name, value in (
            ("num_frames", num_frames),
            ("frame_stride", frame_stride),
            ("num_clips", num_clips),
            ("num_crops", num_crops),
        ):
            if int(value) != value or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        self.samples, self.class_names = list(samples), list(class_names)
        self.num_frames, self.sampling, self.frame_stride = int(num_frames), sampling, int(frame_stride)
        self.mode, self.num_clips, self.num_crops = mode, int(num_clips), int(num_crops)
        self.transform = transform or (to_float_clip if mode == "train" else to_float_views)
        self.seed, self.epoch, self.max_retries = int(seed), 0, int(max_retries)
        self.decoder = check_decoder(decoder)  # fails here, not in every worker, when it is not installed
        self.num_skipped = 0  # unreadable videos met by this process (per worker copy)
        self.skipped: list[tuple[str, str]] = []  # (path, reason) of each of them, in order
        self._bad: set[int] = set()  # indices known unreadable in this process: never retried
        self.cache: FrameCache | None = None  # decoded frames (xvit.data.cache), see attach_cache

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the temporal sampling for ``epoch`` (call before each epoch's loader is iterated)."""
        self.epoch = int(epoch)

    def _item_rng(self, index: int) -> np.random.Generator:
        """The generator of training item ``index`` in this epoch (the same in any worker or order)."""
        item_seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])
        return np.random.default_rng([self.seed, self.epoch, item_seed])

    def attach_cache(self, cache: FrameCache | None) -> None:
        """Read frames from ``cache`` (built for ``[s.path for s in self.samples]``) instead of decoding."""
        if cache is not None and len(cache) != len(self.samples):
            raise ValueError(f"the frame cache holds {len(cache)} videos but the dataset {len(self.samples)}")
        self.cache = cache

    def _open(self, index: int) -> Video | CachedVideo:
        """Video ``index``: from the frame cache when there is one, else decoded from its file."""
        if self.cache is not None:
            return self.cache.open(index)
        return open_video(self.samples[index].path, self.decoder)

    def __getitem__(self, index: int):
        if self.mode == "train":
            return self._train_item(index)
        return self._test_item(index)

    def _train_item(self, index: int) -> tuple[torch.Tensor, int]:
        rng = self._item_rng(index)
        last_error, skipped_before = None, self.num_skipped
        if index in self._bad:
            index = self._replacement(rng)
        for _ in range(self.max_retries + 1):
            if index is None:
                break
            sample = self.samples[index]
            try:
                with self._open(index) as video:
                    wanted = clip_indices(
                        self.sampling,
                        video.num_frames,
                        self.num_frames,
                        stride=self.frame_stride,
                        mode="train",
                        rng=rng,
                    )
                    frames = video.get(wanted)  # (T, H, W, 3) uint8
            except VideoDecodeError as err:
                self._skip(err)
                self._bad.add(index)
                # the message, not the exception: its traceback holds this frame, and a cycle
                # would keep the next video's decoder alive until a collection (see decode.close)
                last_error, index = str(err), self._replacement(rng)
                continue
            return self.transform(frames, sample.label)
        raise UserError(
            f"{self.num_skipped - skipped_before} videos in a row could not be read (last: {last_error}); "
            f"most of the dataset seems unreadable: run `xvit check-data` on it"
        )

    def mark_unreadable(self, paths: Iterable[str]) -> int:
        """Treat the videos at ``paths`` as known unreadable: training replaces them without opening
        them (a resumed run's skip ledger, every rank's skips); returns how many of ours they are."""
        wanted = {str(p) for p in paths}
        if not wanted:
            return 0
        bad = {i for i, s in enumerate(self.samples) if str(s.path) in wanted}
        self._bad |= bad
        return len(bad)

    def _skip(self, err: VideoDecodeError) -> None:
        _report_bad(err)
        self.num_skipped += 1
        self.skipped.append((err.path, err.reason))

    def failure_reason(self, index: int) -> str:
        """Why test item ``index`` could not be read (read again in this process if it was met elsewhere)."""
        path = str(self.samples[index].path)
        known = [reason for p, reason in self.skipped if p == path]
        if not known and self.mode == "test" and self._test_item(index)[0] is None:
            known = [reason for p, reason in self.skipped if p == path]
        return known[-1] if known else "unreadable (see the log of the process that read it)"

    def _replacement(self, rng: np.random.Generator) -> int | None:
        """A random index not yet known to be unreadable; None when every video is."""
        if len(self._bad) >= len(self.samples):
            return None
        while True:
            i = int(rng.integers(len(self.samples)))
            if i not in self._bad:
                return i

    def _test_item(self, index: int) -> tuple[torch.Tensor | None, int, int]:
        sample = self.samples[index]
        try:
            with self._open(index) as video:
                warn_if_short(str(sample.path), video.num_frames, self.num_frames)
                clips = multi_clip_indices(
                    self.sampling, video.num_frames, self.num_frames, stride=self.frame_stride, num_clips=self.num_clips
                )
                views = decode_views(video, clips, self.transform)  # (V, C, T, H, W), v = clip * crops + crop
        except VideoDecodeError as err:
            self._skip(err)
            return None, sample.label, index
        if views.ndim != 5 or views.shape[0] != self.num_views:
            raise ValueError(
                f"the test transform gave views of shape {tuple(views.shape)}; expected "
                f"(num_clips x num_crops = {self.num_views}, C, T, H, W)"
            )
        return views, sample.label, index


def collate_views(batch: Sequence[tuple[torch.Tensor | None, int, int]]) -> dict[str, Any]:
    """Test items -> ``views (B, V, C, T, H, W)`` (None if no item was readable), ``labels (B,)``,
    ``indices (B,)`` of the readable items, and ``missing``: dataset indices of unreadable ones."""
    kept = [item for item in batch if item[0] is not None]
    return {
        "views": torch.stack([v for v, _, _ in kept]) if kept else None,
        "labels": torch.tensor([label for _, label, _ in kept], dtype=torch.long),
        "indices": torch.tensor([i for _, _, i in kept], dtype=torch.long),
        "missing": [int(i) for v, _, i in batch if v is None],
    }


def _check_paths(format: str, root: str | None, annotations: str | None) -> None:
    if root is not None and not os.path.isdir(root):
        raise UserError(
            f"dataset root {root} does not exist; pass data.root / --data-root pointing at "
            f"the folder that holds the videos"
        )
    if format != "folder" and annotations is None:
        raise UserError(f"format {format!r} needs an annotation file: pass data.annotations / --annotations")
    if annotations is not None and format != "folder" and not os.path.isfile(annotations):
        raise UserError(
            f"annotation file {annotations} does not exist; pass the {format} annotation file "
            f"of the split (data.annotations / --annotations)"
        )


def build_dataset(
    split: str,
    *,
    format: str | None = None,
    root: str | None = None,
    annotations: str | None = None,
    class_names: ClassNames = None,
    clip: ClipSpec | None = None,
    augment: Augment | None = None,
    seed: int = 0,
    decoder: str = DEFAULT_DECODER,
) -> VideoDataset:
    """A ``VideoDataset`` for ``split``: its videos, sampled and transformed as ``clip`` says.

    ``train`` uses random temporal sampling and ``augment`` (default ``Augment()``); ``val``/``test``
    the deterministic multi-view test pipeline of ``clip`` (its ``views``, short side, crops).
    ``format``: list | kinetics | ssv2 | folder (None: from the file name); ``class_names``: names
    or a file of them (default: from the annotations). Labels must be in ``[0, num_classes)``;
    ``test`` also accepts -1 (unlabelled). ``decoder``: ``pyav`` | ``torchcodec``.
    """
    if split not in SPLITS:
        raise UserError(f"split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    if root is None and annotations is None:
        raise UserError("no dataset given: pass data.root / --data-root and data.annotations / --annotations")
    clip = clip or ClipSpec()
    source = annotations if annotations is not None else root
    format = format or detect_format(source)
    _check_paths(format, root, annotations)
    samples, names = load_annotations(format, source, root, class_names)
    if not samples:
        raise UserError(f"no videos listed in {annotations or root}; check the annotation file and root")
    check_labels(samples, len(names), allow_unlabelled=split == "test")
    train = split == "train"
    transform = (augment or Augment()).train_transform(clip) if train else clip.test_transform()
    return VideoDataset(
        samples,
        names,
        num_frames=clip.num_frames,
        sampling=clip.sampling,
        frame_stride=clip.frame_stride,
        mode="train" if train else "test",
        transform=transform,
        num_clips=1 if train else clip.views[0],
        num_crops=1 if train else clip.views[1],
        seed=seed,
        decoder=decoder,
    )
