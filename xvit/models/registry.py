"""Model registry in timm's style: entry points registered by name, ``build_model``, ``list_models``.

The registry builds models and never loads weights (``xvit.models.factory.create_model`` does both).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

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


def check_model_name(name: str, key: str = "model") -> None:
    """``UserError`` naming ``key`` and the closest registered names when ``name`` is unknown."""
    if name not in _ENTRY_POINTS:
        close = difflib.get_close_matches(name, list(_ENTRY_POINTS), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "list them with `xvit models`"
        where = "" if key == "model" else f" ({key})"
        raise UserError(f"unknown model {name!r}{where}: {hint}")


def build_model(
    name: str, num_frames: int | None = None, num_classes: int = 400, img_size: int | None = None, **options
) -> nn.Module:
    """A freshly initialised registered model; ``model.model_config`` records how to build it again.

    ``num_frames`` defaults to the model's own (8 for the ViTs, a CNN's published clip length);
    ``img_size`` to the size in the model's name (224, or 32/64 for the small CPU sizes);
    ``options`` are the family's keyword arguments (e.g. ``shift_div``, ``head``, ``depth``).
    """
    check_model_name(name)
    kwargs = dict(num_classes=num_classes, **options)
    if num_frames is not None:
        kwargs["num_frames"] = num_frames
    if img_size is not None:
        kwargs["img_size"] = img_size
    model = _ENTRY_POINTS[name](**kwargs)
    model.model_config = {  # stored in every checkpoint (xvit.engine.checkpoint)
        "name": name,
        "num_frames": model.num_frames,
        "num_classes": num_classes,
        "img_size": model.img_size,
        "options": dict(options),
    }
    return model
