"""Background decoding: run an iterator (decoding, transforms) in a thread, a few items ahead.

``Prefetch(items, depth)`` starts a thread at once that computes up to ``depth`` items of
``items`` ahead, and yields them in order, so the model's forward and the decoding of the next
input overlap (PyAV's decoder and torch's resampling release the GIL). Because it starts when it
is made, not when it is first read, ``xvit predict`` makes it before loading the model: the first
video decodes while the model code is imported and the checkpoint loaded. ``wait_seconds`` is
how long the consumer has waited for items. An exception in the thread is raised in the consumer
at the item where it happened; ``close()`` (or leaving its ``with`` block) stops the thread.
``prefetch(items, depth)`` is the same as a generator that starts the thread on the first read;
the timeline decodes its next windows this way.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch(Generic[T]):
    """The items of ``items``, computed by a background thread (started now) at most ``depth`` ahead."""

    def __init__(self, items: Iterable[T], depth: int = 2) -> None:
        self.wait_seconds = 0.0  # time __next__ spent waiting for the thread
        self._buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(items,), name="xvit-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterable[T]) -> None:
        source = iter(items)
        try:
            for item in source:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as err:  # handed to the consumer, raised there
            self._put(_Failed(err))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's cleanup (open files) runs in this thread, now

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        tick = time.perf_counter()
        item = self._buffer.get()
        self.wait_seconds += time.perf_counter() - tick
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the item it is computing) and wait for it."""
        self._finished = True
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``Prefetch(items, depth)`` as a generator: the thread starts on the first read, stops when it is closed."""
    with Prefetch(items, depth) as stream:
        yield from stream
