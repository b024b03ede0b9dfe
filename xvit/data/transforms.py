"""Clip transforms: one spatial augmentation shared by every frame of a clip (X-ViT paper §4).

Training (``build_train_transform``): short-side jitter + random crop (SSv2 recipe, short side
256-320, crop 224) or a random-resized "multi-scale" crop (Kinetics recipe), AutoAugment /
RandAugment, horizontal flip with an optional left/right label swap, random erasing; testing
(``build_test_transform``): resize the short side, then 1 centre crop or PySlowFast's 3 crops
along the long side. Every random choice is drawn once per clip (one box, one flip, one
AutoAugment op) from torch's global generator, so ``torch.manual_seed`` makes it repeatable.

Input: a decoded clip, ``uint8`` of shape ``(T, H, W, C)``. Output: ``float32`` ``(C, T, H, W)``
(train) or ``(num_crops, C, T, H, W)`` (test), normalised as ``(x / 255 - mean) / std``.
Cropping, resizing (antialiased) and AutoAugment run on ``uint8``; the crop box is mapped back to
the source frame so that a large frame is cropped before it is resized. torchvision's v2
transforms see the clip as a ``tv_tensors.Video`` of shape ``(T, C, H, W)``; the permuted view of
a ``(T, H, W, C)`` clip is channels-last in memory, the layout of torch's fast uint8 resize.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from xvit.errors import UserError

__all__ = ["TestTransform", "TrainTransform", "build_test_transform", "build_train_transform"]

_RANDAUGMENT_RE = re.compile(r"^randaugment((?:-[mn]\d+)*)$")


def _build_auto_augment(name: str | None) -> v2.Transform | None:
    """``None``, ``"autoaugment"``, ``"randaugment"`` or ``"randaugment-m<magnitude>-n<num_ops>"``."""
    if name is None or name.lower() in ("", "none"):
        return None
    key = name.lower()
    if key in ("autoaugment", "autoaugment-imagenet"):
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    match = _RANDAUGMENT_RE.match(key)
    if match is None:
        raise UserError(
            f"auto_augment {name!r} is unknown: use none, 'autoaugment', 'randaugment' or "
            "'randaugment-m<magnitude>-n<num_ops>' (e.g. 'randaugment-m9-n2')"
        )
    kwargs = {"magnitude": 9, "num_ops": 2}
    for token in filter(None, match.group(1).split("-")):
        kwargs["magnitude" if token[0] == "m" else "num_ops"] = int(token[1:])
    if not 0 <= kwargs["magnitude"] < 31:  # tv's RandAugment has 31 magnitude bins
        raise UserError(f"auto_augment {name!r}: magnitude must be in 0..30")
    return v2.RandAugment(**kwargs)


def _check_norm(mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Return ``(scale, offset)`` of shape ``(C, 1, 1)`` with ``x_uint8 * scale - offset`` = normalised."""
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise UserError(f"mean {tuple(mean)} and std {tuple(std)} need the same length and std > 0")
    mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor([float(s) for s in std], dtype=torch.float32).view(-1, 1, 1)
    return 1.0 / (255.0 * std_t), mean_t / std_t


def _to_tchw(clip: Tensor, channels: int) -> Tensor:
    """Check a decoded clip and view it as torchvision's video layout: (T, H, W, C) -> (T, C, H, W)."""
    if not isinstance(clip, Tensor) or clip.ndim != 4 or clip.shape[-1] != channels or clip.dtype != torch.uint8:
        got = f"{clip.dtype} {tuple(clip.shape)}" if isinstance(clip, Tensor) else type(clip).__name__
        raise ValueError(f"clip transforms take a uint8 tensor (T, H, W, {channels}) as decoded, got {got}")
    return clip.permute(0, 3, 1, 2)  # (T, H, W, C) -> (T, C, H, W), channels-last in memory


def _normalise(x: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    """uint8 (..., T, C, H, W) -> float32 (..., C, T, H, W), ``(x / 255 - mean) / std``."""
    x = x.transpose(-4, -3).contiguous()  # (..., T, C, H, W) -> (..., C, T, H, W), still uint8
    out = x.to(torch.float32)
    return out.mul_(scale.unsqueeze(-1)).sub_(offset.unsqueeze(-1))  # (C, 1, 1, 1) broadcasts over T


class TrainTransform:
    """Random clip augmentation; ``(clip uint8 (T, H, W, C), label) -> (float (C, T, S, S), label)``.

    Built by :func:`build_train_transform`; a class (not a closure) so that data-loader workers
    can pickle it.
    """

    def __init__(
        self,
        crop_size: int,
        short_side_range: tuple[int, int] | None,
        scale: tuple[float, float] | None,
        auto_augment: str | None,
        random_erasing: float,
        hflip: bool,
        flip_label_map: dict[int, int] | None,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.crop_size = crop_size
        self.short_side_range = short_side_range
        self.scale = scale
        self.auto_augment = auto_augment
        self.random_erasing = random_erasing
        self.hflip = hflip
        self.flip_label_map = dict(flip_label_map or {})
        self.channels = len(mean)
        self._norm = _check_norm(mean, std)
        self._augment = _build_auto_augment(auto_augment)
        self._resized_crop = v2.RandomResizedCrop(crop_size, scale=scale, antialias=True) if scale is not None else None
        # 'random': per-pixel N(0, 1) noise in normalised units (timm / PySlowFast "pixel" mode).
        self._erase = v2.RandomErasing(p=random_erasing, value="random", inplace=True) if random_erasing > 0 else None

    def _crop(self, x: Tensor) -> Tensor:
        """Short-side jitter + random crop, done as one crop of the source frame and one resize.

        Resizing the short side to S then cropping ``crop_size`` equals cropping a square of side
        ``crop_size * short / S`` from the source and resizing it to ``crop_size``.
        """
        _, _, height, width = x.shape
        short = min(height, width)
        if self.short_side_range is None:  # native resolution; upscale only if too small
            target = max(self.crop_size, short)
        else:
            lo, hi = self.short_side_range
            target = int(torch.randint(lo, hi + 1, ()).item())
        side = min(short, max(1, round(self.crop_size * short / target)))
        top = int(torch.randint(0, height - side + 1, ()).item())
        left = int(torch.randint(0, width - side + 1, ()).item())
        size = [self.crop_size, self.crop_size]
        return TF.resized_crop(x, top, left, side, side, size, antialias=True)  # (T, C, S, S)

    def __call__(self, clip: Tensor, label: int) -> tuple[Tensor, int]:
        x = _to_tchw(clip, self.channels)  # (T, C, H, W) uint8
        if self._resized_crop is not None:
            x = self._resized_crop(tv_tensors.Video(x))  # one box for the whole clip
        else:
            x = self._crop(x)  # (T, C, S, S)
        if self._augment is not None:
            x = self._augment(tv_tensors.Video(x))  # one op (and magnitude) per clip
        if self.hflip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
            label = self.flip_label_map.get(int(label), label)
        out = _normalise(x.as_subclass(Tensor), *self._norm)  # (C, T, S, S) float32
        if self._erase is not None:
            self._erase(tv_tensors.Video(out.transpose(0, 1)))  # in place, one box on every frame
        return out, label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(crop_size={self.crop_size}, short_side_range={self.short_side_range}, "
            f"scale={self.scale}, auto_augment={self.auto_augment!r}, random_erasing={self.random_erasing}, "
            f"hflip={self.hflip}, flip_label_map={self.flip_label_map})"
        )


class TestTransform:
    """Deterministic test views; ``clip uint8 (T, H, W, C) -> float (num_crops, C, T, S, S)``.

    The short side is resized to ``short_side``; crops are taken along the long side (left/top,
    centre, right/bottom for 3 crops, as PySlowFast's ``spatial_idx`` 0, 1, 2) and centred on the
    short side. Each crop is cut from the source frame, then resized.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self, crop_size: int, short_side: int, num_crops: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.crop_size = crop_size
        self.short_side = short_side
        self.num_crops = num_crops
        self.channels = len(mean)
        self._norm = _check_norm(mean, std)

    def boxes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """``(top, left, side)`` of each crop in source pixels for a ``height x width`` frame."""
        short, long = min(height, width), max(height, width)
        side = min(short, max(1, round(self.crop_size * short / self.short_side)))
        across = (short - side) // 2
        if self.num_crops == 1:
            along = [(long - side) // 2]
        else:
            along = [0, (long - side) // 2, long - side]
        if width >= height:  # landscape (or square): crops run left to right
            return [(across, a, side) for a in along]
        return [(a, across, side) for a in along]  # portrait: top to bottom

    def __call__(self, clip: Tensor) -> Tensor:
        x = _to_tchw(clip, self.channels)  # (T, C, H, W) uint8
        size = [self.crop_size, self.crop_size]
        crops = [
            TF.resized_crop(x, top, left, side, side, size, antialias=True)  # (T, C, S, S)
            for top, left, side in self.boxes(x.shape[-2], x.shape[-1])
        ]
        return _normalise(torch.stack(crops), *self._norm)  # (K, T, C, S, S) -> (K, C, T, S, S)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(crop_size={self.crop_size}, short_side={self.short_side}, "
            f"num_crops={self.num_crops})"
        )


def build_train_transform(
    *,
    crop_size: int = 224,
    short_side_range: tuple[int, int] | None = (256, 320),
    scale: tuple[float, float] | None = None,
    auto_augment: str | None = None,
    random_erasing: float = 0.0,
    hflip: bool = True,
    flip_label_map: dict[int, int] | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> TrainTransform:
    """Training transform ``(clip (T, H, W, C) uint8, label) -> ((C, T, crop, crop) float, label)``.

    ``short_side_range``: the short side is resized to a random value in it (inclusive) before a
    random ``crop_size`` crop (SSv2 recipe: (256, 320)); ``None`` crops at native resolution.
    ``scale``: when given, a random-resized crop with this area range is used instead (Kinetics
    "multi-scale crop"). ``hflip``: flip with p = 0.5 (``False`` for SSv2-style left/right classes);
    on a flip the label goes through ``flip_label_map`` when given. ``random_erasing``: probability
    of erasing one box (the same on every frame) with N(0, 1) noise after normalisation (SSv2: 0.5).
    Mean/std default to 0.5 (in21k ViT weights).
    """
    if int(crop_size) != crop_size or crop_size < 1:
        raise UserError(f"crop_size {crop_size!r} must be a positive integer")
    if scale is None and short_side_range is not None:
        lo, hi = short_side_range
        if not crop_size <= lo <= hi:
            raise UserError(
                f"short_side_range {tuple(short_side_range)} must satisfy crop_size ({crop_size}) <= min <= max"
            )
        short_side_range = (int(lo), int(hi))
    if scale is not None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise UserError(f"scale {tuple(scale)} must satisfy 0 < min <= max <= 1 (fractions of the frame area)")
        scale = (float(scale[0]), float(scale[1]))
    if not 0.0 <= random_erasing <= 1.0:
        raise UserError(f"random_erasing {random_erasing!r} is a probability: use a value in [0, 1]")
    return TrainTransform(
        int(crop_size), short_side_range, scale, auto_augment, float(random_erasing), bool(hflip),
        flip_label_map, mean, std,
    )  # fmt: skip


def build_test_transform(
    *,
    crop_size: int = 224,
    short_side: int | None = None,
    num_crops: int = 1,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> TestTransform:
    """Test transform ``clip (T, H, W, C) uint8 -> (num_crops, C, T, crop, crop) float``.

    ``short_side`` defaults to ``crop_size`` (paper §4: short side 224 for 224 crops); ``num_crops``
    is 1 (centre) or 3 (PySlowFast 3-crop testing along the long side).
    """
    if int(crop_size) != crop_size or crop_size < 1:
        raise UserError(f"crop_size {crop_size!r} must be a positive integer")
    short_side = crop_size if short_side is None else short_side
    if short_side < crop_size:
        raise UserError(f"short_side {short_side} is smaller than crop_size {crop_size}: use short_side >= crop_size")
    if num_crops not in (1, 3):
        raise UserError(f"num_crops {num_crops!r} is not supported: use 1 (centre crop) or 3 (along the long side)")
    return TestTransform(int(crop_size), int(short_side), int(num_crops), mean, std)
