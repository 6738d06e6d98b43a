"""One HJ 212 connection: frames in, identity checked, outcomes to the sink, answers out.

Per connection: bytes → `FrameDecoder` → `decode_*` → `Sink.submit` → (durable) → answer.
Answers go out in arrival order because one writer task per connection awaits the
durability of each outcome in turn. The bounded in-flight queue is the backpressure:
when the sink is slow the reader stops reading and TCP flow control pushes back on the
monitor; no buffer grows without bound.

Identity is checked frame by frame until the connection has logged in: a locked MN or
address is refused unchecked, a failed login is answered uniformly (`refusal_answer`),
counted and delayed (`guard.LoginGuard`), a good one marks the connection logged in.

A `Session` is the gateway's own part (gateway.py: the listener, admission, lockouts and
summaries): it reads the gateway's limits and shares its guard, decoder context, metrics
and submit thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from citywatch.model import RawMessage
from ingest.hj212.codes import ST_SYSTEM, VERSION_SHIFT, Cn, QnRtn
from ingest.hj212.crc import CrcMode, crc_ok
from ingest.hj212.decode import DecodeContext, Decoded, decode_frame, decode_framing_error, topic_for
from ingest.hj212.framing import Frame, FrameDecoder, FramingError, encode_frame
from ingest.hj212.guard import Lockout, LoginGuard, SourceRateLimiter
from ingest.hj212.metrics import GatewayMetrics
from ingest.hj212.packet import Header, read_header
from ingest.hj212.reassembly import Reassembler
from ingest.types import Outcome, Rejected, Sink


class GatewayParts(Protocol):
    """What a session shares with its gateway (ingest/hj212/gateway.py): the limits, the
    login guard, the decode context, metrics, and the one thread that hands outcomes to the
    sink. A protocol, so this module does not import the gateway that imports it."""

    max_frame: int
    max_in_flight: int
    max_bad_bytes: int
    idle_timeout_s: float
    frame_timeout_s: float
    write_timeout_s: float
    auth_timeout_s: float
    auth_required: bool
    closing: bool
    decode_ctx: DecodeContext
    reassembler: Reassembler
    guard: LoginGuard
    limiter: SourceRateLimiter
    metrics: GatewayMetrics
    sink: Sink
    submitter: ThreadPoolExecutor | None

    def now_ms(self) -> int: ...

    async def lockout(self, lock: Lockout) -> None: ...

log = logging.getLogger("ingest.hj212.gateway")

READ_CHUNK = 16 * 1024
_SETTLE_S = 0.25  # a frame without CR LF is taken once the input has paused this long
_Pending = tuple["asyncio.Future[bool]", bytes | None]
_DUMMY_PW = b"\x00" * 24  # compared against when the MN is unknown, so both failures cost the same
_CLOSE = True  # _frame(): close the connection after this frame


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


class Session:
    """One connection: its identity state (what the gateway's admission looks at) and the
    reader and answer-writer tasks."""

    def __init__(self, gw: GatewayParts, task: asyncio.Task[None], writer: asyncio.StreamWriter, peer: str,
                 address: str, opened: float) -> None:
        self.gw = gw
        self.task, self.writer, self.peer, self.address, self.opened = task, writer, peer, address, opened
        self.mns: set[str | None] = set()  # MNs that logged in on this connection
        self.evicted = False
        self.pending: asyncio.Queue[_Pending | None] = asyncio.Queue(gw.max_in_flight)

    @property
    def authenticated(self) -> bool:
        return bool(self.mns)

    async def run(self, reader: asyncio.StreamReader) -> None:
        """Read and answer until EOF, a timeout or an error; then close the connection."""
        writer = self.writer
        sock = writer.get_extra_info("socket")
        if sock is not None:  # find half-open connections of monitors that lost power
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        answers = asyncio.create_task(self._write_answers())
        try:
            await self._read_frames(reader)
            # EOF or timeout: let answers for what was received go out (the monitor may
            # have half-closed and still be reading), then close.
            await self.pending.put(None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(answers), self.gw.write_timeout_s)
        except (ConnectionError, OSError) as exc:
            if not self.evicted:
                log.info("hj212: %s connection error: %s", self.peer, exc)
        except asyncio.CancelledError:
            # serve() is shutting down. asyncio.streams logs a cancelled handler task as an
            # error, so end quietly; any other cancellation propagates.
            if not self.gw.closing:
                raise
        finally:
            answers.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answers
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _read_frames(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(max_data=self.gw.max_frame)
        loop = asyncio.get_running_loop()
        peer = self.peer
        frame_started = 0.0  # loop time when the decoder last went from empty to holding bytes
        bad_bytes = 0
        settle_failed = False  # the buffered bytes were not a frame without CR LF: wait for more
        while True:
            settling = False
            if decoder.pending:
                timeout = max(frame_started + self.gw.frame_timeout_s - loop.time(), 0.0)
                why = f"slow_sender: frame not completed within {self.gw.frame_timeout_s:g} s"
                if decoder.settleable and not settle_failed and timeout > _SETTLE_S:
                    # Maybe a whole frame sent without CR LF: if nothing follows soon, its CRC decides.
                    timeout, settling = _SETTLE_S, True
            else:
                timeout, why = self.gw.idle_timeout_s, ""
            if not self.authenticated:
                left = max(self.opened + self.gw.auth_timeout_s - loop.time(), 0.0)
                if left <= timeout:
                    timeout, why = left, f"auth_deadline: no logged-in frame within {self.gw.auth_timeout_s:g} s"
                    settling = False
            try:
                chunk = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
            except TimeoutError:
                if settling:
                    frames = decoder.settle()
                    settled_ms = self.gw.now_ms()
                    for j, frame in enumerate(frames):
                        if await self._frame(frame, settled_ms) is _CLOSE:
                            await self._unread(frames[j + 1:], decoder, settled_ms)
                            return
                    if frames:
                        bad_bytes = 0
                    settle_failed = not frames
                    continue
                for err in decoder.flush(why or "idle timeout"):
                    await self._dispatch(decode_framing_error(err, received_ms=self.gw.now_ms(), peer=peer))
                reason = why.partition(":")[0] or "idle"
                self.gw.metrics.connections_closed.labels(reason).inc()
                # Idle monitors are worth a line; floods of idle connections only count.
                log.log(logging.DEBUG if reason == "auth_deadline" else logging.INFO,
                        "hj212: closing %s: %s", peer, why or "idle timeout")
                return
            if not chunk:
                for err in decoder.flush():
                    await self._dispatch(decode_framing_error(err, received_ms=self.gw.now_ms(), peer=peer))
                return
            restart_timer = decoder.pending == 0
            settle_failed = False
            received_ms = self.gw.now_ms()
            items = decoder.feed(chunk)
            for i, item in enumerate(items):
                restart_timer = True  # whatever is buffered now belongs to a new frame
                if isinstance(item, Frame):
                    bad_bytes = 0
                    if await self._frame(item, received_ms) is _CLOSE:
                        await self._unread(items[i + 1:], decoder, received_ms)
                        return
                else:
                    bad_bytes += item.discarded
                    await self._dispatch(decode_framing_error(item, received_ms=received_ms, peer=peer))
            if restart_timer and decoder.pending:
                frame_started = loop.time()
            if bad_bytes + decoder.discarding > self.gw.max_bad_bytes:
                for err in decoder.flush():
                    await self._dispatch(decode_framing_error(err, received_ms=received_ms, peer=peer))
                self.gw.metrics.connections_closed.labels("bad_bytes").inc()
                log.log(logging.INFO if self.authenticated else logging.DEBUG,
                        "hj212: closing %s after %d bytes that are not HJ 212 frames", peer, bad_bytes)
                return

    async def _unread(self, rest: Sequence[Frame | FramingError], decoder: FrameDecoder, received_ms: int) -> None:
        """What arrived after the frame that closed the connection: not checked, but still a
        dead letter each (or, beyond the rate of an unauthenticated source, counted)."""
        why = "not_checked: the connection was closed after a failed login before this frame was read"
        for item in [*rest, *decoder.flush(why)]:
            if isinstance(item, Frame):
                raw = RawMessage(topic_for(None, self.peer), item.raw, received_ms, "hj212")
                await self._dispatch(Decoded(Rejected(raw, (why,))))
            else:
                await self._dispatch(decode_framing_error(item, received_ms=received_ms, peer=self.peer))

    async def _frame(self, frame: Frame, received_ms: int) -> bool | None:
        """Identity first: a locked MN/address is refused unchecked; a failed login is
        answered uniformly, counted, delayed; a good one marks the connection logged in."""
        h = read_header(frame.data)
        mn = h.mn
        if self.gw.auth_required and mn not in self.mns:
            lock = self.gw.guard.locked(self.address, mn)
            if lock is not None:
                self.gw.metrics.locked_frames.inc()
                self.gw.metrics.connections_closed.labels("locked").inc()
                reason = (f"locked_out: {'address' if lock.scope == 'address' else 'MN'} {lock.subject} is locked "
                          f"for {lock.lockout_s:.0f} s more after {lock.failures} failed logins; PW not checked")
                raw = RawMessage(topic_for(mn, self.peer), frame.raw, received_ms, "hj212")
                await self._dispatch(Decoded(Rejected(raw, (reason,))))
                return _CLOSE
        decoded = decode_frame(frame, self.gw.decode_ctx, received_ms=received_ms, peer=self.peer,
                               reassembler=self.gw.reassembler)
        failure = _identity_failure(decoded.outcome)
        if failure is None or not self.gw.auth_required:
            if failure is None and mn not in self.mns:
                self.mns.add(mn)
                self.gw.guard.success(self.address, mn)
            await self._dispatch(decoded)
            return None
        if failure == "bad_crc" and mn in self.mns:
            await self._dispatch(decoded)  # a line error on a logged-in link: QnRtn 9
            return None
        if failure == "unknown_mn":
            hmac.compare_digest((h.get("PW") or "").encode(), _DUMMY_PW)  # the same work as a wrong PW
        self.gw.metrics.auth_failures.inc()
        verdict = self.gw.guard.failure(self.address, mn)
        for lock in verdict.lockouts:
            await self.gw.lockout(lock)
        answer = refusal_answer(h, frame) if h.wants_answer and verdict.answer else None
        if verdict.delay_s:
            await asyncio.sleep(verdict.delay_s)  # the answer, and this connection, wait
        await self._dispatch(Decoded(decoded.outcome, answer))
        if verdict.close:
            self.gw.metrics.connections_closed.labels("locked" if verdict.lockouts or not verdict.answer
                                                    else "backoff").inc()
            return _CLOSE
        return None

    async def _dispatch(self, decoded: Decoded) -> None:
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[bool] = loop.create_future()
        outcome: Outcome = decoded.outcome
        if (not self.authenticated and isinstance(outcome, Rejected)
                and not self.gw.limiter.allow(self.address)):
            # Beyond the per-source rate: counted (metrics, the summary line), not stored.
            self.gw.metrics.deadletters_dropped.inc()
            durable.set_result(True)
            await self.pending.put((durable, decoded.answer))
            return

        def on_durable(ok: bool) -> None:  # called on the sink's committer thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to answer
                loop.call_soon_threadsafe(_settle, durable, ok)

        # Queue first: a full queue pauses reading before anything more is submitted.
        await self.pending.put((durable, decoded.answer))
        assert self.gw.submitter is not None
        await loop.run_in_executor(self.gw.submitter, self.gw.sink.submit, outcome, on_durable)

    async def _write_answers(self) -> None:
        # Keeps draining `pending` even after the socket broke, so the reader never blocks
        # on a queue nobody empties.
        while (item := await self.pending.get()) is not None:
            durable, answer = item
            ok = await durable
            if not ok:
                # Not stored: stay silent so the monitor re-sends (HJ 212 retry on no answer).
                log.warning("hj212: outcome from %s not durable; no answer sent", self.peer)
                continue
            if answer is None or self.writer.is_closing():
                continue
            self.writer.write(answer)
            try:
                await asyncio.wait_for(self.writer.drain(), self.gw.write_timeout_s)
            except (TimeoutError, ConnectionError, OSError):
                log.info("hj212: %s does not read its answers; closing", self.peer)
                self.writer.close()


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
