"""The built-in synthetic temporal benchmark: a small Something-Something-like dataset of mp4s.

Most classes come in pairs that are time reversals of each other (the second class of a pair is
drawn by the same generator as the first and its frames are written in reverse order), so every
single frame, and every unordered set of frames, is equally likely under both classes: only the
order of the frames tells them apart, the situation that SSv2 tests and that space-time mixing
(X-ViT paper §3) is built for. Two appearance-only classes are the control a frame model can solve.

=========================  ===========  ==========================================================
class                      kind         what distinguishes it
=========================  ===========  ==========================================================
moving_left                temporal     an object slides right to left (reverse of moving_right)
moving_right               temporal     an object slides left to right
moving_up                  temporal     an object slides bottom to top (reverse of moving_down)
moving_down                temporal     an object slides top to bottom
approaching                temporal     an object grows (comes closer) around a fixed centre
receding                   temporal     an object shrinks (reverse of approaching)
rotating_clockwise         temporal     a clock hand turns clockwise about its hub
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
(square, circle, triangle, diamond, bar; a clock hand for the rotations), texture (plain or stripes), colours
(object and background on opposite sides of mid-grey, so that contrast is never lost), background
(plain or gradient), start position, size, speed and the onset/end of the motion, and
per-pixel Gaussian noise. Frames are drawn with numpy (vectorised masks, no anti-aliasing) and
written as H.264 (libx264, yuv420p) through PyAV, ``videos/<class>/<index:05d>.mp4``, with
``train.txt`` / ``val.txt`` (``videos/<class>/<index>.mp4 <label>``, relative to the dataset root),
``classes.txt`` (line index = label) and ``meta.json`` (parameters and counts, written last: a
dataset is complete when its ``meta.json`` is).

**The still-image task** (``task: images``, :mod:`~xvit.data.synthetic.stills`): 14 classes of
single pictures (7 object shapes x one or two of them), no motion, written as PNG
(``images/<class>/<index:05d>.png``, same lists and meta): the image-pretraining stand-in for
fine-tuning video models from an image ViT, as the paper does from ImageNet-21k.

Modules: ``scenes`` (the classes and :func:`render_video`), ``stills`` (the pictures and
:func:`render_image`), ``writer`` (mp4/PNG writing, :func:`generate_synthetic`, the cache of
:func:`ensure_synthetic`); ``xvit make-synthetic`` is ``xvit.cli.make_synthetic``.
"""

from xvit.data.synthetic.scenes import (
    CLASS_NAMES,
    CLASSES,
    FLIP_LABEL_MAP,
    REVERSED_PAIRS,
    SyntheticClass,
    class_descriptions,
    render_video,
)
from xvit.data.synthetic.stills import STILL_CLASS_NAMES, render_image
from xvit.data.synthetic.writer import (
    DEFAULTS,
    GENERATOR_VERSION,
    IMAGE_DEFAULTS,
    TASKS,
    SyntheticInfo,
    cache_key,
    ensure_synthetic,
    generate_synthetic,
    task_of,
)

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "DEFAULTS",
    "FLIP_LABEL_MAP",
    "GENERATOR_VERSION",
    "IMAGE_DEFAULTS",
    "REVERSED_PAIRS",
    "STILL_CLASS_NAMES",
    "TASKS",
    "SyntheticClass",
    "SyntheticInfo",
    "cache_key",
    "class_descriptions",
    "ensure_synthetic",
    "generate_synthetic",
    "render_image",
    "render_video",
    "task_of",
]
