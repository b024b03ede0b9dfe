"""Progress bars for every xvit loop: ``tqdm`` without its monitor thread.

tqdm's monitor thread wakes every 10 s holding a lock; a DataLoader or process pool that forks
while it holds it can leave a worker blocked. xvit's bars do not need it, so it is switched off
when xvit first shows a bar (not at ``import xvit``).
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` with ``dynamic_ncols`` on and the monitor thread off."""
    tqdm.monitor_interval = 0
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
