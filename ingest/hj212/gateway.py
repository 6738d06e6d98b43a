"""The HJ 212 TCP gateway: monitors connect, upload frames, get answers after fsync.

Per connection: bytes → `FrameDecoder` → `decode_*` → `Sink.submit` → (durable) → answer.
Answers go out in arrival order because one writer task per connection awaits the
durability of each outcome in turn. The bounded in-flight queue is the backpressure:
when the sink is slow the reader stops reading and TCP flow control pushes back on the
monitor; no buffer grows without bound.

Lifecycle: `serve()` binds, sets `bound_port`, and runs until cancelled; cancelling it
closes the listener and every connection. Outcomes already submitted stay with the sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

from citywatch.registry import Registry
from ingest.hj212.decode import DecodeContext, Decoded, decode_frame, decode_framing_error
from ingest.hj212.framing import DEFAULT_MAX_DATA, Frame, FrameDecoder
from ingest.hj212.reassembly import Reassembler
from ingest.types import Sink

log = logging.getLogger(__name__)

_READ_CHUNK = 16 * 1024
_SETTLE_S = 0.25  # a frame without CR LF is taken once the input has paused this long
_Pending = tuple["asyncio.Future[bool]", bytes | None]


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`idle_timeout_s`: close a connection silent for this long (monitors report every
        10 s - 1 h). `frame_timeout_s`: a started frame must complete within this (slow
        senders). `max_frame`: cap on the data length (the field allows 9999).
        `max_in_flight`: frames per connection awaiting durability before reading pauses.
        `max_bad_bytes`: framing-error bytes since the last good frame before the
        connection is closed (a port scanner or a monitor speaking another protocol)."""
        self._ctx = DecodeContext(registry=registry, tz=ZoneInfo(tz), max_future_s=max_future_s)
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
        self._bound_port: int | None = None
        self._ready = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self._submitter: ThreadPoolExecutor | None = None
        self._closing = False
        self._reassembler = Reassembler()  # split uploads (PNUM > 1); monitors may reconnect mid-upload

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
        try:
            self._bound_port = server.sockets[0].getsockname()[1]
            self._ready.set()
            log.info("hj212 gateway listening on %s:%d", self._host, self._bound_port)
            await server.serve_forever()
        finally:
            server.close()
            self._closing = True
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            self._submitter.shutdown(wait=False, cancel_futures=True)
            self._ready.clear()
            self._closing = False

    # -- one connection --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        if len(self._connections) >= self._max_connections:
            log.warning("hj212: refusing %s, %d connections open", peer, len(self._connections))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # find half-open connections of monitors that lost power
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        pending: asyncio.Queue[_Pending | None] = asyncio.Queue(self._max_in_flight)
        answers = asyncio.create_task(self._write_answers(pending, writer, peer))
        try:
            await self._read_frames(reader, pending, peer)
            # EOF or timeout: let answers for what was received go out (the monitor may
            # have half-closed and still be reading), then close.
            await pending.put(None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(answers), self._write_timeout_s)
        except (ConnectionError, OSError) as exc:
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

    async def _read_frames(self, reader: asyncio.StreamReader,
                           pending: asyncio.Queue[_Pending | None], peer: str) -> None:
        decoder = FrameDecoder(max_data=self._max_frame)
        loop = asyncio.get_running_loop()
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
            try:
                chunk = await asyncio.wait_for(reader.read(_READ_CHUNK), timeout)
            except TimeoutError:
                if settling:
                    frames = decoder.settle()
                    for frame in frames:
                        await self._dispatch(decode_frame(frame, self._ctx, received_ms=self._now_ms(), peer=peer,
                                                          reassembler=self._reassembler), pending)
                    if frames:
                        bad_bytes = 0
                    settle_failed = not frames
                    continue

                for err in decoder.flush(why):
                    await self._dispatch(decode_framing_error(err, received_ms=self._now_ms(), peer=peer), pending)
                log.info("hj212: closing %s: %s", peer, why or "idle timeout")
                return
            if not chunk:
                for err in decoder.flush():
                    await self._dispatch(decode_framing_error(err, received_ms=self._now_ms(), peer=peer), pending)
                return
            restart_timer = decoder.pending == 0
            settle_failed = False
            received_ms = self._now_ms()
            for item in decoder.feed(chunk):
                restart_timer = True  # whatever is buffered now belongs to a new frame
                if isinstance(item, Frame):
                    bad_bytes = 0
                    decoded = decode_frame(item, self._ctx, received_ms=received_ms, peer=peer,
                                           reassembler=self._reassembler)
                else:
                    bad_bytes += item.discarded
                    decoded = decode_framing_error(item, received_ms=received_ms, peer=peer)
                await self._dispatch(decoded, pending)
            if restart_timer and decoder.pending:
                frame_started = loop.time()
            if bad_bytes + decoder.discarding > self._max_bad_bytes:
                for err in decoder.flush():
                    await self._dispatch(decode_framing_error(err, received_ms=received_ms, peer=peer), pending)
                log.warning("hj212: closing %s after %d bytes that are not HJ 212 frames", peer, bad_bytes)
                return

    async def _dispatch(self, decoded: Decoded, pending: asyncio.Queue[_Pending | None]) -> None:
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[bool] = loop.create_future()

        def on_durable(ok: bool) -> None:  # called on the sink's committer thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to answer
                loop.call_soon_threadsafe(_settle, durable, ok)

        # Queue first: a full queue pauses reading before anything more is submitted.
        await pending.put((durable, decoded.answer))
        assert self._submitter is not None
        await loop.run_in_executor(self._submitter, self._sink.submit, decoded.outcome, on_durable)

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
