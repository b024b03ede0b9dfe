"""The model zoo: X-ViT (paper §3) and its baselines on one backbone, registered by name.

``layers`` (the space-time mixing attention, blocks, heads), ``base`` (what every model shares),
one module per family (``xvit``: X-ViT, frame ViT, TSM-ViT; ``timesformer``; ``joint``),
``registry`` (names -> builders), ``weights`` (loading timm / reference / xvit checkpoints),
``factory`` (``create_model``), ``flops`` (parameters and multiply-adds), ``sizes`` (torch-free).
"""

from xvit.models.factory import create_model
from xvit.models.registry import build_model, list_models, register_model

__all__ = ["build_model", "create_model", "list_models", "register_model"]
