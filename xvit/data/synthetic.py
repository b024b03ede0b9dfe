"""The built-in synthetic temporal benchmark: a small Something-Something-like dataset of mp4s.

Most classes come in pairs that are time reversals of each other (the second class of a pair is
drawn by the same generator as the first and its frames are written in reverse order), so every
single frame, and every unordered set of frames, is equally likely under both classes: only the
order of the frames tells them apart, the situation that SSv2 tests and that space-time mixing
(SPEC §1) is built for. Two appearance-only classes are the control a frame model can solve.

=========================  ===========  ==========================================================
class                      kind         what distinguishes it
=========================  ===========  ==========================================================
moving_left                temporal     an object slides right to left (reverse of moving_right)
moving_right               temporal     an object slides left to right
moving_up                  temporal     an object slides bottom to top (reverse of moving_down)
moving_down                temporal     an object slides top to bottom
approaching                temporal     an object grows (comes closer) around a fixed centre
receding                   temporal     an object shrinks (reverse of approaching)
rotating_clockwise         temporal     a non-circular object turns clockwise on screen
rotating_counterclockwise  temporal     the same, counter-clockwise (reverse of clockwise)
appearing                  temporal     an object fades in from the background
disappearing               temporal     an object fades out (reverse of appearing)
passing_in_front           interaction  a small object crosses a larger one, drawn over it
passing_behind             interaction  the same crossing, hidden behind the larger one
static_cross               appearance   a still plus-shaped object (shape used by no other class)
static_ring                appearance   a still ring (shape used by no other class)
=========================  ===========  ==========================================================

The two ``passing_*`` classes are decided by which object occludes the other, visible only in
the frames where they overlap. A horizontal flip swaps left/right and clockwise/counter-clockwise
(:data:`FLIP_LABEL_MAP`, for ``build_train_transform(flip_label_map=...)``).

Nuisances, drawn per video from ``numpy.random.default_rng((seed, label, index))``: shape
(square, circle, triangle, diamond, bar), texture (plain, stripes, checker, blocky noise), colours
(object and background on opposite sides of mid-grey, so that contrast is never lost), background
(plain, gradient, smooth noise), start position, size, speed and the onset/end of the motion, and
per-pixel Gaussian noise. Frames are drawn with numpy (vectorised masks, no anti-aliasing) and
written as H.264 (libx264, yuv420p) through PyAV, ``videos/<class>/<index:05d>.mp4``, with
``train.txt`` / ``val.txt`` (``videos/<class>/<index>.mp4 <label>``, relative to the dataset root),
``classes.txt`` (line index = label) and ``meta.json`` (parameters and counts, written last: a
dataset is complete when its ``meta.json`` is).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from xvit.errors import UserError

__all__ = [
    "CLASSES",
    "DEFAULTS",
    "FLIP_LABEL_MAP",
    "SyntheticClass",
    "SyntheticInfo",
    "add_arguments",
    "cache_key",
    "class_descriptions",
    "ensure_synthetic",
    "generate_synthetic",
    "render_video",
    "run",
]

# Bump when the drawing or encoding changes: cached datasets keyed by the old version are rebuilt.
GENERATOR_VERSION = 1
DEFAULTS: dict[str, int | float] = {
    "seed": 0,
    "videos_per_class": 80,  # 14 classes -> 1,120 videos, 896 train / 224 val
    "num_frames": 16,  # a model samples 8 of them (one per TSN segment)
    "size": 64,  # square frames, pixels
    "fps": 12,
    "val_fraction": 0.2,
}
_CRF = 20  # x264 quality; object/background contrast survives it with a wide margin


@dataclass(frozen=True)
class SyntheticClass:
    """One class: its name, kind (temporal / interaction / appearance) and what decides it."""

    name: str
    kind: str
    description: str


CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass("moving_left", "temporal", "an object slides right to left (reverse of moving_right)"),
    SyntheticClass("moving_right", "temporal", "an object slides left to right"),
    SyntheticClass("moving_up", "temporal", "an object slides bottom to top (reverse of moving_down)"),
    SyntheticClass("moving_down", "temporal", "an object slides top to bottom"),
    SyntheticClass("approaching", "temporal", "an object grows (comes closer) around a fixed centre"),
    SyntheticClass("receding", "temporal", "an object shrinks (reverse of approaching)"),
    SyntheticClass("rotating_clockwise", "temporal", "a non-circular object turns clockwise on screen"),
    SyntheticClass(
        "rotating_counterclockwise", "temporal", "the same, counter-clockwise (reverse of rotating_clockwise)"
    ),
    SyntheticClass("appearing", "temporal", "an object fades in from the background"),
    SyntheticClass("disappearing", "temporal", "an object fades out (reverse of appearing)"),
    SyntheticClass("passing_in_front", "interaction", "a small object crosses a larger one, drawn over it"),
    SyntheticClass("passing_behind", "interaction", "the same crossing, hidden behind the larger one"),
    SyntheticClass("static_cross", "appearance", "a still plus-shaped object (shape used by no other class)"),
    SyntheticClass("static_ring", "appearance", "a still ring (shape used by no other class)"),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
# Labels swapped by a horizontal flip (left <-> right, clockwise <-> counter-clockwise).
FLIP_LABEL_MAP: dict[int, int] = {0: 1, 1: 0, 6: 7, 7: 6}


def class_descriptions() -> str:
    """The class table as Markdown (label, name, kind, what distinguishes it), for the README."""
    rows = ["| label | class | kind | what distinguishes it |", "| --- | --- | --- | --- |"]
    rows += [f"| {i} | `{c.name}` | {c.kind} | {c.description} |" for i, c in enumerate(CLASSES)]
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------
# Drawing (numpy only). Frames are float32 (T, S, S, 3) in 0..255 until the final rounding.

_SHAPES = ("square", "circle", "triangle", "diamond", "bar")
_TEXTURES = ("plain", "stripes", "checker", "noise")


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-mask of a shape in object coordinates (radius ~1 around the origin)."""
    au, av_ = np.abs(u), np.abs(v)
    if shape == "square":
        return np.maximum(au, av_) <= 0.72
    if shape == "circle":
        return u * u + v * v <= 0.85**2
    if shape == "triangle":
        return (v >= -0.5) & (v <= 1.0 - math.sqrt(3.0) * au)
    if shape == "diamond":
        return au + av_ <= 1.0
    if shape == "bar":
        return (au <= 1.0) & (av_ <= 0.3)
    if shape == "cross":
        return ((au <= 0.95) & (av_ <= 0.3)) | ((av_ <= 0.95) & (au <= 0.3))
    if shape == "ring":
        rho2 = u * u + v * v
        return (rho2 >= 0.5**2) & (rho2 <= 0.92**2)
    raise ValueError(f"unknown shape {shape!r}")


@dataclass
class _Look:
    """How one object looks: shape, two colours and a texture mixing them (object coordinates)."""

    shape: str
    colours: np.ndarray  # (2, 3) float32
    texture: str
    freq: float  # stripes / checks per unit of object radius
    angle: float  # stripe orientation, radians
    grid: np.ndarray = field(default_factory=lambda: np.zeros((1, 1), np.float32))  # noise texture

    def mix(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Texture value in [0, 1] at object coordinates (any shape)."""
        if self.texture == "stripes":
            return np.floor((u * math.cos(self.angle) + v * math.sin(self.angle)) * self.freq) % 2
        if self.texture == "checker":
            return (np.floor(u * self.freq) + np.floor(v * self.freq)) % 2
        if self.texture == "noise":
            n = self.grid.shape[0]
            iu = np.clip(((u + 1) * 0.5 * n).astype(np.int64), 0, n - 1)
            iv = np.clip(((v + 1) * 0.5 * n).astype(np.int64), 0, n - 1)
            return self.grid[iv, iu]
        return np.zeros_like(u)


def _colour(rng: np.random.Generator, light: bool, n: int = 1) -> np.ndarray:
    """(n, 3) colours, every channel in 155..255 (light) or 0..100 (dark)."""
    low = 155.0 if light else 0.0
    return (low + 100.0 * rng.random((n, 3))).astype(np.float32)


def _look(rng: np.random.Generator, light: bool, shapes: tuple[str, ...] = _SHAPES) -> _Look:
    """A random object appearance with colours on the ``light`` side of mid-grey."""
    shape = shapes[rng.integers(len(shapes))]
    texture = _TEXTURES[rng.integers(len(_TEXTURES))]
    colours = _colour(rng, light, 2)
    freq, angle = float(rng.uniform(1.2, 2.5)), float(rng.uniform(0, math.pi))
    grid = rng.random((int(rng.integers(3, 6)),) * 2).astype(np.float32)
    return _Look(shape, colours, texture, freq, angle, grid)


def _background(rng: np.random.Generator, size: int, light: bool) -> np.ndarray:
    """(S, S, 3) background: plain, linear gradient or smooth (bilinear) noise."""
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(_colour(rng, light)[0], (size, size, 3)).copy()
    if kind == 1:
        c0, c1 = _colour(rng, light, 2)
        phi = rng.uniform(0, 2 * math.pi)
        coords = np.arange(size, dtype=np.float32) / max(size - 1, 1)
        ramp = coords[None, :] * math.cos(phi) + coords[:, None] * math.sin(phi)  # (S, S)
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        return c0 + (c1 - c0) * ramp[..., None]
    k = int(rng.integers(3, 7))
    grid = _colour(rng, light, k * k).reshape(k, k, 3)
    pos = np.linspace(0, k - 1, size)
    lo = np.minimum(pos.astype(np.int64), k - 2)
    weights = np.zeros((size, k), np.float32)  # (S, k) linear interpolation matrix
    weights[np.arange(size), lo] = 1 - (pos - lo)
    weights[np.arange(size), lo + 1] = pos - lo
    return np.einsum("yi,ijc,xj->yxc", weights, grid, weights)


def _draw(
    frames: np.ndarray,
    look: _Look,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    theta: np.ndarray,
    alpha: np.ndarray | None = None,
) -> None:
    """Composite one object onto ``frames`` (T, S, S, 3) in place; per-frame parameters are (T,)."""
    size = frames.shape[1]
    grid = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    dx = grid[None, None, :] - cx[:, None, None]  # (T, 1, S)
    dy = grid[None, :, None] - cy[:, None, None]  # (T, S, 1)
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    inv_r = 1.0 / radius[:, None, None]
    u = (cos * dx + sin * dy) * inv_r  # (T, S, S); theta grows -> clockwise on screen (y down)
    v = (cos * dy - sin * dx) * inv_r  # (T, S, S)
    cover = _shape_mask(look.shape, u, v).astype(np.float32)  # (T, S, S)
    if alpha is not None:
        cover *= alpha[:, None, None]
    colour = look.colours[0] + (look.colours[1] - look.colours[0]) * look.mix(u, v)[..., None]  # (T, S, S, 3)
    cover = cover[..., None]  # (T, S, S, 1)
    frames *= 1.0 - cover
    frames += cover * colour


def _progress(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """(T,) ramp 0 -> 1 with a random onset and end (the motion may start late / stop early)."""
    start, end = rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0)
    t = np.linspace(0.0, 1.0, num_frames)
    return np.clip((t - start) / (end - start), 0.0, 1.0).astype(np.float32)


def _const(value: float, num_frames: int) -> np.ndarray:
    return np.full(num_frames, value, np.float32)


# Each renderer draws the objects of one video onto ``frames`` (T, S, S, 3): fn(rng, frames, light).


def _render_slide(axis: int) -> Callable[[np.random.Generator, np.ndarray, bool], None]:
    """Slide right (axis 0) or down (axis 1) over 55-95 % of the free range, at constant speed."""

    def render(rng: np.random.Generator, frames: np.ndarray, light: bool) -> None:
        num_frames, size = frames.shape[:2]
        look = _look(rng, light)
        r = rng.uniform(0.10, 0.16) * size
        span = rng.uniform(0.55, 0.95) * (size - 2 * r)
        start = rng.uniform(r, size - r - span)
        along = start + span * _progress(rng, num_frames)
        across = _const(rng.uniform(r, size - r), num_frames)
        cx, cy = (along, across) if axis == 0 else (across, along)
        _draw(frames, look, cx, cy, _const(r, num_frames), _const(rng.uniform(0, 2 * math.pi), num_frames))

    return render


def _render_grow(rng: np.random.Generator, frames: np.ndarray, light: bool) -> None:
    """Grow 2.2-3.2x (geometrically) around a fixed centre."""
    num_frames, size = frames.shape[:2]
    look = _look(rng, light)
    r0 = rng.uniform(0.06, 0.10) * size
    r1 = min(r0 * rng.uniform(2.2, 3.2), 0.32 * size)
    cx, cy = rng.uniform(r1, size - r1, 2)
    radius = (r0 * (r1 / r0) ** _progress(rng, num_frames)).astype(np.float32)
    theta = _const(rng.uniform(0, 2 * math.pi), num_frames)
    _draw(frames, look, _const(cx, num_frames), _const(cy, num_frames), radius, theta)


def _render_turn(rng: np.random.Generator, frames: np.ndarray, light: bool) -> None:
    """Turn clockwise by 5-9 degrees per frame on average (below every shape's symmetry angle)."""
    num_frames, size = frames.shape[:2]
    look = _look(rng, light, shapes=("square", "triangle", "diamond", "bar"))
    r = rng.uniform(0.20, 0.30) * size
    cx, cy = rng.uniform(r, size - r, 2)
    sweep = math.radians(rng.uniform(5.0, 9.0)) * (num_frames - 1)
    theta = (rng.uniform(0, 2 * math.pi) + sweep * _progress(rng, num_frames)).astype(np.float32)
    _draw(frames, look, _const(cx, num_frames), _const(cy, num_frames), _const(r, num_frames), theta)


def _render_fade_in(rng: np.random.Generator, frames: np.ndarray, light: bool) -> None:
    """A still object whose opacity ramps from 0 to 1."""
    num_frames, size = frames.shape[:2]
    look = _look(rng, light)
    r = rng.uniform(0.14, 0.24) * size
    cx, cy = rng.uniform(r, size - r, 2)
    theta = _const(rng.uniform(0, 2 * math.pi), num_frames)
    alpha = _progress(rng, num_frames)
    _draw(frames, look, _const(cx, num_frames), _const(cy, num_frames), _const(r, num_frames), theta, alpha)


def _distinct_looks(rng: np.random.Generator, light: bool) -> tuple[_Look, _Look]:
    """Two looks whose first colours differ clearly (so that occlusion order is visible)."""
    first = _look(rng, light)
    while True:
        second = _look(rng, light)
        if np.abs(second.colours - first.colours).sum(axis=1).min() >= 90:
            return first, second


def _render_pass(on_top: bool) -> Callable[[np.random.Generator, np.ndarray, bool], None]:
    """A small object crosses a larger still one horizontally (either way), over or under it."""

    def render(rng: np.random.Generator, frames: np.ndarray, light: bool) -> None:
        num_frames, size = frames.shape[:2]
        big, small = _distinct_looks(rng, light)
        rb, rs = rng.uniform(0.16, 0.22) * size, rng.uniform(0.10, 0.14) * size
        bx, by = rng.uniform(0.4, 0.6, 2) * size
        reach = rng.uniform(0.38, 0.45) * size
        sign = 1.0 if rng.random() < 0.5 else -1.0
        sx = bx + sign * reach * (2 * _progress(rng, num_frames) - 1)
        sy = _const(by + rng.uniform(-0.3, 0.3) * rb, num_frames)
        big_args = (_const(bx, num_frames), _const(by, num_frames), _const(rb, num_frames))
        small_args = (sx.astype(np.float32), sy, _const(rs, num_frames))
        tb, ts = _const(rng.uniform(0, 2 * math.pi), num_frames), _const(rng.uniform(0, 2 * math.pi), num_frames)
        draws = [(big, *big_args, tb), (small, *small_args, ts)]
        for look, *args in draws if on_top else draws[::-1]:
            _draw(frames, look, *args)

    return render


def _render_static(shape: str) -> Callable[[np.random.Generator, np.ndarray, bool], None]:
    """A still object of a shape that no temporal class uses."""

    def render(rng: np.random.Generator, frames: np.ndarray, light: bool) -> None:
        num_frames, size = frames.shape[:2]
        look = _look(rng, light, shapes=(shape,))
        r = rng.uniform(0.18, 0.28) * size
        cx, cy = rng.uniform(r, size - r, 2)
        theta = _const(rng.uniform(0, math.pi / 2), num_frames)
        _draw(frames, look, _const(cx, num_frames), _const(cy, num_frames), _const(r, num_frames), theta)

    return render


# class name -> (renderer, reversed): a reversed class is its partner's video played backwards.
_RENDERERS: dict[str, tuple[Callable[[np.random.Generator, np.ndarray, bool], None], bool]] = {
    "moving_left": (_render_slide(0), True),
    "moving_right": (_render_slide(0), False),
    "moving_up": (_render_slide(1), True),
    "moving_down": (_render_slide(1), False),
    "approaching": (_render_grow, False),
    "receding": (_render_grow, True),
    "rotating_clockwise": (_render_turn, False),
    "rotating_counterclockwise": (_render_turn, True),
    "appearing": (_render_fade_in, False),
    "disappearing": (_render_fade_in, True),
    "passing_in_front": (_render_pass(on_top=True), False),
    "passing_behind": (_render_pass(on_top=False), False),
    "static_cross": (_render_static("cross"), False),
    "static_ring": (_render_static("ring"), False),
}


def render_video(label: int, index: int, *, seed: int = 0, num_frames: int = 16, size: int = 64) -> np.ndarray:
    """The frames of video ``index`` of class ``label``: uint8 ``(T, S, S, 3)``, RGB.

    A pure function of its arguments (``numpy.random.default_rng((seed, label, index))``).
    """
    rng = np.random.default_rng((seed, label, index))
    render, reverse = _RENDERERS[CLASS_NAMES[label]]
    light = bool(rng.random() < 0.5)  # light objects on a dark background, or the other way round
    background = _background(rng, size, not light)  # (S, S, 3)
    frames = np.repeat(background[None].astype(np.float32), num_frames, axis=0)  # (T, S, S, 3)
    render(rng, frames, light)
    sigma = rng.uniform(0.0, 6.0)
    frames += rng.normal(0.0, sigma, frames.shape).astype(np.float32)
    out = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[::-1]) if reverse else out


# ----------------------------------------------------------------------------------------------
# Writing: mp4 files, list files, meta.json.


def _rgb_to_yuv420(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB (T, H, W, 3) -> PyAV's packed yuv420p (T, 3H/2, W): BT.601, limited range.

    Done here, element-wise, so that what the encoder gets is a pure function of the frames
    and the colour matrix is explicit (decoders assume BT.601 for untagged SD video).
    """
    num_frames, height, width, _ = frames.shape
    rgb = frames.astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # (T, H, W)
    y = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b
    pooled = rgb.reshape(num_frames, height // 2, 2, width // 2, 2, 3).mean(axis=(2, 4))  # (T, H/2, W/2, 3)
    r, g, b = pooled[..., 0], pooled[..., 1], pooled[..., 2]
    u = 128.0 - 37.797 * r - 74.203 * g + 112.0 * b  # (T, H/2, W/2)
    v = 128.0 + 112.0 * r - 93.786 * g - 18.214 * b
    planes = [p.reshape(num_frames, -1) for p in (y, u, v)]  # (T, H*W), (T, H*W/4), (T, H*W/4)
    packed = np.concatenate(planes, axis=1).reshape(num_frames, height * 3 // 2, width)
    return np.clip(np.rint(packed), 0, 255).astype(np.uint8)


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as H.264 (libx264, yuv420p, BT.601).

    One thread and x264's plain C code (``asm=0``): with its SIMD code, x264 wrote different
    (valid) streams for identical input in a few percent of these small videos, from run to run
    (apparently reading uninitialised memory), which broke "same seed, same decoded frames".
    The C code costs ~1.3-1.5x encoding time.
    """
    import av  # imported here: only the writer needs it

    rate = Fraction(int(fps))
    with av.open(str(path), mode="w") as container:
        options = {"crf": str(_CRF), "preset": "veryfast", "threads": "1", "x264-params": "asm=0"}
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        for index, image in enumerate(_rgb_to_yuv420(frames)):
            frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush delayed frames


def _make_video(job: tuple[str, int, int, int, int, int, int]) -> None:
    """Worker: render and write one video. ``job`` = (path, label, index, seed, frames, size, fps)."""
    path, label, index, seed, num_frames, size, fps = job
    frames = render_video(label, index, seed=seed, num_frames=num_frames, size=size)
    _write_mp4(Path(path), frames, fps)


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_jobs(jobs: list[tuple], workers: int, progress: bool) -> None:
    """Run ``_make_video`` over ``jobs`` in this process (workers <= 1) or a process pool."""
    from tqdm import tqdm

    if workers <= 1 or len(jobs) < 2:
        with tqdm(total=len(jobs), desc="synthetic", unit="video", disable=not progress) as bar:
            for job in jobs:
                _make_video(job)
                bar.update()
        return
    # fork where available: workers need only numpy and av, and spawning would re-import torch.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        results = pool.map(_make_video, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))
        with tqdm(total=len(jobs), desc="synthetic", unit="video", disable=not progress) as bar:
            for _ in results:
                bar.update()


@dataclass(frozen=True)
class SyntheticInfo:
    """What :func:`generate_synthetic` wrote: the root and the counts (also in ``meta.json``)."""

    root: Path
    classes: tuple[str, ...]
    num_train: int
    num_val: int
    params: dict  # seed, videos_per_class, num_frames, size, fps, val_fraction
    seconds: float  # wall-clock generation time
    flip_label_map: dict[int, int] = field(default_factory=lambda: dict(FLIP_LABEL_MAP))

    @property
    def train_list(self) -> Path:
        return self.root / "train.txt"

    @property
    def val_list(self) -> Path:
        return self.root / "val.txt"

    @property
    def classes_file(self) -> Path:
        return self.root / "classes.txt"

    @property
    def num_videos(self) -> int:
        return self.num_train + self.num_val


def _check_params(params: dict) -> dict:
    """Validate and normalise the generation parameters (keys of DEFAULTS); UserError on bad values."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise UserError(f"unknown synthetic dataset parameter(s) {unknown}: use {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    out = {k: int(p[k]) for k in ("seed", "videos_per_class", "num_frames", "size", "fps")}
    out["val_fraction"] = float(p["val_fraction"])
    if out["videos_per_class"] < 1:
        raise UserError(f"videos_per_class {out['videos_per_class']} must be at least 1")
    if out["num_frames"] < 2:
        raise UserError(f"num_frames {out['num_frames']} must be at least 2 (classes are defined by motion)")
    if out["size"] < 16 or out["size"] % 2:
        raise UserError(f"size {out['size']} must be an even number of pixels >= 16 (H.264 yuv420p needs even sizes)")
    if out["fps"] < 1:
        raise UserError(f"fps {out['fps']} must be at least 1")
    if not 0.0 <= out["val_fraction"] < 1.0:
        raise UserError(f"val_fraction {out['val_fraction']} must be in [0, 1)")
    return out


def _num_val(videos_per_class: int, val_fraction: float) -> int:
    """Validation videos per class: the last ones; at least one if val_fraction > 0, one train kept."""
    if val_fraction <= 0 or videos_per_class < 2:
        return 0
    return min(videos_per_class - 1, max(1, round(videos_per_class * val_fraction)))


def _prepare_dir(out: Path) -> None:
    """Create ``out``; clear a previous synthetic dataset there, refuse any other non-empty folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory: choose another output folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads((out / "meta.json").read_text()).get("generator") == __name__
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise UserError(f"{out} is not empty and holds no synthetic dataset: choose a new or empty folder")
        shutil.rmtree(out / "videos", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_meta(out: Path, meta: dict) -> None:
    """Write ``out/meta.json`` atomically (a temporary file renamed over it)."""
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / "meta.json")


def _write_text(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def generate_synthetic(
    out_dir: str | os.PathLike,
    *,
    seed: int = DEFAULTS["seed"],
    videos_per_class: int = DEFAULTS["videos_per_class"],
    num_frames: int = DEFAULTS["num_frames"],
    size: int = DEFAULTS["size"],
    fps: int = DEFAULTS["fps"],
    val_fraction: float = DEFAULTS["val_fraction"],
    workers: int | None = None,
    progress: bool = True,
) -> SyntheticInfo:
    """Write the synthetic benchmark to ``out_dir`` (see the module docstring for the layout).

    The same parameters give the same decoded frames whatever ``workers`` is (``None``: one per
    available core). Per class, the last ``round(videos_per_class * val_fraction)`` videos (at
    least one when ``val_fraction > 0``, and never all) form the validation split.
    ``meta.json`` says ``"complete": true`` only once every file is written. A folder holding an
    earlier synthetic dataset (finished or not) is overwritten; any other non-empty one is refused.
    """
    params = _check_params(
        dict(seed=seed, videos_per_class=videos_per_class, num_frames=num_frames, size=size, fps=fps,
             val_fraction=val_fraction)
    )  # fmt: skip
    out = Path(out_dir)
    _prepare_dir(out)
    # Marks the folder as ours (an interrupted run can be redone in place) but not complete.
    _write_meta(out, {"generator": __name__, "version": GENERATOR_VERSION, "complete": False, "params": params})
    start = time.perf_counter()
    per_class = params["videos_per_class"]
    num_val = _num_val(per_class, params["val_fraction"])
    common = (params["seed"], params["num_frames"], params["size"], params["fps"])
    jobs, train, val = [], [], []
    for label, name in enumerate(CLASS_NAMES):
        (out / "videos" / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            rel = f"videos/{name}/{index:05d}.mp4"
            jobs.append((str(out / rel), label, index, *common))
            (val if index >= per_class - num_val else train).append(f"{rel} {label}")
    _run_jobs(jobs, _default_workers() if workers is None else int(workers), progress)
    _write_text(out / "classes.txt", list(CLASS_NAMES))
    _write_text(out / "train.txt", train)
    _write_text(out / "val.txt", val)
    seconds = time.perf_counter() - start
    meta = {
        "generator": __name__,
        "version": GENERATOR_VERSION,
        "complete": True,
        "params": params,
        "classes": list(CLASS_NAMES),
        "class_kinds": {c.name: c.kind for c in CLASSES},
        "flip_label_map": {str(k): v for k, v in FLIP_LABEL_MAP.items()},
        "num_classes": len(CLASS_NAMES),
        "num_videos": len(jobs),
        "num_train": len(train),
        "num_val": len(val),
        "codec": f"libx264 crf {_CRF} preset veryfast asm=0, yuv420p BT.601",
        "lists": {"train": "train.txt", "val": "val.txt", "classes": "classes.txt"},
        "seconds": round(seconds, 2),
    }
    _write_meta(out, meta)
    return SyntheticInfo(out, CLASS_NAMES, len(train), len(val), params, seconds)


def _complete(root: Path, params: dict) -> bool:
    """Whether ``root`` holds a finished dataset made with ``params`` by this generator version."""
    try:
        meta = json.loads((root / "meta.json").read_text())
        lines = [line for name in ("train.txt", "val.txt") for line in (root / name).read_text().splitlines()]
    except (OSError, ValueError):
        return False
    if not (
        isinstance(meta, dict)
        and meta.get("complete") is True
        and meta.get("version") == GENERATOR_VERSION
        and meta.get("params") == params
        and len(lines) == meta.get("num_videos")
    ):
        return False
    return all((root / line.rsplit(" ", 1)[0]).is_file() for line in lines)


def cache_key(**params) -> str:
    """The cache folder name for these generation parameters (defaults filled in)."""
    params = _check_params(params)
    blob = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True)
    return "synthetic-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_synthetic(
    cache_dir: str | os.PathLike, *, workers: int | None = None, progress: bool = True, **params
) -> Path:
    """A complete synthetic dataset for ``params`` under ``cache_dir``, generated only if needed.

    The folder is ``cache_dir/synthetic-<hash of params>``; a new one is written to a temporary
    folder and renamed when finished, so an interrupted run never leaves a half dataset that
    looks complete. ``params`` are those of :func:`generate_synthetic` (defaults: ``DEFAULTS``).
    """
    params = _check_params(params)
    cache = Path(cache_dir)
    final = cache / cache_key(**params)
    if _complete(final, params):
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=cache))
    try:
        generate_synthetic(tmp, workers=workers, progress=progress, **params)
        if final.exists():  # a stale, incomplete leftover (or a finished one from a concurrent run)
            if _complete(final, params):
                shutil.rmtree(tmp)
                return final
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# ----------------------------------------------------------------------------------------------
# Command line: ``xvit make-synthetic OUT_DIR [...]``.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``xvit make-synthetic``."""
    d = DEFAULTS
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="folder to write (new or empty)")
    parser.add_argument("--seed", type=int, default=d["seed"], help="random seed (default %(default)s)")
    parser.add_argument("--videos-per-class", type=int, default=d["videos_per_class"], help="(default %(default)s)")
    parser.add_argument("--num-frames", type=int, default=d["num_frames"], help="per video (default %(default)s)")
    parser.add_argument("--size", type=int, default=d["size"], help="square frame side, pixels (default %(default)s)")
    parser.add_argument("--fps", type=int, default=d["fps"], help="frame rate written in the mp4 (default %(default)s)")
    parser.add_argument(
        "--val-fraction", type=float, default=d["val_fraction"], help="held-out share per class (default %(default)s)"
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per available core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.epilog = "classes:\n" + "\n".join(f"  {i:2d} {c.name:26s} {c.kind}" for i, c in enumerate(CLASSES))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    """Generate the dataset and print a summary."""
    info = generate_synthetic(
        args.out_dir, seed=args.seed, videos_per_class=args.videos_per_class, num_frames=args.num_frames,
        size=args.size, fps=args.fps, val_fraction=args.val_fraction, workers=args.workers,
        progress=not args.no_progress,
    )  # fmt: skip
    p = info.params
    kinds = {k: sum(c.kind == k for c in CLASSES) for k in ("temporal", "interaction", "appearance")}
    print(
        f"wrote {info.num_videos} videos ({info.num_train} train / {info.num_val} val) of {len(info.classes)} "
        f"classes ({', '.join(f'{n} {k}' for k, n in kinds.items())}), {p['num_frames']} frames of "
        f"{p['size']}x{p['size']} at {p['fps']} fps, seed {p['seed']}, to {info.root} in {info.seconds:.1f} s"
    )
    print(f"lists: {info.train_list} {info.val_list}; classes: {info.classes_file}")
    print(f"horizontal flip swaps labels {FLIP_LABEL_MAP} (left/right, clockwise/counter-clockwise)")
    return 0
