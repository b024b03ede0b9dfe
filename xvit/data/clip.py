"""What a clip is: the one typed description of the test-time pipeline, the training augmentation,
the test views, and the cutting of all views of a video from one decode.

``ClipSpec`` is what a checkpoint needs to be used again (frames, temporal sampling, crop, short
side, normalisation, test views, class names): ``xvit train`` writes it into every checkpoint and
``xvit eval`` / ``xvit predict`` / ``xvit.load_model`` read it back. ``Augment`` holds the
training-only choices (scale jitter, AutoAugment, erasing, flip policy). Recipes: X-ViT paper §4
(Kinetics-400: dense sampling, 1x3 test views; SSv2: segment sampling, 2x3 views, no flip).

Test views follow PySlowFast: ``V = num_clips x num_crops``, view ``v`` is temporal clip
``v // num_crops`` and spatial crop ``v % num_crops``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from xvit.data.cache import CachedVideo
from xvit.data.sampling import SAMPLINGS, multi_clip_indices
from xvit.data.transforms import TestTransform, TrainTransform, build_test_transform, build_train_transform
from xvit.data.video import Video
from xvit.errors import UserError

_VIEWS_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_views(spec: str | Sequence[int], key: str = "views") -> tuple[int, int]:
    """``"2x3"`` (or ``(2, 3)``) -> ``(temporal_clips, spatial_crops)``; ``key`` names the setting in errors."""
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        spec = f"{spec[0]}x{spec[1]}"
    match = _VIEWS_RE.match(str(spec))
    if match is None:
        raise UserError(f"{key} {spec!r} is not of the form TxS (temporal clips x spatial crops), e.g. '1x3' or '2x3'")
    temporal, spatial = int(match.group(1)), int(match.group(2))
    if temporal < 1 or spatial < 1:
        raise UserError(f"{key} {spec!r}: both numbers must be at least 1, e.g. '1x3'")
    return temporal, spatial


def parse_view_list(text: str, key: str = "--views") -> list[tuple[int, int]]:
    """``"1x3"`` -> ``[(1, 3)]``; ``"1x3,2x3"`` -> ``[(1, 3), (2, 3)]`` (duplicates removed)."""
    settings: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        views = parse_views(part, key=f"{key} {text!r}:")
        if views not in settings:
            settings.append(views)
    if not settings:
        raise UserError(f"{key} {text!r}: give TxS, e.g. 1x3")
    return settings


def views_text(views: tuple[int, int]) -> str:
    return f"{views[0]}x{views[1]}"


@dataclass(frozen=True)
class ClipSpec:
    """The test-time pipeline of a model; frozen, stored in every checkpoint as a JSON dict."""

    num_frames: int = 8  # frames per clip (the model's T)
    sampling: str = "segment"  # segment (TSN: one frame per equal segment; SSv2) | dense (fixed stride; K400)
    frame_stride: int = 4  # dense sampling: frames between two sampled frames
    crop_size: int = 224  # crop side in pixels (the model's img_size)
    short_side: int | None = None  # test: short side resized to this before cropping (None: crop_size)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # per-channel mean (in21k ViT weights: 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)  # per-channel std
    views: tuple[int, int] = (1, 1)  # test views: (temporal clips, spatial crops); K400 1x3, SSv2 2x3
    class_names: tuple[str, ...] = ()  # index -> name; () when unknown

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise lists from JSON/YAML to tuples
        set_(self, "mean", tuple(float(m) for m in self.mean))
        set_(self, "std", tuple(float(s) for s in self.std))
        set_(self, "views", parse_views(self.views, key="views"))
        set_(self, "class_names", tuple(str(n) for n in self.class_names))
        if self.sampling not in SAMPLINGS:
            raise UserError(f"sampling {self.sampling!r} is unknown; use one of {', '.join(SAMPLINGS)}")
        for name in ("num_frames", "frame_stride", "crop_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if self.short_side is not None and self.short_side < self.crop_size:
            raise UserError(
                f"short_side {self.short_side} is smaller than crop_size {self.crop_size}: use short_side >= crop_size"
            )
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise UserError(f"mean {self.mean} and std {self.std} need the same length and std > 0")

    @property
    def test_short_side(self) -> int:
        return self.short_side or self.crop_size

    @property
    def views_text(self) -> str:
        return views_text(self.views)

    def names(self, num_classes: int) -> list[str]:
        """The class names, else ``"0" .. "K-1"`` when they are unknown or do not fit ``num_classes``."""
        names = list(self.class_names)
        return names if len(names) == num_classes else [str(i) for i in range(num_classes)]

    def replace(self, **changes: Any) -> ClipSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(mean=list(self.mean), std=list(self.std), views=self.views_text, class_names=list(self.class_names))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipSpec:
        """The inverse of ``to_dict``; an unknown key is a ``UserError`` naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"clip spec has unknown keys {unknown}; known: {', '.join(sorted(names))}")
        return cls(**data)

    def clip_indices(self, num_video_frames: int, num_clips: int | None = None) -> list[list[int]]:
        """Frame indices of each test clip of a video (``num_clips`` default: ``views[0]``)."""
        return multi_clip_indices(
            self.sampling,
            num_video_frames,
            self.num_frames,
            stride=self.frame_stride,
            num_clips=num_clips or self.views[0],
        )

    def test_transform(self, num_crops: int | None = None) -> TestTransform:
        """uint8 ``(T, H, W, 3)`` -> float ``(num_crops, C, T, S, S)`` (``num_crops`` default: ``views[1]``)."""
        return build_test_transform(
            crop_size=self.crop_size,
            short_side=self.test_short_side,
            num_crops=num_crops or self.views[1],
            mean=self.mean,
            std=self.std,
        )


@dataclass(frozen=True)
class Augment:
    """Training-only clip augmentation (one random choice per clip, shared by its frames)."""

    short_side_range: tuple[int, int] | None = (256, 320)  # random short side, then a random crop (SSv2)
    scale: tuple[float, float] | None = None  # random-resized crop area range instead (K400 multi-scale)
    auto_augment: str | None = None  # AutoAugment / RandAugment policy, the same op on every frame
    random_erasing: float = 0.0  # probability of erasing one box (the same on every frame)
    hflip: bool = True  # random horizontal flip; off for datasets with left/right classes (SSv2)
    flip_label_map: dict[int, int] = field(default_factory=dict)  # labels swapped on a flip (left <-> right)

    def train_transform(self, clip: ClipSpec) -> TrainTransform:
        """``(uint8 (T, H, W, 3), label) -> (float (C, T, S, S), label)`` for ``clip``'s crop and norm."""
        return build_train_transform(
            crop_size=clip.crop_size,
            short_side_range=self.short_side_range,
            scale=self.scale,
            auto_augment=self.auto_augment,
            random_erasing=self.random_erasing,
            hflip=self.hflip,
            flip_label_map=self.flip_label_map or None,
            mean=clip.mean,
            std=clip.std,
        )


def decode_views(video: Video | CachedVideo, clips: list[list[int]], transform: Callable[[Tensor], Tensor]) -> Tensor:
    """Every view of one video from a single decode: ``(V, C, T, H, W)``, ``v = clip * crops + crop``.

    ``clips`` are the frame indices of each temporal clip; the union of their frames is decoded
    once (``Video.get``) and each clip's frames go through ``transform`` (uint8
    ``(T, H, W, 3)`` -> ``(crops, C, T, H, W)``).
    """
    wanted = sorted({i for clip in clips for i in clip})
    frames = video.get(wanted)  # (F, H, W, 3) uint8, each wanted frame once
    row = {f: j for j, f in enumerate(wanted)}
    return torch.cat([transform(frames[[row[i] for i in clip]]) for clip in clips])  # (T*S, C, T, H, W)
