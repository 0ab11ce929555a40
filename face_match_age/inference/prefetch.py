"""Run a generator's steps one or two ahead in a background thread, so its work overlaps the consumer's.

FaceAnalyzer.analyze_many uses it to read and detect the next chunk of photos while the networks process
the current one. Items arrive in the generator's order; an exception raised by the generator is raised in
the consumer at the item where it happened; closing the result (contextlib.closing, Ctrl-C, garbage
collection) stops the thread and waits for it, so no thread outlives the generator.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator
from typing import TypeVar

Item = TypeVar("Item")

_DONE = object()  # the generator is exhausted


class _Raised:
    """An exception from the background generator, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(make_items: Callable[[], Generator[Item, None, None]], depth: int = 1) -> Generator[Item, None, None]:
    """The items of `make_items()`, computed in a background thread at most `depth` items ahead of the consumer
    (memory holds at most depth + 2 items: queued, being consumed, being made).

    make_items is called in the background thread, so thread-local state such as torch.inference_mode is the
    generator's own to set."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    # daemon: were a consumer never closed and never collected, the interpreter still exits
    worker = threading.Thread(target=_produce, args=(make_items, ready, stop), name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        _drain(ready)  # a worker blocked on a full queue puts its last item, sees `stop` and returns
        worker.join()  # at most the step under way: one chunk's work


def _produce(make_items: Callable[[], Generator], ready: queue.Queue, stop: threading.Event) -> None:
    # After the consumer sets `stop` and drains the queue, this puts at most one more item, so it never blocks.
    try:
        # closing: the generator's own finally blocks run here, in the thread that ran it
        with contextlib.closing(make_items()) as items:
            for item in items:
                ready.put(item)
                if stop.is_set():
                    return
        ready.put(_DONE)
    except BaseException as error:  # noqa: BLE001 - every failure belongs to the consumer, which re-raises it
        ready.put(_Raised(error))


def _drain(ready: queue.Queue) -> None:
    while True:
        try:
            ready.get_nowait()
        except queue.Empty:
            return
