"""xvit: X-ViT (space-time mixing attention, NeurIPS 2021) and its baselines for video recognition."""

import tqdm as _tqdm

from xvit.models import create_model, list_models

# tqdm's monitor thread wakes every 10 s holding a lock; a DataLoader or process pool that forks
# while it does can leave a worker blocked. Progress bars do not need it.
_tqdm.tqdm.monitor_interval = 0

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]
