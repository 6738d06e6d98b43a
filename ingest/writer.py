"""Spool → InfluxDB: batches by size and time, retries forever, isolates bad points.

The writer reads whole records after the spool's checkpoint, sends them (gzip'd unless
InfluxDB is on this machine: CW_INFLUX_GZIP), and moves the checkpoint only when every line is either stored or dead-lettered:
- network errors, 5xx, 429, 401/403: exponential backoff with full jitter, never dropped;
- 404 (database missing): create it, then retry;
- 413: split the batch in halves;
- 400/422: bisect until the bad lines are alone, dead-letter them with InfluxDB's reason,
  store the rest (re-writing good lines is harmless: same series + time overwrites).
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from citywatch.aio import wait_event
from citywatch.errors import CitywatchError, SpoolError
from citywatch.influx import InfluxClient, WriteOutcome, WriteResult
from citywatch.logs import redact_url
from citywatch.model import RawMessage
from ingest.deadletters import DeadLetterError, DeadLetterStore
from ingest.evidence.store import EvidenceStore
from ingest.metrics import IngestMetrics
from ingest.spool import Spool

log = logging.getLogger("citywatch.ingest.writer")
_T = TypeVar("_T")
_COLLECT_AFTER_BYTES = 256 * 1024


class InfluxWriter:
    def __init__(
        self,
        *,
        spool: Spool,
        client: InfluxClient,
        deadletters: DeadLetterStore,
        metrics: IngestMetrics,
        batch_lines: int = 5000,
        interval_s: float = 0.2,
        max_backoff_s: float = 30.0,
        rng: random.Random | None = None,
        evidence: EvidenceStore | None = None,
    ) -> None:
        self._spool = spool
        self._client = client
        self._deadletters = deadletters
        self._metrics = metrics
        self._batch_lines = batch_lines
        self._interval = interval_s
        self._max_backoff = max_backoff_s
        self._rng = rng or random.Random()
        self._evidence = evidence  # six-100 kept evidence: marks what each accepted batch touched
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing_since: float | None = None
        self._last_warning = 0.0
        self._failed_since_warning = 0
        self.healthy = True
        self.storage_failing: str | None = None  # moving the checkpoint (or dead-lettering) fails: disk full

    def notify(self, n_lines: int) -> None:
        """Thread-safe: the committer appended `n_lines`. Wakes the writer only when a full
        batch is waiting; otherwise the interval timer picks the lines up."""
        if self._loop is not None and self._spool.backlog_lines >= self._batch_lines:
            self._loop.call_soon_threadsafe(self._wake.set)

    def request_stop(self) -> None:
        """Finish the batch in hand (or give up its retries) and return from `run`."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Deliver until `request_stop()`; the spool keeps whatever is not yet stored."""
        self._loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                delivered = await self.deliver_once()
            except _Stopping:
                return
            if not delivered and not self._stopping.is_set():
                self._wake.clear()
                await wait_event(self._wake, self._interval)

    async def deliver_once(self) -> int:
        """Send one batch from the spool (retrying until it is stored); return its size."""
        batch = await asyncio.to_thread(self._spool.read_batch, self._batch_lines)
        if batch is None:
            return 0
        rejected = await self._deliver_body(batch.body, batch.count)
        if rejected:
            now = time.time_ns() // 1_000_000
            dead = [(RawMessage("influx/write", line, now, "influx"), (f"influx_rejected: {why}",))
                    for line, why in rejected]
            await self._until_stored(self._deadletters.add_many, dead)
            self._metrics.write_rejected.inc(len(rejected))
            log.warning("InfluxDB refused %d line(s); dead-lettered, e.g. %s", len(rejected), rejected[0][1][:300])
        if self._evidence is not None:
            # After InfluxDB holds the batch, before the checkpoint passes it: a crash in
            # between re-sends and re-marks it (marks are idempotent).
            await self._until_stored(self._evidence.mark_body, batch.body)
        await self._until_stored(self._spool.commit, batch)
        self._metrics.stored.inc(batch.count - len(rejected))
        self._metrics.backlog.set(self._spool.backlog_lines)
        self._metrics.backlog_bytes.set(self._spool.backlog_bytes)
        if len(batch.body) >= _COLLECT_AFTER_BYTES:
            # Each HTTP write leaves a reference cycle in httpx/httpcore (request, stream,
            # pool request) that holds the whole body. With the service's lazy collector
            # (`_settle_heap`: a young generation of 20,000 objects) and a writer that
            # allocates little per batch, a drain of a big backlog kept hundreds of those
            # bodies alive: RSS grew by ~100 bytes per drained reading. A young collection
            # after each big batch (about 1 ms) keeps memory flat.
            gc.collect(1)
        return batch.count

    async def _until_stored(self, fn: Callable[[_T], object], arg: _T) -> None:
        """Run a local write (checkpoint, dead letters) until it succeeds: on a full disk it
        waits for space, logging once, instead of ending the writer."""
        delay, since = 0.2, None
        while True:
            try:
                await asyncio.to_thread(fn, arg)
            except (SpoolError, DeadLetterError, OSError) as exc:
                if since is None:
                    since = time.monotonic()
                    log.error("writer cannot record its progress (%s); retrying, InfluxDB may receive this batch "
                              "again (harmless: same points)", exc)
                self.storage_failing = str(exc)
                if await wait_event(self._stopping, delay):
                    raise _Stopping from exc
                delay = min(delay * 2, 5.0)
                continue
            if since is not None:
                log.warning("writer records its progress again after %.0f s", time.monotonic() - since)
                self.storage_failing = None
            return

    async def flush(self, timeout_s: float) -> bool:
        """After `run` returned: deliver the backlog, giving up after `timeout_s` (the
        spool keeps the rest for the next start)."""
        self._stopping.clear()
        loop = asyncio.get_running_loop()
        loop.call_later(timeout_s, self._stopping.set)
        try:
            while await self.deliver_once():
                pass
            return True
        except _Stopping:
            return False

    async def _deliver_body(self, body: bytes, count: int) -> list[tuple[bytes, str]]:
        """The common case without splitting the body into lines: send it whole; only a
        refusal (400/413) splits it and goes down the bisecting path."""
        result = await self._send(body, count)
        if result is None:
            return []
        return await self._deliver(body.rstrip(b"\n").split(b"\n"), first=result)

    async def _send(self, body: bytes, count: int) -> WriteResult | None:
        """Send until stored (None) or refused as bad data / too large (that result)."""
        attempt = 0
        while True:
            gzipped = getattr(self._client, "gzip", True)
            if not gzipped:
                payload = body
            elif count > 200:
                payload = await asyncio.to_thread(gzip.compress, body, 1)
            else:
                payload = gzip.compress(body, 1)
            started = time.perf_counter()
            result = await self._client.write(payload, compressed=gzipped)
            self._metrics.write_latency.observe(time.perf_counter() - started)
            if result.outcome is WriteOutcome.OK:
                self._recovered()
                return None
            if result.outcome in (WriteOutcome.REJECTED, WriteOutcome.TOO_LARGE):
                self._recovered()
                return result
            if result.outcome is WriteOutcome.NO_DATABASE:
                try:
                    await self._client.ensure_database()
                    log.info("created InfluxDB database/bucket %s", self._client.database)
                    continue
                except CitywatchError as exc:
                    result = WriteResult(WriteOutcome.RETRY, result.status, str(exc))
            attempt += 1
            await self._backoff(attempt, result, count)

    async def _deliver(self, lines: list[bytes], first: WriteResult | None = None) -> list[tuple[bytes, str]]:
        """Store `lines`; return the (line, reason) pairs InfluxDB refused as bad data."""
        result = first if first is not None else await self._send(b"\n".join(lines) + b"\n", len(lines))
        if result is None:
            return []
        if len(lines) == 1:
            if result.outcome is WriteOutcome.TOO_LARGE:
                return [(lines[0], f"413 line too large for InfluxDB: {result.detail}")]
            return [(lines[0], f"{result.status} {result.detail}")]
        mid = len(lines) // 2
        return await self._deliver(lines[:mid]) + await self._deliver(lines[mid:])

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("InfluxDB writes succeed again after %.0f s; backlog %d lines",
                     time.monotonic() - self._failing_since, self._spool.backlog_lines)
        self._failing_since = None
        self._last_warning, self._failed_since_warning = 0.0, 0  # the next outage is reported at once
        self.healthy = True
        self._metrics.influx_up.set(1)

    async def _backoff(self, attempt: int, result: WriteResult, n_lines: int) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        self.healthy = False
        self._metrics.influx_up.set(0)
        self._metrics.write_retries.inc()
        # Full jitter: a fleet of writers coming back does not hit InfluxDB in lockstep.
        cap = min(self._max_backoff, 0.25 * 2 ** min(attempt, 10))
        delay = self._rng.uniform(0.05, cap)
        if result.retry_after_s is not None:
            delay = max(delay, min(result.retry_after_s, self._max_backoff))
        self._failed_since_warning += 1
        # One WARNING when writes start failing, then one a minute (not one per retry).
        if self._last_warning == 0.0 or now - self._last_warning >= 60:
            self._last_warning = now
            hint = " (check CW_INFLUX_TOKEN / CW_INFLUX_USER)" if result.status in (401, 403) else ""
            log.warning("InfluxDB at %s: write failed (%s %s)%s; retrying, nothing is dropped: next retry in %.1f s "
                        "(backoff up to %.0f s), %d failed attempt(s) since the last report, backlog %d lines, %.1f MB",
                        redact_url(self._client.settings.influx_url), result.status or "no answer",
                        result.detail[:200], hint, delay, self._max_backoff, self._failed_since_warning,
                        self._spool.backlog_lines, self._spool.backlog_bytes / 1e6)
            self._failed_since_warning = 0
        if await wait_event(self._stopping, delay):
            raise _Stopping


class _Stopping(Exception):
    """Raised inside a retry loop when the writer is asked to stop."""
