"""The validated stream: readings and events, in-process, after they are durable.

The ingest committer publishes each group commit's readings and events here (from its own
thread); the alert engine (and anything else in the process) subscribes and iterates
asynchronously. A subscriber's queue is bounded; when it is full, `publish` blocks the
committer — backpressure instead of dropping, since the readings are already durable and
an alert engine that silently skipped some would be wrong.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from citywatch.model import Event, Reading


@dataclass(frozen=True, slots=True)
class Batch:
    readings: Sequence[Reading]
    events: Sequence[Event]


class Subscription:
    """One subscriber's bounded queue of batches; iterate with `async for`."""

    def __init__(self, stream: "ValidatedStream", loop: asyncio.AbstractEventLoop, max_batches: int):
        self._stream = stream
        self._loop = loop
        self._max = max_batches
        self._items: deque[Batch] = deque()
        self._space = threading.Condition()
        self._ready = asyncio.Event()
        self._closed = False

    def _put(self, batch: Batch, timeout: float | None) -> bool:
        with self._space:
            if not self._space.wait_for(lambda: len(self._items) < self._max or self._closed, timeout):
                return False
            if self._closed:
                return True
            self._items.append(batch)
        self._loop.call_soon_threadsafe(self._ready.set)
        return True

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Batch]:
        while not self._closed:
            await self._ready.wait()
            with self._space:
                items = list(self._items)
                self._items.clear()
                self._ready.clear()
                self._space.notify_all()
            for batch in items:
                yield batch

    def pending(self) -> int:
        return len(self._items)

    def close(self) -> None:
        with self._space:
            self._closed = True
            self._space.notify_all()
        self._stream._remove(self)
        self._loop.call_soon_threadsafe(self._ready.set)


class ValidatedStream:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, *, max_batches: int = 256) -> Subscription:
        """Call from the event loop that will iterate the subscription."""
        sub = Subscription(self, asyncio.get_running_loop(), max_batches)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subs)

    def publish(self, readings: Sequence[Reading], events: Sequence[Event] = ()) -> None:
        """Thread-safe; blocks while a subscriber's queue is full. Never call it from the
        subscriber's own event loop thread (it could wait for itself)."""
        if not readings and not events:
            return
        batch = Batch(readings, events)
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub._put(batch, None)
