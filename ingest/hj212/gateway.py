"""The HJ 212 TCP gateway: monitors connect, upload frames, get answers after fsync.

Per connection: bytes → `FrameDecoder` → `decode_*` → `Sink.submit` → (durable) → answer.
Answers go out in arrival order because one writer task per connection awaits the
durability of each outcome in turn. The bounded in-flight queue is the backpressure:
when the sink is slow the reader stops reading and TCP flow control pushes back on the
monitor; no buffer grows without bound.

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
import contextlib
import hmac
import logging
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry

from citywatch.errors import ConfigError
from citywatch.model import RawMessage
from citywatch.registry import Registry
from citywatch.settings import Settings
from ingest.hj212.codes import ST_SYSTEM, VERSION_SHIFT, Cn, QnRtn
from ingest.hj212.crc import CrcMode, crc_ok
from ingest.hj212.decode import DecodeContext, Decoded, decode_frame, decode_framing_error, topic_for
from ingest.hj212.framing import DEFAULT_MAX_DATA, Frame, FrameDecoder, FramingError, encode_frame
from ingest.hj212.guard import GuardPolicy, Lockout, LoginGuard, SourceRateLimiter, lockout_outcome, source_address
from ingest.hj212.metrics import GatewayMetrics
from ingest.hj212.packet import Header, read_header
from ingest.hj212.reassembly import Reassembler
from ingest.types import Outcome, Rejected, Sink

log = logging.getLogger(__name__)

_READ_CHUNK = 16 * 1024
_SETTLE_S = 0.25  # a frame without CR LF is taken once the input has paused this long
_Pending = tuple["asyncio.Future[bool]", bytes | None]
_DUMMY_PW = b"\x00" * 24  # compared against when the MN is unknown, so both failures cost the same
_CLOSE = True  # _frame(): close the connection after this frame


def require_identity(registry: Registry, *, open_mode: bool) -> None:
    """Start-up check for `CW_HJ212_LISTEN`: without a device registry every MN would be
    accepted without a password, which must be asked for explicitly (`CW_HJ212_OPEN`)."""
    if not registry.enabled and not open_mode:
        raise ConfigError("CW_HJ212_LISTEN is set but there is no device registry, so any MN would be accepted "
                          "without a password: set CW_DEVICES_FILE (hj212_mn and hj212_pw per monitor), or "
                          "CW_HJ212_OPEN=true to accept every monitor on purpose")


def refusal_answer(h: Header, frame: Frame) -> bytes:
    """The one answer to every failed login (unknown MN, wrong PW, CRC before login):
    CN=9011 QnRtn=3 echoing only the QN, framed with the CRC the request itself used.
    Nothing in it depends on the registry, so it cannot tell a registered MN from an
    unknown one."""
    crc: CrcMode = "modbus" if (not crc_ok(frame.data, frame.crc, "strict")
                                and crc_ok(frame.data, frame.crc, "modbus")) else "strict"
    parts = []
    qn = h.qn
    if qn is not None and qn.isdigit() and len(qn) <= 20:
        parts.append(f"QN={qn}")
    parts += [f"ST={ST_SYSTEM}", f"CN={int(Cn.REQUEST_ANSWER)}", f"Flag={h.version << VERSION_SHIFT & 0xFC}"]
    return encode_frame(";".join(parts) + f";CP=&&QnRtn={int(QnRtn.PW_ERROR)}&&", crc=crc)


class _Conn:
    """One connection's identity state."""

    __slots__ = ("task", "writer", "peer", "address", "opened", "mns", "evicted")

    def __init__(self, task: asyncio.Task[None], writer: asyncio.StreamWriter, peer: str, address: str,
                 opened: float) -> None:
        self.task, self.writer, self.peer, self.address, self.opened = task, writer, peer, address, opened
        self.mns: set[str | None] = set()  # MNs that logged in on this connection
        self.evicted = False

    @property
    def authenticated(self) -> bool:
        return bool(self.mns)


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
        self._ctx = DecodeContext(registry=registry, tz=ZoneInfo(tz), max_future_s=max_future_s)
        self._reassembler = Reassembler()  # split uploads (PNUM > 1); monitors may reconnect mid-upload
        self._sink = sink
        self._host, self._port = host, port
        self._idle_timeout_s = idle_timeout_s
        self._frame_timeout_s = frame_timeout_s
        self._write_timeout_s = write_timeout_s
        self._max_connections = max_connections
        self._max_frame = max_frame
        self._max_in_flight = max_in_flight
        self._max_bad_bytes = max_bad_bytes
        self._clock = clock
        self._max_per_address = max_per_address
        self._auth_timeout_s = auth_timeout_s
        self._auth_required = registry.enabled  # no registry = open mode: any MN, no PW
        self._guard = LoginGuard(guard)
        policy = self._guard.policy
        self._limiter = SourceRateLimiter(policy.deadletter_rate, policy.deadletter_burst,
                                          max_tracked=policy.max_tracked)
        self._metrics = metrics if isinstance(metrics, GatewayMetrics) else GatewayMetrics(metrics)
        self._summary_interval_s = summary_interval_s
        self._refused_since: dict[str, int] = {}  # reason → connections refused since the last summary
        self._bound_port: int | None = None
        self._ready = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self._conns: dict[asyncio.Task[None], _Conn] = {}  # in accept order
        self._by_address: dict[str, dict[asyncio.Task[None], _Conn]] = {}
        self._submitter: ThreadPoolExecutor | None = None
        self._closing = False

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
        self._submitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hj212-submit")
        server = await asyncio.start_server(self._handle, self._host, self._port,
                                            backlog=min(self._max_connections, 4096), limit=_READ_CHUNK)
        summaries = asyncio.create_task(self._summaries(), name="hj212-summaries")
        try:
            self._bound_port = server.sockets[0].getsockname()[1]
            self._ready.set()
            log.info("hj212 gateway listening on %s:%d", self._host, self._bound_port)
            await server.serve_forever()
        finally:
            summaries.cancel()
            server.close()
            self._closing = True
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, summaries, return_exceptions=True)
            self._summarise()
            self._submitter.shutdown(wait=False, cancel_futures=True)
            self._ready.clear()
            self._closing = False

    # -- admission -------------------------------------------------------------------------

    def _admit(self, conn: _Conn) -> str | None:
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
        self._metrics.connections.set(len(self._conns))
        return None

    def _evict(self, conn: _Conn) -> None:
        conn.evicted = True
        self._forget(conn)
        self._count_refused("evicted")
        transport = conn.writer.transport
        if transport is not None:
            transport.abort()  # the handler sees the connection reset and ends

    def _forget(self, conn: _Conn) -> None:
        self._conns.pop(conn.task, None)
        mine = self._by_address.get(conn.address)
        if mine is not None:
            mine.pop(conn.task, None)
            if not mine:
                del self._by_address[conn.address]
        self._metrics.connections.set(len(self._conns))

    def _count_refused(self, reason: str) -> None:
        self._metrics.connections_refused.labels(reason).inc()
        self._refused_since[reason] = self._refused_since.get(reason, 0) + 1

    # -- one connection --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        address = source_address(peername[0] if isinstance(peername, tuple) else None)
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn(task, writer, peer, address, asyncio.get_running_loop().time())
        refused = self._admit(conn)
        if refused is not None:
            # Counted and summarised (not one log line each: a flood would flood the log).
            log.debug("hj212: refusing %s (%s)", peer, refused)
            self._count_refused(refused)
            writer.close()
            return
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # find half-open connections of monitors that lost power
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        pending: asyncio.Queue[_Pending | None] = asyncio.Queue(self._max_in_flight)
        answers = asyncio.create_task(self._write_answers(pending, writer, peer))
        try:
            await self._read_frames(reader, pending, conn)
            # EOF or timeout: let answers for what was received go out (the monitor may
            # have half-closed and still be reading), then close.
            await pending.put(None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(answers), self._write_timeout_s)
        except (ConnectionError, OSError) as exc:
            if not conn.evicted:
                log.info("hj212: %s connection error: %s", peer, exc)
        except asyncio.CancelledError:
            # serve() is shutting down. asyncio.streams logs a cancelled handler task as an
            # error, so end quietly; any other cancellation propagates.
            if not self._closing:
                raise
        finally:
            answers.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answers
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            self._connections.discard(task)
            self._forget(conn)

    async def _read_frames(self, reader: asyncio.StreamReader,
                           pending: asyncio.Queue[_Pending | None], conn: _Conn) -> None:
        decoder = FrameDecoder(max_data=self._max_frame)
        loop = asyncio.get_running_loop()
        peer = conn.peer
        frame_started = 0.0  # loop time when the decoder last went from empty to holding bytes
        bad_bytes = 0
        settle_failed = False  # the buffered bytes were not a frame without CR LF: wait for more
        while True:
            settling = False
            if decoder.pending:
                timeout = max(frame_started + self._frame_timeout_s - loop.time(), 0.0)
                why = f"slow_sender: frame not completed within {self._frame_timeout_s:g} s"
                if decoder.settleable and not settle_failed and timeout > _SETTLE_S:
                    # Maybe a whole frame sent without CR LF: if nothing follows soon, its CRC decides.
                    timeout, settling = _SETTLE_S, True
            else:
                timeout, why = self._idle_timeout_s, ""
            if not conn.authenticated:
                left = max(conn.opened + self._auth_timeout_s - loop.time(), 0.0)
                if left <= timeout:
                    timeout, why = left, f"auth_deadline: no logged-in frame within {self._auth_timeout_s:g} s"
                    settling = False
            try:
                chunk = await asyncio.wait_for(reader.read(_READ_CHUNK), timeout)
            except TimeoutError:
                if settling:
                    frames = decoder.settle()
                    settled_ms = self._now_ms()
                    for j, frame in enumerate(frames):
                        if await self._frame(frame, conn, settled_ms, pending) is _CLOSE:
                            await self._unread(frames[j + 1:], decoder, conn, settled_ms, pending)
                            return
                    if frames:
                        bad_bytes = 0
                    settle_failed = not frames
                    continue
                for err in decoder.flush(why or "idle timeout"):
                    await self._dispatch(decode_framing_error(err, received_ms=self._now_ms(), peer=peer),
                                         pending, conn)
                reason = why.partition(":")[0] or "idle"
                self._metrics.connections_closed.labels(reason).inc()
                # Idle monitors are worth a line; floods of idle connections only count.
                log.log(logging.DEBUG if reason == "auth_deadline" else logging.INFO,
                        "hj212: closing %s: %s", peer, why or "idle timeout")
                return
            if not chunk:
                for err in decoder.flush():
                    await self._dispatch(decode_framing_error(err, received_ms=self._now_ms(), peer=peer),
                                         pending, conn)
                return
            restart_timer = decoder.pending == 0
            settle_failed = False
            received_ms = self._now_ms()
            items = decoder.feed(chunk)
            for i, item in enumerate(items):
                restart_timer = True  # whatever is buffered now belongs to a new frame
                if isinstance(item, Frame):
                    bad_bytes = 0
                    if await self._frame(item, conn, received_ms, pending) is _CLOSE:
                        await self._unread(items[i + 1:], decoder, conn, received_ms, pending)
                        return
                else:
                    bad_bytes += item.discarded
                    await self._dispatch(decode_framing_error(item, received_ms=received_ms, peer=peer), pending,
                                         conn)
            if restart_timer and decoder.pending:
                frame_started = loop.time()
            if bad_bytes + decoder.discarding > self._max_bad_bytes:
                for err in decoder.flush():
                    await self._dispatch(decode_framing_error(err, received_ms=received_ms, peer=peer), pending,
                                         conn)
                self._metrics.connections_closed.labels("bad_bytes").inc()
                log.log(logging.INFO if conn.authenticated else logging.DEBUG,
                        "hj212: closing %s after %d bytes that are not HJ 212 frames", peer, bad_bytes)
                return

    async def _unread(self, rest: Sequence[Frame | FramingError], decoder: FrameDecoder, conn: _Conn,
                      received_ms: int, pending: asyncio.Queue[_Pending | None]) -> None:
        """What arrived after the frame that closed the connection: not checked, but still a
        dead letter each (or, beyond the rate of an unauthenticated source, counted)."""
        why = "not_checked: the connection was closed after a failed login before this frame was read"
        for item in [*rest, *decoder.flush(why)]:
            if isinstance(item, Frame):
                raw = RawMessage(topic_for(None, conn.peer), item.raw, received_ms, "hj212")
                await self._dispatch(Decoded(Rejected(raw, (why,))), pending, conn)
            else:
                await self._dispatch(decode_framing_error(item, received_ms=received_ms, peer=conn.peer), pending,
                                     conn)

    async def _frame(self, frame: Frame, conn: _Conn, received_ms: int,
                     pending: asyncio.Queue[_Pending | None]) -> bool | None:
        """Identity first: a locked MN/address is refused unchecked; a failed login is
        answered uniformly, counted, delayed; a good one marks the connection logged in."""
        h = read_header(frame.data)
        mn = h.mn
        if self._auth_required and mn not in conn.mns:
            lock = self._guard.locked(conn.address, mn)
            if lock is not None:
                self._metrics.locked_frames.inc()
                self._metrics.connections_closed.labels("locked").inc()
                reason = (f"locked_out: {'address' if lock.scope == 'address' else 'MN'} {lock.subject} is locked "
                          f"for {lock.lockout_s:.0f} s more after {lock.failures} failed logins; PW not checked")
                raw = RawMessage(topic_for(mn, conn.peer), frame.raw, received_ms, "hj212")
                await self._dispatch(Decoded(Rejected(raw, (reason,))), pending, conn)
                return _CLOSE
        decoded = decode_frame(frame, self._ctx, received_ms=received_ms, peer=conn.peer,
                               reassembler=self._reassembler)
        failure = _identity_failure(decoded.outcome)
        if failure is None or not self._auth_required:
            if failure is None and mn not in conn.mns:
                conn.mns.add(mn)
                self._guard.success(conn.address, mn)
            await self._dispatch(decoded, pending, conn)
            return None
        if failure == "bad_crc" and mn in conn.mns:
            await self._dispatch(decoded, pending, conn)  # a line error on a logged-in link: QnRtn 9
            return None
        if failure == "unknown_mn":
            hmac.compare_digest((h.get("PW") or "").encode(), _DUMMY_PW)  # the same work as a wrong PW
        self._metrics.auth_failures.inc()
        verdict = self._guard.failure(conn.address, mn)
        for lock in verdict.lockouts:
            await self._lockout(lock)
        answer = refusal_answer(h, frame) if h.wants_answer and verdict.answer else None
        if verdict.delay_s:
            await asyncio.sleep(verdict.delay_s)  # the answer, and this connection, wait
        await self._dispatch(Decoded(decoded.outcome, answer), pending, conn)
        if verdict.close:
            self._metrics.connections_closed.labels("locked" if verdict.lockouts or not verdict.answer
                                                    else "backoff").inc()
            return _CLOSE
        return None

    async def _lockout(self, lock: Lockout) -> None:
        """Once per lockout: one log line (no password), a counter, and an event the alert
        engine turns into the `hj212_login_lockout` alert."""
        self._metrics.lockouts.labels(lock.scope).inc()
        self._metrics.locked_subjects.set(self._guard.locked_count())
        log.warning("hj212: %s %s locked out for %.0f s after %d failed logins (unknown MN, wrong PW or bad CRC)",
                    "address" if lock.scope == "address" else "MN", lock.subject, lock.lockout_s, lock.failures)
        assert self._submitter is not None
        await asyncio.get_running_loop().run_in_executor(
            self._submitter, self._sink.submit, lockout_outcome(lock, now_ms=self._now_ms()), None)

    async def _dispatch(self, decoded: Decoded, pending: asyncio.Queue[_Pending | None],
                        conn: _Conn | None = None) -> None:
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[bool] = loop.create_future()
        outcome: Outcome = decoded.outcome
        if (conn is not None and not conn.authenticated and isinstance(outcome, Rejected)
                and not self._limiter.allow(conn.address)):
            # Beyond the per-source rate: counted (metrics, the summary line), not stored.
            self._metrics.deadletters_dropped.inc()
            durable.set_result(True)
            await pending.put((durable, decoded.answer))
            return

        def on_durable(ok: bool) -> None:  # called on the sink's committer thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to answer
                loop.call_soon_threadsafe(_settle, durable, ok)

        # Queue first: a full queue pauses reading before anything more is submitted.
        await pending.put((durable, decoded.answer))
        assert self._submitter is not None
        await loop.run_in_executor(self._submitter, self._sink.submit, outcome, on_durable)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self._summary_interval_s)
            self._summarise()

    def _summarise(self) -> None:
        """One log line per interval for what floods would otherwise log line by line."""
        self._metrics.locked_subjects.set(self._guard.locked_count())
        dropped = self._limiter.take_summary()
        refused, self._refused_since = self._refused_since, {}
        if dropped:
            top = sorted(dropped.items(), key=lambda kv: -kv[1])[:5]
            log.warning("hj212: %d dead letters from %d unauthenticated source(s) beyond the rate of %g/s were "
                        "counted, not stored, in the last %g s (most: %s)", sum(dropped.values()), len(dropped),
                        self._guard.policy.deadletter_rate, self._summary_interval_s,
                        ", ".join(f"{a} {n}" for a, n in top))
        if refused:
            log.warning("hj212: connections refused or evicted in the last %g s: %s", self._summary_interval_s,
                        ", ".join(f"{k} {v}" for k, v in sorted(refused.items())))

    async def _write_answers(self, pending: asyncio.Queue[_Pending | None],
                             writer: asyncio.StreamWriter, peer: str) -> None:
        # Keeps draining `pending` even after the socket broke, so the reader never blocks
        # on a queue nobody empties.
        while (item := await pending.get()) is not None:
            durable, answer = item
            ok = await durable
            if not ok:
                # Not stored: stay silent so the monitor re-sends (HJ 212 retry on no answer).
                log.warning("hj212: outcome from %s not durable; no answer sent", peer)
                continue
            if answer is None or writer.is_closing():
                continue
            writer.write(answer)
            try:
                await asyncio.wait_for(writer.drain(), self._write_timeout_s)
            except (TimeoutError, ConnectionError, OSError):
                log.info("hj212: %s does not read its answers; closing", peer)
                writer.close()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _settle(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)


def _identity_failure(outcome: Outcome) -> str | None:
    """`bad_crc`, `unknown_mn`, `wrong_pw` when the frame failed the identity checks of
    `decode_frame` (CRC → MN → PW, in that order), None when it passed them."""
    if isinstance(outcome, Rejected) and outcome.reasons:
        code = outcome.reasons[0].partition(":")[0]
        if code in ("bad_crc", "unknown_mn", "wrong_pw"):
            return code
    return None


def gateway_from_settings(settings: Settings, *, registry: Registry, sink: Sink, host: str, port: int,
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
