"""The model zoo: X-ViT and its baselines on one backbone, registered by name (SPEC §1-4)."""

from xvit.models import joint, timesformer, xvit  # noqa: F401  (register the families)
from xvit.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
