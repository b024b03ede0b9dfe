"""xvit: X-ViT (space-time mixing attention, NeurIPS 2021) and its baselines for video recognition."""

from xvit.models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]
