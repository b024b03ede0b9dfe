"""The model zoo: X-ViT (paper §3), its baselines on one backbone, and the convolutional systems
of supplement Table 1, registered by name.

``layers`` (the space-time mixing attention, blocks, heads), ``base`` (what every transformer
shares), one module per family (``xvit``: X-ViT, frame ViT, TSM-ViT; ``timesformer``; ``joint``;
``vivit``: ViViT's factorised encoder), ``cnn/`` (the CNNs' room: ``base``, what they share:
interface, init, ImageNet inflation; ``resnet3d``, 3D ResNet parts: bottleneck, stage, stem,
non-local block; one module per CNN family: ``slowfast``, ``i3d_nl``, ``tea``, ``blvnet``),
``registry`` (names -> builders, never loads weights), ``weights`` (loading timm / reference /
xvit checkpoints), ``factory`` (``create_model``: build, then load), ``flops`` (parameters and
multiply-adds), ``sizes`` (sizes and names, torch-free). ``create_model``, ``build_model`` and
``list_models`` are imported on first use, so ``xvit.models.sizes`` alone never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "create_model": "xvit.models.factory",
    "build_model": "xvit.models.factory",
    "list_models": "xvit.models.factory",
    "register_model": "xvit.models.registry",
}
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xvit.models' has no attribute {name!r}")
