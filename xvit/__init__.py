"""xvit: X-ViT (space-time mixing attention, Bulat et al., NeurIPS 2021) and its baselines for
video recognition.

Public API: ``create_model(name, **overrides)``, ``list_models(pattern)``, ``load_model(checkpoint)``
(a model in eval mode and its ``ClipSpec``) and ``ClipSpec``. They are imported on first use, so
``import xvit`` (and the ``xvit`` command line) does not pay for torch until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module defining it
_API = {
    "create_model": "xvit.models.factory",
    "list_models": "xvit.models.factory",
    "load_model": "xvit.engine.checkpoint",
    "ClipSpec": "xvit.data.clip",
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xvit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
