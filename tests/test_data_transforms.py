"""Clip transforms: one random choice per clip, crop positions, label swap on flip, normalisation."""

from __future__ import annotations

import pytest
import torch

from xvit.data.clip import parse_views
from xvit.data.transforms import build_test_transform, build_train_transform
from xvit.errors import UserError

AUGMENTS = [None, "autoaugment", "randaugment", "randaugment-m15-n3"]


def coord_clip(num_frames: int, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 3) uint8: R = x, G = y (exact pixel coordinates), B = 10 * t (a per-frame marker)."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    frame = torch.stack([xs, ys, torch.zeros_like(xs)], dim=-1)  # (H, W, 3)
    clip = frame.expand(num_frames, height, width, 3).clone()  # (T, H, W, 3)
    clip[..., 2] = (10 * torch.arange(num_frames)).view(-1, 1, 1)
    return clip.to(torch.uint8)


def repeated_clip(num_frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(T, H, W, 3) uint8 clip of T identical random frames."""
    gen = torch.Generator().manual_seed(seed)
    frame = torch.randint(0, 256, (1, height, width, 3), dtype=torch.uint8, generator=gen)
    return frame.expand(num_frames, -1, -1, -1).contiguous()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Undo the default normalisation (mean = std = 0.5): float (..., C, T, H, W) -> rounded 0..255."""
    return ((x * 0.5 + 0.5) * 255).round()


def test_train_output_shape_dtype_and_normalisation():
    clip = torch.full((4, 40, 50, 3), 255, dtype=torch.uint8)
    clip[:, :, :, 1] = 0
    mean, std = (0.5, 0.25, 0.4), (0.5, 0.25, 0.2)
    tf = build_train_transform(crop_size=32, short_side_range=(32, 40), mean=mean, std=std)
    out, label = tf(clip, 7)
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    assert label == 7
    expected = torch.tensor([(1 - 0.5) / 0.5, (0 - 0.25) / 0.25, (1 - 0.4) / 0.2])
    torch.testing.assert_close(out.amax(dim=(1, 2, 3)), expected)
    torch.testing.assert_close(out.amin(dim=(1, 2, 3)), expected)


def test_test_output_shape_and_default_normalisation():
    clip = torch.zeros(5, 36, 48, 3, dtype=torch.uint8)
    out = build_test_transform(crop_size=24, num_crops=3)(clip)
    assert out.shape == (3, 3, 5, 24, 24) and out.dtype == torch.float32
    assert torch.all(out == -1.0)  # (0 - 0.5) / 0.5


@pytest.mark.parametrize("auto_augment", AUGMENTS)
@pytest.mark.parametrize("scale", [None, (0.3, 1.0)])
def test_identical_frames_stay_identical(auto_augment, scale):
    clip = repeated_clip(6, 48, 64)
    tf = build_train_transform(crop_size=32, short_side_range=(40, 56), scale=scale, auto_augment=auto_augment)
    for seed in range(6):
        torch.manual_seed(seed)
        out, _ = tf(clip, 0)  # (C, T, H, W)
        assert out.shape == (3, 6, 32, 32)
        assert torch.equal(out, out[:, :1].expand_as(out)), f"frames differ (seed {seed})"


def test_same_crop_box_on_every_frame_at_native_resolution():
    clip = coord_clip(5, 60, 80)
    tf = build_train_transform(crop_size=32, short_side_range=None, hflip=False)
    lefts, tops = set(), set()
    for seed in range(8):
        torch.manual_seed(seed)
        out = to_uint8(tf(clip, 0)[0])  # (C, T, 32, 32)
        left, top = int(out[0, 0, 0, 0]), int(out[1, 0, 0, 0])
        ramp = torch.arange(32, dtype=out.dtype)
        for t in range(5):  # every frame: the same unscaled window, and its own marker
            assert torch.equal(out[0, t], (left + ramp).expand(32, 32))
            assert torch.equal(out[1, t], (top + ramp).view(32, 1).expand(32, 32))
            assert torch.all(out[2, t] == 10 * t)
        assert 0 <= left <= 80 - 32 and 0 <= top <= 60 - 32
        lefts.add(left)
        tops.add(top)
    assert len(lefts) > 1 and len(tops) > 1  # the box is random across clips


def test_same_crop_box_on_every_frame_with_short_side_jitter():
    clip = coord_clip(4, 60, 90)
    tf = build_train_transform(crop_size=24, short_side_range=(30, 50), hflip=False)
    for seed in range(5):
        torch.manual_seed(seed)
        out = to_uint8(tf(clip, 0)[0])  # (C, T, 24, 24)
        assert torch.equal(out[:2], out[:2, :1].expand_as(out[:2]))  # same box: same coordinates
        for t in range(4):
            assert torch.all(out[2, t] == 10 * t)  # frames keep their own content and order


def test_per_frame_result_equals_single_frame_transform_under_same_seed():
    """One op, magnitude, box, flip and erased box drawn per clip: frame t equals frame t alone."""
    clip = torch.randint(0, 256, (4, 40, 48, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    for auto_augment in AUGMENTS[1:]:
        tf = build_train_transform(
            crop_size=32, short_side_range=(40, 48), auto_augment=auto_augment, random_erasing=0.5
        )
        for seed in range(5):
            torch.manual_seed(seed)
            whole, _ = tf(clip, 0)
            for t in range(clip.shape[0]):
                torch.manual_seed(seed)
                alone, _ = tf(clip[t : t + 1], 0)
                torch.testing.assert_close(whole[:, t : t + 1], alone, rtol=0, atol=1e-6)


def test_hflip_maps_label_only_when_flipped():
    clip = torch.zeros(3, 32, 32, 3, dtype=torch.uint8)
    clip[:, :, 16:] = 255  # right half bright
    tf = build_train_transform(crop_size=32, short_side_range=None, flip_label_map={0: 1, 1: 0})
    flips = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out, label = tf(clip, 0)
        flipped = bool(out[:, :, :, 0].mean() > 0)  # bright half moved to the left
        assert label == (1 if flipped else 0)
        unmapped = tf(clip, 5)[1]
        assert unmapped == 5  # labels outside the map never change
        flips += flipped
    assert 0 < flips < 20
    no_flip = build_train_transform(crop_size=32, short_side_range=None, hflip=False, flip_label_map={0: 1})
    for seed in range(10):
        torch.manual_seed(seed)
        out, label = no_flip(clip, 0)
        assert label == 0 and torch.all(out[:, :, :, 0] < 0)


def test_random_erasing_same_box_on_every_frame():
    clip = torch.full((5, 40, 40, 3), 128, dtype=torch.uint8)
    tf = build_train_transform(crop_size=32, short_side_range=(32, 40), random_erasing=1.0, hflip=False)
    for seed in range(5):
        torch.manual_seed(seed)
        out, _ = tf(clip, 0)
        erased = (out - (128 / 255 - 0.5) / 0.5).abs().amax(dim=0) > 1e-6  # (T, H, W)
        assert 0 < int(erased[0].sum()) < 32 * 32
        assert torch.equal(erased, erased[:1].expand_as(erased))
        rows, cols = erased[0].any(dim=1), erased[0].any(dim=0)
        assert int(erased[0].sum()) == int(rows.sum()) * int(cols.sum())  # one rectangle


def test_determinism_under_manual_seed():
    clip = torch.randint(0, 256, (4, 48, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    tf = build_train_transform(crop_size=32, short_side_range=(40, 60), auto_augment="randaugment", random_erasing=0.5)
    outs = []
    for seed in (11, 11, 12):
        torch.manual_seed(seed)
        outs.append(tf(clip, 0)[0])
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


@pytest.mark.parametrize(("height", "width"), [(32, 64), (64, 32)])
def test_three_crops_along_long_side(height, width):
    clip = coord_clip(2, height, width)
    out = to_uint8(build_test_transform(crop_size=32, num_crops=3)(clip))  # (3, C, T, 32, 32)
    starts = [0, 16, 32]
    axis = 0 if width > height else 1  # channel R encodes x, G encodes y
    for k, start in enumerate(starts):
        assert int(out[k, axis, 0, 0, 0]) == start
        assert int(out[k, 1 - axis, 0, 0, 0]) == 0
    centre = build_test_transform(crop_size=32, num_crops=1)(clip)
    assert torch.equal(to_uint8(centre[0]), out[1])


def test_test_transform_resizes_short_side_before_cropping():
    clip = coord_clip(2, 60, 100)
    tf = build_test_transform(crop_size=24, short_side=30, num_crops=3)
    assert tf.boxes(60, 100) == [(6, 0, 48), (6, 26, 48), (6, 52, 48)]  # (top, left, side) in source px
    out = to_uint8(tf(clip))  # (3, C, T, 24, 24), a factor 2 down
    assert out.shape == (3, 3, 2, 24, 24)
    for k, left in enumerate((0, 26, 52)):
        xs = out[k, 0, 0, 0]  # first row, x coordinate of each output pixel
        expected = left + 2 * torch.arange(24) + 0.5
        assert (xs - expected).abs().max() <= 1.0


def test_parse_views():
    assert parse_views("2x3") == (2, 3)
    assert parse_views(" 1X1 ") == (1, 1)
    for bad in ("2", "2x", "x3", "0x3", "2x3x1", "ax3", "-1x3"):
        with pytest.raises(UserError, match="views"):
            parse_views(bad)


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="auto_augment 'autoaug'"):
        build_train_transform(auto_augment="autoaug")
    with pytest.raises(UserError, match="short_side_range"):
        build_train_transform(crop_size=224, short_side_range=(200, 320))
    with pytest.raises(UserError, match="scale"):
        build_train_transform(scale=(0.5, 2.0))
    with pytest.raises(UserError, match="num_crops 2"):
        build_test_transform(num_crops=2)
    with pytest.raises(ValueError, match="uint8"):
        build_test_transform(crop_size=8)(torch.zeros(2, 8, 8, 3))
