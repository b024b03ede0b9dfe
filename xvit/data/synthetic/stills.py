"""The still-image task of the synthetic benchmark: the stand-in for ImageNet on this machine.

X-ViT is meant to fine-tune an image-pretrained ViT on video (paper §4: ImageNet-21k ViT-B/16),
and its case for mixing keys and values rather than shifting tokens is that a shift disturbs
pretrained image features (§3.2). To run that regime on a CPU, an image ViT has to be pretrained
on *something*: this task is single pictures with no motion and no time, whose 14 classes are an
object's **shape** (7: four of the shapes the temporal benchmark draws at random, its clock hand,
and the cross and ring of its two appearance classes; not its diamond, which at a random rotation
is its square) crossed with its **texture** (plain or striped).
Everything else is a nuisance drawn from ``numpy.random.default_rng((seed, 7919, label, index))``:
colours (object and background on opposite sides of mid-grey), background (plain or a gradient),
position, size (radius 18-34% of the side), rotation, stripe frequency and angle, pixel noise.

The drawing primitives are the temporal benchmark's (:mod:`~xvit.data.synthetic.scenes`), so a
model pretrained here has seen the objects, never their motion. Written as PNG files: both video
decoders read a picture as a clip of one frame, so the whole pipeline (lists, frame cache,
transforms, ``xvit train`` with ``data.num_frames=1``) is the video one.
"""

from __future__ import annotations

import math

import numpy as np

from xvit.data.synthetic.scenes import _background, _colour, _draw, _Look

__all__ = ["STILL_CLASS_NAMES", "STILL_SHAPES", "STILL_TEXTURES", "render_image"]

STILL_SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "bar", "cross", "ring", "hand")
STILL_TEXTURES: tuple[str, ...] = ("plain", "stripes")
# label = shape index * 2 + texture index
STILL_CLASS_NAMES: tuple[str, ...] = tuple(f"{s}_{t}" for s in STILL_SHAPES for t in STILL_TEXTURES)
_STREAM = 7919  # separates this task's random streams from the videos' (seed, label, index)


def _still_look(rng: np.random.Generator, shape: str, texture: str, light: bool) -> _Look:
    """The object of one picture; a striped object's two colours differ clearly (visible stripes:
    both are drawn again until they are 180 levels apart over the three channels)."""
    first, second = _colour(rng, light, 2)
    while texture == "stripes" and np.abs(second - first).sum() < 180:
        first, second = _colour(rng, light, 2)
    freq, angle = float(rng.uniform(1.2, 2.5)), float(rng.uniform(0, math.pi))
    return _Look(shape, np.stack([first, second]), texture, freq, angle)


def render_image(label: int, index: int, *, seed: int = 0, size: int = 32) -> np.ndarray:
    """Picture ``index`` of class ``label``: uint8 ``(S, S, 3)``, RGB; a pure function of its arguments."""
    if not 0 <= label < len(STILL_CLASS_NAMES):
        raise ValueError(f"label {label} is not one of the {len(STILL_CLASS_NAMES)} still-image classes")
    rng = np.random.default_rng((seed, _STREAM, label, index))
    shape, texture = STILL_SHAPES[label // 2], STILL_TEXTURES[label % 2]
    light = bool(rng.random() < 0.5)
    frame = _background(rng, size, not light)[None].astype(np.float32)  # (1, S, S, 3)
    look = _still_look(rng, shape, texture, light)
    r = rng.uniform(0.18, 0.34) * size
    cx, cy = rng.uniform(r, size - r, 2)
    one = np.ones(1, np.float32)
    _draw(frame, look, cx * one, cy * one, r * one, rng.uniform(0, 2 * math.pi) * one)
    frame += rng.normal(0.0, rng.uniform(0.0, 4.0), frame.shape).astype(np.float32)
    return np.clip(np.rint(frame[0]), 0, 255).astype(np.uint8)
