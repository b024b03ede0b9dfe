"""``create_model``: build a registered model and, optionally, initialise it from a weights file."""

from __future__ import annotations

from pathlib import Path

from torch import nn

import xvit.models.cnn.blvnet  # noqa: F401  (each family module registers its models)
import xvit.models.cnn.i3d_nl  # noqa: F401
import xvit.models.cnn.slowfast  # noqa: F401
import xvit.models.cnn.tea  # noqa: F401
import xvit.models.joint  # noqa: F401
import xvit.models.timesformer  # noqa: F401
import xvit.models.vivit  # noqa: F401
import xvit.models.xvit  # noqa: F401
from xvit.models.registry import build_model, list_models
from xvit.models.weights import load_pretrained

__all__ = ["build_model", "create_model", "list_models"]


def create_model(
    name: str,
    num_frames: int | None = None,
    num_classes: int = 400,
    img_size: int | None = None,
    pretrained: str | Path | None = None,
    **options,
) -> nn.Module:
    """Build a registered model (``xvit.list_models()``), optionally from pretrained weights.

    ``num_frames`` defaults to the model's (8 for the ViTs; a CNN's published clip, e.g. 32 for
    SlowFast 8x8, whose input is its Fast pathway's frames); ``img_size`` to the size in the
    model's name (224 for the CNNs). ``pretrained`` is a path to a timm-format image ViT
    checkpoint, a checkpoint of the public X-ViT reference code, or one written by xvit; for the
    CNNs, a 2D ImageNet state dict (inflated) or an xvit checkpoint. What was loaded and what was
    not is reported (``xvit.models.weights.load_pretrained``, ``VideoCNN.load_image_weights``).
    ``options`` are the family's keyword arguments (e.g. ``shift_div``, ``head``, ``depth``).
    """
    model = build_model(name, num_frames=num_frames, num_classes=num_classes, img_size=img_size, **options)
    if pretrained:
        if hasattr(model, "load_image_weights"):  # the CNNs: ImageNet 2D weights, inflated
            model.load_image_weights(pretrained)
        else:
            load_pretrained(model, pretrained)
    return model
