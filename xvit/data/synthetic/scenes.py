"""The classes of the synthetic benchmark and the drawing of their videos (numpy only).

:func:`render_video` is a pure function of ``(label, index, seed, num_frames, size)``: every
nuisance (shape, texture, colours, background, position, size, speed, onset/end of the motion,
pixel noise) is drawn from ``numpy.random.default_rng((seed, label, index))``. A reversed class
(``_RENDERERS``) is its partner's video with the frames in reverse order, so that only the
order of the frames tells the two apart (see :mod:`xvit.data.synthetic`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "FLIP_LABEL_MAP",
    "REVERSED_PAIRS",
    "SyntheticClass",
    "class_descriptions",
    "render_video",
]


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
    SyntheticClass("rotating_clockwise", "temporal", "a clock hand turns clockwise about its pivot"),
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
_TEXTURES = ("plain", "stripes")


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
    if shape == "hand":  # a clock hand: a round hub at the pivot and a bar outwards (no symmetry)
        return ((u >= 0.0) & (u <= 1.0) & (av_ <= 0.17)) | (u * u + v * v <= 0.33**2)
    if shape == "ring":
        rho2 = u * u + v * v
        return (rho2 >= 0.5**2) & (rho2 <= 0.92**2)
    raise ValueError(f"unknown shape {shape!r}")


@dataclass
class _Look:
    """How one object looks: shape, two colours and a texture mixing them (object coordinates)."""

    shape: str
    colours: np.ndarray  # (2, 3) float32
    texture: str  # plain | stripes
    freq: float  # stripes per unit of object radius
    angle: float  # stripe orientation, radians

    def mix(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Texture value in [0, 1] at object coordinates (any shape)."""
        if self.texture == "stripes":
            return np.floor((u * math.cos(self.angle) + v * math.sin(self.angle)) * self.freq) % 2
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
    return _Look(shape, colours, texture, freq, angle)


def _background(rng: np.random.Generator, size: int, light: bool) -> np.ndarray:
    """(S, S, 3) background: plain, or a linear gradient between two colours."""
    if rng.integers(2) == 0:
        return np.broadcast_to(_colour(rng, light)[0], (size, size, 3)).copy()
    c0, c1 = _colour(rng, light, 2)
    phi = rng.uniform(0, 2 * math.pi)
    coords = np.arange(size, dtype=np.float32) / max(size - 1, 1)
    ramp = coords[None, :] * math.cos(phi) + coords[:, None] * math.sin(phi)  # (S, S)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    return c0 + (c1 - c0) * ramp[..., None]


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
    """Slide right (axis 0) or down (axis 1) over 75-100 % of the free range, at constant speed."""

    def render(rng: np.random.Generator, frames: np.ndarray, light: bool) -> None:
        num_frames, size = frames.shape[:2]
        look = _look(rng, light)
        r = rng.uniform(0.15, 0.21) * size
        span = rng.uniform(0.75, 1.0) * (size - 2 * r)
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
    """A clock hand turning clockwise about its hub (near the frame centre) by 8-12 degrees per frame
    on average (it has no rotational symmetry, so the direction is never ambiguous; its tip sweeps
    across patches)."""
    num_frames, size = frames.shape[:2]
    look = _look(rng, light, shapes=("hand",))
    r = rng.uniform(0.36, 0.44) * size
    cx, cy = size / 2 + rng.uniform(-0.05, 0.05, 2) * size  # the hub near the centre: the tip's motion
    # at each place in the frame then has one direction per class
    sweep = math.radians(rng.uniform(8.0, 12.0)) * (num_frames - 1)
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
        rb, rs = rng.uniform(0.20, 0.26) * size, rng.uniform(0.13, 0.17) * size
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


# The time-reversed pairs: only the order of the frames tells their two classes apart.
REVERSED_PAIRS: tuple[tuple[str, str], ...] = (
    ("moving_left", "moving_right"),
    ("moving_up", "moving_down"),
    ("approaching", "receding"),
    ("rotating_clockwise", "rotating_counterclockwise"),
    ("appearing", "disappearing"),
)


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
    sigma = rng.uniform(0.0, 4.0)
    frames += rng.normal(0.0, sigma, frames.shape).astype(np.float32)
    out = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[::-1]) if reverse else out
