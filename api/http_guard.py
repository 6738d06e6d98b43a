"""A header deadline for uvicorn's h11 connections: the slowloris guard.

uvicorn (0.3x-0.5x) has a keep-alive timeout between requests, but no limit on how long a
client may take to send a request's header: a connection that sends `GET / HTTP/1.1\r\n`
and then nothing stays open for ever, and counts against `limit_concurrency`, so 2,000 of
them turn every real request into a 503. This protocol class (passed as uvicorn's `http=`)
adds two things at the connection level, below the ASGI app:

- a deadline: a connection whose request header is not complete `header_timeout_s` after
  it opened (or after its previous response) is closed, however slowly it trickles bytes;
- a bound: at most `max_incomplete` connections may be waiting for their header at once;
  one more closes the oldest of them, so a flood ages out its own connections instead of
  holding the server, and a client that sends its request promptly is served.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardStats:
    """Counters for tests and /metrics-style reporting."""

    def __init__(self) -> None:
        self.timed_out = 0
        self.evicted = 0


def guarded_h11(*, header_timeout_s: float, max_incomplete: int) -> tuple[type[H11Protocol], GuardStats]:
    """A protocol class for `uvicorn.Config(http=...)` with its own waiting list."""
    waiting: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
    stats = GuardStats()

    class GuardedH11Protocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def _await_header(self) -> None:
            if self._header_deadline is None:
                self._header_deadline = self.loop.call_later(header_timeout_s, self._header_too_slow)
                waiting[self] = None
                while len(waiting) > max_incomplete:
                    oldest, _ = waiting.popitem(last=False)
                    stats.evicted += 1
                    oldest._drop()

        def _header_done(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
            waiting.pop(self, None)

        def _header_too_slow(self) -> None:
            self._header_deadline = None
            waiting.pop(self, None)
            stats.timed_out += 1
            self._drop()

        def _drop(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
            if not self.transport.is_closing():
                self.transport.abort()  # no answer: it has not asked anything yet

        def _waiting_for_header(self) -> bool:
            return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_header()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                self._header_done()
            elif self._waiting_for_header():
                self._await_header()  # keeps the deadline already running
            else:
                self._header_done()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Between requests uvicorn's keep-alive timeout applies; once a next request
            # begins (data_received), the header deadline does again.
            self._header_done()

        def connection_lost(self, exc: Exception | None) -> None:
            self._header_done()
            super().connection_lost(exc)

    return GuardedH11Protocol, stats
