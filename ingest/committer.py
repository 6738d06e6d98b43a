"""The group committer: the `Sink` every input submits to.

Outcomes are collected for up to `interval_s` (or `max_items`), then in one step: the
accepted lines are appended to the spool (one fsync), the rejections are committed to the
dead-letter store, and only then each input's `on_durable` callback runs — where the MQTT
PUBACK or the HJ 212 answer goes out. After that, the readings are published on the
validated stream for the alert engine.

It runs on its own thread because fsync blocks; while it waits, the inputs keep decoding.

When a commit fails (disk full, I/O error) nothing is acknowledged: the group is retried,
with backoff, until it is durable — the part already written (spool or dead letters) is
not written twice. The failure is logged once, then every minute while it lasts, and its
end once; `failing` says so for /health.

`pause(reason)` (the disk watch, when free space is low) stops taking submissions from
the inputs, which is backpressure: MQTT stops reading and the broker keeps the messages,
HJ 212 monitors wait for their answer. Alert history (source "alerts", a few lines per
alert change) is still taken, so that the alert engine's delivery never waits on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from citywatch.errors import SpoolError
from citywatch.stream import ValidatedStream
from ingest.deadletters import DeadLetterError, DeadLetterStore
from ingest.metrics import IngestMetrics
from ingest.spool import Spool
from citywatch.model import RawMessage
from ingest.types import Accepted, DurableCallback, Outcome, Rejected

log = logging.getLogger("citywatch.ingest.committer")

# Inputs that the disk pause does not hold up: the service's own alert history.
_UNPAUSED_SOURCES = frozenset({"alerts"})

_Item = tuple[Outcome, DurableCallback | None]


class _AckGroup(Protocol):
    """What a callback's `ack_group` attribute is (`MqttConsumer`): it acknowledges its own
    tokens, a group commit's worth at a time (the tokens are handed back to their group)."""

    def ack_many(self, tokens: list[DurableCallback], ok: bool) -> None: ...


class Committer:
    def __init__(
        self,
        *,
        spool: Spool,
        deadletters: DeadLetterStore,
        stream: ValidatedStream | None = None,
        metrics: IngestMetrics | None = None,
        interval_s: float = 0.02,
        max_items: int = 5000,
        on_commit: Callable[[int], object] | None = None,
    ) -> None:
        self._spool = spool
        self._deadletters = deadletters
        self._stream = stream
        self._metrics = metrics or IngestMetrics()
        self._interval = interval_s
        self._max = max_items
        self._on_commit = on_commit  # called after each commit with the number of lines (wakes the writer)
        self._pending: list[tuple[Outcome, DurableCallback | None]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._closed = False  # set by the commit thread once it has committed its last group
        self._paused_reason: str | None = None
        # Submitted from the inputs but not committed because a pause began: kept in memory,
        # in order, until the pause ends (unacknowledged, so a stop loses nothing).
        self._held: list[tuple[Outcome, DurableCallback | None]] = []
        self._thread: threading.Thread | None = None
        self.failing: str | None = None  # the last commit error, while commits fail
        self._failing_since: float | None = None
        self._last_failure_log = 0.0

    # -- Sink ----------------------------------------------------------------------
    def submit(self, outcome: Outcome, on_durable: DurableCallback | None = None) -> None:
        self.submit_many([(outcome, on_durable)])

    def submit_many(self, items: list[tuple[Outcome, DurableCallback | None]]) -> None:
        """`submit` for a list (one lock round trip): the MQTT input hands over a whole read."""
        pausable = bool(items) and items[0][0].raw.source not in _UNPAUSED_SOURCES
        with self._cond:
            # Backpressure: the input's thread waits while a commit is far behind or the
            # disk is too full. MQTT then stops reading, and the broker keeps the messages.
            while (len(self._pending) + len(self._held) >= 4 * self._max or (self._paused_reason and pausable)) \
                    and not self._stop:
                self._cond.wait(0.5)
            refused: Sequence[_Item]
            if self._closed:
                # After the last commit nothing would ever make these durable: say so now
                # (the input keeps them: no ack, or an alert outbox row stays queued).
                refused = items
            else:
                refused = ()
                self._pending.extend(items)
                if len(self._pending) >= self._max:
                    self._cond.notify_all()
        for _, cb in refused:
            if cb is not None:
                cb(False)

    def pause(self, reason: str | None) -> None:
        """Stop accepting (reason) or resume (None): used when the spool's disk is nearly full.
        Input items already submitted but not yet committed wait too: a pause writes
        nothing more from the inputs to the disk."""
        with self._cond:
            self._paused_reason = reason
            if reason is None and self._held:
                self._pending[:0] = self._held
                self._held = []
            self._cond.notify_all()

    @property
    def paused_reason(self) -> str | None:
        return self._paused_reason

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cw-committer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Commit whatever is pending, then stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            refused: list[_Item] = []
            with self._cond:
                if not self._pending and not self._stop:
                    self._cond.wait(self._interval)
                elif len(self._pending) < self._max and not self._stop:
                    # Something is pending: give it one interval to grow into a group.
                    self._cond.wait(self._interval)
                items, self._pending = self._pending, []
                stopping = self._stop
                if self._paused_reason and items:
                    self._held += [it for it in items if it[0].raw.source not in _UNPAUSED_SOURCES]
                    items = [it for it in items if it[0].raw.source in _UNPAUSED_SOURCES]
                if stopping and self._held:
                    # Never written: not acknowledged, so the broker (or the monitor) has them.
                    refused, self._held = self._held, []
                self._cond.notify_all()
            if items:
                self._commit_until_done(items, stopping)
            for _, cb in refused:
                if cb is not None:
                    cb(False)
            if stopping:
                with self._cond:
                    if not self._pending:
                        self._closed = True
                        return

    def _commit_until_done(self, items: list[_Item], stopping: bool, _split: bool = False) -> None:
        """Commit `items`, retrying until it is durable, or refuse them (no ack) if the
        committer is asked to stop meanwhile. A group that fails before any part of it was
        written is split in halves, committed one after the other: on a nearly full disk
        the space that comes back (as InfluxDB drains the spool) takes a smaller group
        long before it could take a big one."""
        delay = 0.5
        done: set[str] = set()  # parts of this group already durable (never written twice)
        while True:
            try:
                self.commit(items, _done=done)
                if not _split:
                    self._recovered(len(items))
                return
            except (SpoolError, DeadLetterError, OSError) as exc:
                # Nothing is acknowledged: the inputs keep their messages. Retry, never drop.
                self._failed(exc, len(items))
                if stopping or self._stop:
                    for _, cb in items:
                        if cb is not None:
                            cb(False)
                    return
                if not done and len(items) > 1:
                    mid = len(items) // 2
                    self._commit_until_done(items[:mid], stopping, True)
                    self._commit_until_done(items[mid:], stopping, True)
                    if not _split:
                        self._recovered(len(items))
                    return
                with self._cond:
                    self._cond.wait_for(lambda: self._stop, delay)
                delay = min(delay * 2, 5.0)

    def _failed(self, exc: BaseException, n: int) -> None:
        self._metrics.commit_failures.inc()
        self._metrics.storage_failing.labels("spool").set(1)
        self.failing = str(exc)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = self._last_failure_log = now
            log.error("group commit failed; nothing is acknowledged, retrying until it succeeds: %s", exc)
        elif now - self._last_failure_log >= 60:
            self._last_failure_log = now
            log.error("group commit still failing after %.0f s (%d message(s) waiting): %s",
                      now - self._failing_since, n, exc)

    def _recovered(self, n: int) -> None:
        if self._failing_since is not None:
            log.warning("group commit succeeded again after %.0f s of failures; acknowledging %d message(s)",
                        time.monotonic() - self._failing_since, n)
            self._failing_since = None
            self.failing = None
            self._metrics.storage_failing.labels("spool").set(0)

    def commit(self, items: list[tuple[Outcome, DurableCallback | None]], *, _done: set[str] | None = None) -> None:
        """Make `items` durable, then call their callbacks in order. Public for tests and replay.
        `_done` (a retry of the same group) records which parts are durable already."""
        done = _done if _done is not None else set()
        started = time.perf_counter()
        # Split with comprehensions, without per-item dict work: a group holds thousands.
        outcomes = [outcome for outcome, _ in items]
        # `type(o) is`, not isinstance: as fast as the old `o.__class__ is`, and mypy narrows it.
        accepted = [o for o in outcomes if type(o) is Accepted]
        rejected: list[tuple[RawMessage, tuple[str, ...]]] = []
        if len(accepted) != len(outcomes):
            rejected = [(o.raw, o.reasons) for o in outcomes if type(o) is Rejected]
        partial = [(o.raw, o.partial) for o in accepted if o.partial]  # stored in part: the rest as a dead letter
        if partial:
            rejected += partial
        lines = [line for o in accepted for line in o.lines]
        if lines and "spool" not in done:
            self._spool.append(lines)
            done.add("spool")
        if rejected and "deadletters" not in done:
            self._deadletters.add_many(rejected)
            done.add("deadletters")
        _acknowledge(items)
        m = self._metrics
        if log.isEnabledFor(logging.DEBUG):
            log.debug("commit: %d items, %d lines, %d rejected in %.1f ms", len(items), len(lines), len(rejected),
                      (time.perf_counter() - started) * 1000)
        m.commits.inc()
        m.commit_latency.observe(time.perf_counter() - started)
        for source, n in Counter([o.raw.source for o in outcomes]).items():
            m.received.labels(source).inc(n)
        m.accepted_readings.inc(len(lines))
        m.rejected.inc(len(rejected))
        m.backlog.set(self._spool.backlog_lines)
        m.backlog_bytes.set(self._spool.backlog_bytes)
        if rejected:
            for raw, reasons in rejected[:5]:
                log.warning("rejected message on %s: %s", raw.topic[:200], "; ".join(reasons)[:500])
        if self._on_commit is not None and lines:
            self._on_commit(len(lines))
        if self._stream is not None and self._stream.has_subscribers:  # collected only for a listener
            readings = [r for o in accepted for r in o.readings]
            events = [e for o in accepted for e in o.events]
            if readings or events:
                self._stream.publish(readings, events)


def _acknowledge(items: list[tuple[Outcome, DurableCallback | None]]) -> None:
    """Call each callback once, in order; callbacks of one group (an MQTT connection's
    `AckToken`s) are handed over together so that their acks go out in one write."""
    groups: dict[int, tuple[_AckGroup, list[DurableCallback]]] = {}
    # A group commit's tokens mostly come from one connection: remember the last group.
    last_group: _AckGroup | None = None
    last_tokens: list[DurableCallback] = []
    for _, cb in items:
        if cb is None:
            continue
        group: _AckGroup | None = getattr(cb, "ack_group", None)
        if group is None:
            try:
                cb(True)
            except Exception:  # an input's ack failing must not stop the committer
                log.exception("acknowledgement callback failed")
            continue
        if group is not last_group:
            entry = groups.get(id(group))
            if entry is None:
                entry = groups[id(group)] = (group, [])
            last_group, last_tokens = group, entry[1]
        last_tokens.append(cb)
    for group, tokens in groups.values():
        try:
            group.ack_many(tokens, True)
        except Exception:
            log.exception("acknowledgement callback failed")


class MemorySink:
    """A `Sink` for tests of inputs: keeps outcomes, reports durable at once."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()

    def submit(self, outcome: Outcome, on_durable: DurableCallback | None = None) -> None:
        self.submit_many([(outcome, on_durable)])

    def submit_many(self, items: list[tuple[Outcome, DurableCallback | None]]) -> None:
        with self._lock:
            self.outcomes.extend(outcome for outcome, _ in items)
        for _, on_durable in items:
            if on_durable is not None:
                on_durable(True)

    @property
    def rejected(self) -> list[Rejected]:
        return [o for o in self.outcomes if isinstance(o, Rejected)]
