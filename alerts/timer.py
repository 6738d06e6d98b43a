"""The engine's running loops: the timer (tick every `tick_interval_s`, window snapshots
every `snapshot_interval_s` on a worker thread, pruning hourly), the consumer of the
validated stream, and the delivery stages (one `OutboxDispatcher` per notifier), which
`wake` rouses when a flush committed outbox rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable, Sequence
from typing import Any

from alerts.notify import OutboxDispatcher
from alerts.store import AlertStore

log = logging.getLogger("citywatch.alerts")


class Timer:
    """`tick`, `snapshot`, `prune` and `process` are the engine's; `wall_ms` its clock."""

    def __init__(self, *, store: AlertStore, dispatchers: Sequence[OutboxDispatcher], tick: Callable[[], None],
                 snapshot: Callable[[], None], prune: Callable[[], None], process: Callable[[Any], None],
                 wall_ms: Callable[[], int], tick_s: float, snapshot_s: float):
        self._store = store
        self._dispatchers = dispatchers
        self._tick, self._snapshot, self._prune, self._process = tick, snapshot, prune, process
        self._wall_ms = wall_ms
        self._tick_s = tick_s
        self._snapshot_s = snapshot_s
        self.loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Wake the delivery stages (from any thread): new outbox rows are committed."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return

        def wake_all() -> None:
            for d in self._dispatchers:
                d.wake.set()

        try:
            if asyncio.get_running_loop() is loop:
                wake_all()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(wake_all)

    async def run(self, source: Any = None) -> None:
        """Consume Batches from a ValidatedStream / Subscription / async iterable and run
        the timer and the delivery stages, until cancelled."""
        self.loop = asyncio.get_running_loop()
        for d in self._dispatchers:
            d.wake = asyncio.Event()  # bound to this loop
        sub = source.subscribe() if hasattr(source, "subscribe") else source
        try:
            async with asyncio.TaskGroup() as tg:
                for d in self._dispatchers:
                    d.wake.set()
                    tg.create_task(d.run(), name=f"alerts-deliver-{d.notifier.name}")
                tg.create_task(self._ticks(), name="alerts-timer")
                if sub is not None:
                    tg.create_task(self._consume(sub), name="alerts-consume")
        finally:
            self._snapshot()
            if sub is not None and hasattr(sub, "close"):
                sub.close()

    async def _consume(self, sub: AsyncIterable[Any]) -> None:
        async for batch in sub:
            self._process(batch)
            await asyncio.sleep(0)

    async def _ticks(self) -> None:
        last_snapshot = last_prune = time.monotonic()
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self._tick()
                mono = time.monotonic()
                if mono - last_snapshot >= self._snapshot_s:
                    await asyncio.to_thread(self._snapshot)
                    last_snapshot = mono
                if mono - last_prune >= 3600:
                    self._prune()
                    last_prune = mono
            except Exception:  # keep the timer alive; the error is logged with its traceback
                log.exception("alert timer failed")

    async def drain(self, timeout: float = 10.0) -> bool:
        """Deliver queued notifications now (tests, shutdown); True when the outbox is empty."""
        self.loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(self._store.outbox_backlog().values()):
                return True
            progressed = False
            for d in self._dispatchers:
                row = self._store.next_outbox(d.notifier.name)
                if row is not None and row.next_ms <= self._wall_ms():
                    await d.step()
                    progressed = True
            if not progressed:
                await asyncio.sleep(0.02)
        return not any(self._store.outbox_backlog().values())
