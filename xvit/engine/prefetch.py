"""Background decoding: run an iterator (decoding, transforms) in a thread, a few items ahead.

``prefetch(items, depth)`` yields what ``items`` yields, in order, while a thread keeps computing
up to ``depth`` items ahead, so the model's forward and the decoding of the next input overlap
(PyAV's decoder and torch's resampling release the GIL). An exception in the thread is raised in
the consumer at the item where it happened; leaving the loop early stops the thread.
``xvit predict`` decodes the next video this way, and the timeline the next windows.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """The items of ``items``, computed by a background thread at most ``depth`` ahead."""
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the consumer, raised there
            put(_Failed(err))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's cleanup (open files) runs in this thread, now

    thread = threading.Thread(target=produce, name="xvit-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
