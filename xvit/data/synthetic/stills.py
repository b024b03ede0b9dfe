"""The still-image task of the synthetic benchmark: the stand-in for ImageNet on this machine.

X-ViT is meant to fine-tune an image-pretrained ViT on video (paper §4: ImageNet-21k ViT-B/16),
and its case for mixing keys and values rather than shifting tokens is that a shift disturbs
pretrained image features (§3.2). To run that regime on a CPU, an image ViT has to be pretrained
on *something*: this task is single pictures with no motion and no time, whose 14 classes are an
object's **shape** (7: four of the shapes the temporal benchmark draws at random, its clock hand,
and the cross and ring of its two appearance classes; not its diamond, which at a random rotation
is its square) crossed with **how many** there are (one, or two apart). Everything else is a
nuisance drawn from ``numpy.random.default_rng((seed, 7919, label, index))``: colours (objects
and background on opposite sides of mid-grey), texture (plain or striped), background (plain or a
gradient), positions, sizes (radius 18-34% of the side for one object, 12-20% for two), rotation,
pixel noise. (Texture as the second factor was tried first: at 32 px with 8 px patches the frame
ViT never told plain from striped, 52% after 20 epochs, while it told the shapes apart at 85%.)

The drawing primitives are the temporal benchmark's (:mod:`~xvit.data.synthetic.scenes`), so a
model pretrained here has seen the objects, never their motion. Written as PNG files: both video
decoders read a picture as a clip of one frame, so the whole pipeline (lists, frame cache,
transforms, ``xvit train`` with ``data.num_frames=1``) is the video one.
"""

from __future__ import annotations

import math

import numpy as np

from xvit.data.synthetic.scenes import _background, _draw, _look

__all__ = ["STILL_CLASS_NAMES", "STILL_COUNTS", "STILL_SHAPES", "render_image"]

STILL_SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "bar", "cross", "ring", "hand")
STILL_COUNTS: tuple[int, ...] = (1, 2)
# label = shape index * 2 + (count - 1): "square_x1", "square_x2", ...
STILL_CLASS_NAMES: tuple[str, ...] = tuple(f"{s}_x{n}" for s in STILL_SHAPES for n in STILL_COUNTS)
_STREAM = 7919  # separates this task's random streams from the videos' (seed, label, index)


def _places(rng: np.random.Generator, count: int, size: int) -> list[tuple[float, float, float]]:
    """(cx, cy, radius) of ``count`` objects inside the picture that do not overlap (radius
    18-34% of the side for one object, 12-20% each for two)."""
    lo, hi = (0.18, 0.34) if count == 1 else (0.12, 0.20)
    while True:
        r = rng.uniform(lo, hi, count) * size
        places = [(float(rng.uniform(ri, size - ri)), float(rng.uniform(ri, size - ri)), float(ri)) for ri in r]
        if count == 1 or math.dist(places[0][:2], places[1][:2]) > 1.15 * (r[0] + r[1]):
            return places


def render_image(label: int, index: int, *, seed: int = 0, size: int = 32) -> np.ndarray:
    """Picture ``index`` of class ``label``: uint8 ``(S, S, 3)``, RGB; a pure function of its arguments."""
    if not 0 <= label < len(STILL_CLASS_NAMES):
        raise ValueError(f"label {label} is not one of the {len(STILL_CLASS_NAMES)} still-image classes")
    rng = np.random.default_rng((seed, _STREAM, label, index))
    shape, count = STILL_SHAPES[label // 2], STILL_COUNTS[label % 2]
    light = bool(rng.random() < 0.5)
    frame = _background(rng, size, not light)[None].astype(np.float32)  # (1, S, S, 3)
    one = np.ones(1, np.float32)
    for cx, cy, r in _places(rng, count, size):  # each object its own look (colours, texture) and rotation
        look = _look(rng, light, shapes=(shape,))
        _draw(frame, look, cx * one, cy * one, r * one, rng.uniform(0, 2 * math.pi) * one)
    frame += rng.normal(0.0, rng.uniform(0.0, 4.0), frame.shape).astype(np.float32)
    return np.clip(np.rint(frame[0]), 0, 255).astype(np.uint8)
