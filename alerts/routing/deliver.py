"""Delivery of group notifications to one receiver: order, rate limit, merging, backoff.

The receiver's outbox rows (notifier `receiver:<name>`) are sent oldest first. Before a
send, the rate limiter is asked: when the receiver's window is full the rows wait in the
outbox (durable), and the next send takes every waiting row that fits one platform
message, so a burst of 60 site groups reaches a 20-a-minute DingTalk robot completely,
in three or four messages instead of 60 refused ones. Nothing is dropped for the limit.
A retryable failure keeps the rows at the head with exponential backoff; a non-retryable
one marks them failed and logs it (never the URL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from alerts.notify import Backoff, Delivery, run_stage
from alerts.receivers.base import GroupBatch, Receiver
from alerts.routing.group import outbox_name

log = logging.getLogger("citywatch.alerts.routing")

Clock = Callable[[], float]
DOWN_AFTER_FAILURES = 3


class RateLimiter:
    """Sliding windows: at most `n` sends in any `per_s` seconds, for each (n, per_s)."""

    def __init__(self, limits: tuple[tuple[int, float], ...], sent: Iterable[float] = ()):
        self.limits = tuple(limits)
        horizon = max((p for _, p in self.limits), default=0.0)
        self._horizon = horizon
        self._sent: deque[float] = deque(sorted(sent))

    def wait_s(self, now: float) -> float:
        """Seconds until one more send keeps every window within its limit (0: now)."""
        while self._sent and self._sent[0] <= now - self._horizon:
            self._sent.popleft()
        wait = 0.0
        for n, per_s in self.limits:
            recent = [t for t in self._sent if t > now - per_s]
            if len(recent) >= n:
                wait = max(wait, recent[-n] + per_s - now)
        return wait

    def record(self, now: float) -> None:
        self._sent.append(now)


@dataclass
class ReceiverHealth:
    sent: int = 0
    merged_groups: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_ok_ms: int | None = None

    @property
    def up(self) -> bool:
        return self.consecutive_failures < DOWN_AFTER_FAILURES


@dataclass
class GroupDispatcher:
    store: Any
    receiver: Receiver
    clock: Clock = time.time
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=2.0, max_s=120.0))
    send_timeout_s: float = 30.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    health: ReceiverHealth = field(default_factory=ReceiverHealth)
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.outbox = outbox_name(self.receiver.name)
        horizon = max((p for _, p in self.receiver.limits), default=0.0)
        # Sends in the last window before a restart still count against the platform's limit.
        since_ms = int((self.clock() - horizon) * 1000)
        sent = [ms / 1000 for ms in self.store.outbox_sent_since(self.outbox, since_ms)] if horizon else []
        self.limiter = RateLimiter(self.receiver.limits, sent)

    async def run(self) -> None:
        """Until cancelled: deliver, then wait for the backoff / rate window or new rows."""
        await run_stage(self)

    async def step(self) -> float | None:
        """One send at most. None: nothing queued; 0: go on; > 0: seconds to wait."""
        rows = self.store.pending_outbox(self.outbox, max(1, self.receiver.max_merge))
        if not rows:
            return None
        now = self.clock()
        wait = rows[0].next_ms / 1000.0 - now
        if wait > 0:
            return wait
        wait = self.limiter.wait_s(now)
        if wait > 0:
            return wait
        batch = rows[:1]
        for row in rows[1:]:  # merge what waits, as much as one platform message holds
            if not self.receiver.fits([r.payload for r in (*batch, row)]):
                break
            batch.append(row)
        seqs = [r.seq for r in batch]
        try:
            async with asyncio.timeout(self.send_timeout_s):
                result = await self.receiver.send(GroupBatch(batch[0].seq, tuple(r.payload for r in batch),
                                                             batch[0].created_ms))
        except TimeoutError:
            result = Delivery(False, retryable=True, detail=f"{self.receiver.name}: send timed out")
        except Exception as exc:  # a receiver bug must not stop delivery for good
            result = Delivery(False, retryable=True, detail=f"{self.receiver.name}: {type(exc).__name__}")
        # Every request counts against the platform's window, refused or not.
        self.limiter.record(self.clock())
        now_ms = int(self.clock() * 1000)
        h = self.health
        if result.ok:
            self.store.outbox_delivered_many(seqs, now_ms, result.detail)
            h.sent += 1
            h.merged_groups += len(batch)
            h.consecutive_failures = 0
            h.last_ok_ms = now_ms
            return 0.0
        h.failures += 1
        h.consecutive_failures += 1
        h.last_error = result.detail
        if result.retryable:
            delay = self.backoff.delay(batch[0].attempts + 1)
            self.store.outbox_retry(batch[0].seq, now_ms + int(delay * 1000), result.detail)
            log.warning("alert receiver %s: %d group(s) not delivered (%s); retry in %.1fs", self.receiver.name,
                        len(batch), result.detail, delay)
            return delay
        self.store.outbox_failed_many(seqs, result.detail)
        log.error("alert receiver %s: %d group(s) dropped (not retryable): %s", self.receiver.name, len(batch),
                  result.detail)
        return 0.0
