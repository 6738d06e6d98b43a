"""The HJ 212 TCP gateway: monitors connect, upload frames, get answers after fsync.

This module is the listener: it binds, admits connections and runs one `Session` each
(session.py: frames in, identity, outcomes to the sink, answers out after durability).

On a hostile network (README "On a hostile network"): failed logins per MN and per
address back off and then lock out (`guard.LoginGuard`); an unknown MN and a wrong PW get
the same answer; connections are capped per address (the oldest connection that has not
logged in is evicted first) and must log in within `auth_timeout_s`; dead letters of
connections that have not logged in are rate-limited per address (`guard.SourceRateLimiter`).

Lifecycle: `serve()` binds, sets `bound_port`, and runs until cancelled; cancelling it
closes the listener and every connection. Outcomes already submitted stay with the sink.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry

from citywatch.errors import ConfigError
from citywatch.registry import Registry
from ingest.hj212.decode import DecodeContext
from ingest.hj212.framing import DEFAULT_MAX_DATA
from ingest.hj212.guard import GuardPolicy, Lockout, LoginGuard, SourceRateLimiter, lockout_outcome, source_address
from ingest.hj212.metrics import GatewayMetrics
from ingest.hj212.reassembly import Reassembler
from ingest.hj212.session import READ_CHUNK, Session
from ingest.types import Sink

log = logging.getLogger(__name__)


def require_identity(registry: Registry, *, open_mode: bool) -> None:
    """Start-up check for `CW_HJ212_LISTEN`: without a device registry every MN would be
    accepted without a password, which must be asked for explicitly (`CW_HJ212_OPEN`)."""
    if not registry.enabled and not open_mode:
        raise ConfigError("CW_HJ212_LISTEN is set but there is no device registry, so any MN would be accepted "
                          "without a password: set CW_DEVICES_FILE (hj212_mn and hj212_pw per monitor), or "
                          "CW_HJ212_OPEN=true to accept every monitor on purpose")


class Hj212Gateway:
    def __init__(
        self,
        *,
        registry: Registry,
        sink: Sink,
        tz: str = "Asia/Shanghai",
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout_s: float = 900.0,
        frame_timeout_s: float = 30.0,
        write_timeout_s: float = 30.0,
        max_connections: int = 2000,
        max_frame: int = DEFAULT_MAX_DATA,
        max_in_flight: int = 32,
        max_bad_bytes: int = 64 * 1024,
        max_future_s: float = 300.0,
        max_per_address: int = 256,
        auth_timeout_s: float = 60.0,
        guard: GuardPolicy | None = None,
        metrics: GatewayMetrics | CollectorRegistry | None = None,
        summary_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`idle_timeout_s`: close a connection silent for this long (monitors report every
        10 s - 1 h). `frame_timeout_s`: a started frame must complete within this (slow
        senders). `max_frame`: cap on the data length (the field allows 9999).
        `max_in_flight`: frames per connection awaiting durability before reading pauses.
        `max_bad_bytes`: framing-error bytes since the last good frame before the
        connection is closed (a port scanner or a monitor speaking another protocol).
        `max_per_address`: open connections per source address (IPv6: per /64).
        `auth_timeout_s`: a connection must send a frame that passes MN/PW within this.
        `guard`: failed-login backoff/lockout and the dead-letter rate limit.
        `metrics`: counters (or the registry to put them in). `summary_interval_s`: how
        often dropped dead letters and refused connections are summarised in one log line."""
        self.decode_ctx = DecodeContext(registry=registry, tz=ZoneInfo(tz), max_future_s=max_future_s)
        self.reassembler = Reassembler()  # split uploads (PNUM > 1); monitors may reconnect mid-upload
        self.sink = sink
        self._host, self._port = host, port
        self.idle_timeout_s = idle_timeout_s
        self.frame_timeout_s = frame_timeout_s
        self.write_timeout_s = write_timeout_s
        self._max_connections = max_connections
        self.max_frame = max_frame
        self.max_in_flight = max_in_flight
        self.max_bad_bytes = max_bad_bytes
        self._clock = clock
        self._max_per_address = max_per_address
        self.auth_timeout_s = auth_timeout_s
        self.auth_required = registry.enabled  # no registry = open mode: any MN, no PW
        self.guard = LoginGuard(guard)
        policy = self.guard.policy
        self.limiter = SourceRateLimiter(policy.deadletter_rate, policy.deadletter_burst,
                                          max_tracked=policy.max_tracked)
        self.metrics = metrics if isinstance(metrics, GatewayMetrics) else GatewayMetrics(metrics)
        self._summary_interval_s = summary_interval_s
        self._refused_since: dict[str, int] = {}  # reason → connections refused since the last summary
        self._bound_port: int | None = None
        self._ready = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self._conns: dict[asyncio.Task[None], Session] = {}  # in accept order
        self._by_address: dict[str, dict[asyncio.Task[None], Session]] = {}
        self.submitter: ThreadPoolExecutor | None = None
        self.closing = False

    @property
    def bound_port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the gateway is not listening yet (await wait_ready())")
        return self._bound_port

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def wait_ready(self) -> None:
        """Returns once `serve()` is listening and `bound_port` is set."""
        await self._ready.wait()

    async def serve(self) -> None:
        # One thread calls sink.submit: it may block for backpressure, which must not stall
        # the event loop, and a single thread keeps submissions in arrival order.
        self.submitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hj212-submit")
        server = await asyncio.start_server(self._handle, self._host, self._port,
                                            backlog=min(self._max_connections, 4096), limit=READ_CHUNK)
        summaries = asyncio.create_task(self._summaries(), name="hj212-summaries")
        try:
            self._bound_port = server.sockets[0].getsockname()[1]
            self._ready.set()
            log.info("hj212 gateway listening on %s:%d", self._host, self._bound_port)
            await server.serve_forever()
        finally:
            summaries.cancel()
            server.close()
            self.closing = True
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, summaries, return_exceptions=True)
            self._summarise()
            self.submitter.shutdown(wait=False, cancel_futures=True)
            self._ready.clear()
            self.closing = False

    # -- admission -------------------------------------------------------------------------

    def _admit(self, conn: Session) -> str | None:
        """Make room for `conn` or say why it is refused. At a cap, the oldest connection
        that has not logged in gives way (of the same address for the per-address cap): a
        flood of idle connections cannot keep a real monitor out."""
        mine = self._by_address.get(conn.address, {})
        if len(mine) >= self._max_per_address:
            victim = next((c for c in mine.values() if not c.authenticated), None)
            if victim is None:
                return "per_address"
            self._evict(victim)
        if len(self._conns) >= self._max_connections:
            victim = next((c for c in self._conns.values() if not c.authenticated), None)
            if victim is None:
                return "capacity"
            self._evict(victim)
        self._conns[conn.task] = conn
        self._by_address.setdefault(conn.address, {})[conn.task] = conn
        self.metrics.connections.set(len(self._conns))
        return None

    def _evict(self, conn: Session) -> None:
        conn.evicted = True
        self._forget(conn)
        self._count_refused("evicted")
        transport = conn.writer.transport
        if transport is not None:
            transport.abort()  # the handler sees the connection reset and ends

    def _forget(self, conn: Session) -> None:
        self._conns.pop(conn.task, None)
        mine = self._by_address.get(conn.address)
        if mine is not None:
            mine.pop(conn.task, None)
            if not mine:
                del self._by_address[conn.address]
        self.metrics.connections.set(len(self._conns))

    def _count_refused(self, reason: str) -> None:
        self.metrics.connections_refused.labels(reason).inc()
        self._refused_since[reason] = self._refused_since.get(reason, 0) + 1

    # -- one connection --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        address = source_address(peername[0] if isinstance(peername, tuple) else None)
        task = asyncio.current_task()
        assert task is not None
        conn = Session(self, task, writer, peer, address, asyncio.get_running_loop().time())
        refused = self._admit(conn)
        if refused is not None:
            # Counted and summarised (not one log line each: a flood would flood the log).
            log.debug("hj212: refusing %s (%s)", peer, refused)
            self._count_refused(refused)
            writer.close()
            return
        self._connections.add(task)
        try:
            await conn.run(reader)
        finally:
            self._connections.discard(task)
            self._forget(conn)

    async def lockout(self, lock: Lockout) -> None:
        """Once per lockout: one log line (no password), a counter, and an event the alert
        engine turns into the `hj212_login_lockout` alert."""
        self.metrics.lockouts.labels(lock.scope).inc()
        self.metrics.locked_subjects.set(self.guard.locked_count())
        log.warning("hj212: %s %s locked out for %.0f s after %d failed logins (unknown MN, wrong PW or bad CRC)",
                    "address" if lock.scope == "address" else "MN", lock.subject, lock.lockout_s, lock.failures)
        assert self.submitter is not None
        await asyncio.get_running_loop().run_in_executor(
            self.submitter, self.sink.submit, lockout_outcome(lock, now_ms=self.now_ms()), None)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self._summary_interval_s)
            self._summarise()

    def _summarise(self) -> None:
        """One log line per interval for what floods would otherwise log line by line."""
        self.metrics.locked_subjects.set(self.guard.locked_count())
        dropped = self.limiter.take_summary()
        refused, self._refused_since = self._refused_since, {}
        if dropped:
            top = sorted(dropped.items(), key=lambda kv: -kv[1])[:5]
            log.warning("hj212: %d dead letters from %d unauthenticated source(s) beyond the rate of %g/s were "
                        "counted, not stored, in the last %g s (most: %s)", sum(dropped.values()), len(dropped),
                        self.guard.policy.deadletter_rate, self._summary_interval_s,
                        ", ".join(f"{a} {n}" for a, n in top))
        if refused:
            log.warning("hj212: connections refused or evicted in the last %g s: %s", self._summary_interval_s,
                        ", ".join(f"{k} {v}" for k, v in sorted(refused.items())))

    def now_ms(self) -> int:
        return int(self._clock() * 1000)


def gateway_from_settings(settings: Any, *, registry: Registry, sink: Sink, host: str, port: int,
                          metrics: CollectorRegistry | None = None) -> "Hj212Gateway":
    """The gateway as the `CW_HJ212_*` settings configure it (citywatch/settings.py)."""
    policy = GuardPolicy(max_failures=settings.hj212_lockout_after, backoff_after=settings.hj212_backoff_after,
                         lockout_s=settings.hj212_lockout_s, failure_window_s=settings.hj212_lockout_s,
                         deadletter_rate=settings.hj212_deadletter_rate,
                         deadletter_burst=settings.hj212_deadletter_burst)
    return Hj212Gateway(registry=registry, sink=sink, tz=settings.tz, host=host, port=port,
                        max_future_s=settings.max_future_s, max_connections=settings.hj212_max_connections,
                        max_per_address=settings.hj212_max_per_address,
                        auth_timeout_s=settings.hj212_auth_timeout_s, idle_timeout_s=settings.hj212_idle_timeout_s,
                        guard=policy, metrics=metrics)
