"""Model registry in timm's style: entry points registered by name, ``create_model``, ``list_models``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path

from torch import nn

from xvit.errors import UserError

_ENTRY_POINTS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its ``__name__``."""
    if fn.__name__ in _ENTRY_POINTS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _ENTRY_POINTS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _ENTRY_POINTS if fnmatch.fnmatch(n, pattern))


def create_model(
    name: str,
    num_frames: int = 8,
    num_classes: int = 400,
    img_size: int | None = None,
    pretrained: str | Path | None = None,
    **options,
) -> nn.Module:
    """Build a registered model.

    ``img_size`` defaults to the size in the model's name (224, or 32/64 for the small CPU sizes).
    ``pretrained`` is a path to a timm-format image ViT checkpoint, a checkpoint of the public
    X-ViT reference code, or one written by xvit; what was loaded and what was not is logged.
    ``options`` are the family's keyword arguments (e.g. ``shift_div``, ``head``, ``depth``).
    """
    if name not in _ENTRY_POINTS:
        import difflib

        close = difflib.get_close_matches(name, list(_ENTRY_POINTS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `xvit models`"
        raise UserError(f"unknown model {name!r}{hint}")
    kwargs = dict(num_frames=num_frames, num_classes=num_classes, **options)
    if img_size is not None:
        kwargs["img_size"] = img_size
    model = _ENTRY_POINTS[name](**kwargs)
    # What it takes to build this model again (checkpoints store it; see xvit.checkpoint).
    model.model_config = {
        "name": name,
        "num_frames": num_frames,
        "num_classes": num_classes,
        "img_size": model.img_size,
        "options": dict(options),
    }
    if pretrained:
        from xvit.weights import load_pretrained

        load_pretrained(model, pretrained)
    return model
