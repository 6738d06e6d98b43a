"""The TCP gateway end to end, with the in-memory sink."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable

import pytest

from citywatch.registry import Registry
from ingest.hj212 import FrameDecoder, read_header
from ingest.hj212.crc import crc_ok
from ingest.hj212.framing import Frame, encode_frame
from ingest.hj212.testing import MemorySink, fleet_registry, read_answer, run_fleet
from ingest.types import Accepted
from tests.hj212.conftest import running
from tests.hj212.samples import MINUTE, MN, REALTIME


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 50))  # type: ignore[arg-type]


class Client:
    """One monitor connection that reads answer frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder, self.backlog = FrameDecoder(), list[Frame]()

    @classmethod
    async def connect(cls, port: int) -> "Client":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 5.0) -> Frame:
        frame = await asyncio.wait_for(read_answer(self.reader, self.decoder, self.backlog), timeout)
        assert crc_ok(frame.data, frame.crc)
        return frame

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        return await asyncio.wait_for(self.reader.read(1), timeout) == b""


def with_gateway(registry: Registry, sink: MemorySink, **kw: object) -> Callable:
    """Runs the decorated `async body(gw, connect)` against a live gateway; closes its clients."""
    def deco(body: Callable[..., Awaitable[None]]) -> None:
        async def main() -> None:
            clients: list[Client] = []

            async def connect() -> Client:
                clients.append(client := await Client.connect(gw.bound_port))
                return client

            async with running(registry, sink, **kw) as gw:
                try:
                    await body(gw, connect)
                finally:
                    for c in clients:
                        c.writer.close()
                    await asyncio.gather(*(c.writer.wait_closed() for c in clients), return_exceptions=True)
        run(main())
    return deco


def test_answer_follows_durability(registry: Registry) -> None:
    with MemorySink(delay_s=0.3) as sink:
        @with_gateway(registry, sink)
        async def _(gw, connect) -> None:
            c = await connect()
            t0 = time.monotonic()
            await c.send(REALTIME)
            await asyncio.sleep(0.1)
            assert len(sink.outcomes) == 1 and c.backlog == []  # submitted, not yet durable
            frame = await c.answer()
            assert time.monotonic() - t0 >= 0.3
            h = read_header(frame.data)
            assert (h.get("CN"), h.qn, h.get("Flag")) == ("9014", "20240601120000000", "4")
        [out] = sink.outcomes
        assert isinstance(out, Accepted) and out.readings[0].values["pm10"] == 96.0


def test_bad_input_gets_specific_reasons_and_the_connection_survives(registry: Registry) -> None:
    bad_crc = REALTIME[:-6] + b"0000\r\n"
    wrong_pw = encode_frame(REALTIME[6:-6].replace(b"PW=123456", b"PW=999999"))
    unknown_mn = encode_frame(REALTIME[6:-6].replace(MN.encode(), b"4A4300000000000000D00002"))
    length_lie = b"##0400" + REALTIME[6:-6] + b"0000\r\n"  # and a CRC that does not prove the frame either
    with MemorySink() as sink:
        @with_gateway(registry, sink)
        async def _(gw, connect) -> None:
            c = await connect()
            # One read with everything, then the good packets: the stream must keep working.
            await c.send(b"GET / HTTP/1.0\r\n\r\n" + bad_crc + wrong_pw + unknown_mn + length_lie
                         + b"##00x1junk\r\n" + REALTIME + MINUTE)
            answers = [read_header((await c.answer()).data) for _ in range(4)]
            # Before the connection has logged in, a CRC error, a wrong PW and an unknown MN
            # are all failed logins with one answer (README "On a hostile network").
            assert [(a.get("CN"), a.cp) for a in answers] == [
                ("9011", "QnRtn=3"), ("9011", "QnRtn=3"), ("9011", "QnRtn=3"), ("9014", "")]
            for _ in range(50):  # MINUTE has Flag=4: no answer, wait for the sink instead
                if len(sink.outcomes) == 8:
                    break
                await asyncio.sleep(0.02)
            # still usable afterwards; logged in now, a line error gets its specific answer
            await c.send(REALTIME)
            assert read_header((await c.answer()).data).get("CN") == "9014"
            await c.send(bad_crc)
            assert read_header((await c.answer()).data).cp == "QnRtn=9"
            assert gw.connections == 1
        reasons = [r.reasons[0].split(":")[0] for r in sink.rejected]
        assert reasons == ["garbage", "bad_crc", "wrong_pw", "unknown_mn", "length_mismatch", "bad_length", "bad_crc"]
        assert all(r.raw.source == "hj212" for r in sink.rejected)
        assert sink.rejected[0].raw.topic.startswith("hj212/127.0.0.1:")  # no MN: the peer
        assert sink.rejected[1].raw.topic == f"hj212/{MN}"
        assert len(sink.accepted) == 3


def test_not_durable_means_no_answer(registry: Registry) -> None:
    with MemorySink(fail=True) as sink:
        @with_gateway(registry, sink)
        async def _(gw, connect) -> None:
            c = await connect()
            await c.send(REALTIME)
            with pytest.raises(TimeoutError):
                await c.answer(timeout=0.5)
            assert gw.connections == 1  # the monitor re-sends on the same connection


def test_half_closed_client_still_gets_its_answer(registry: Registry) -> None:
    with MemorySink(delay_s=0.1) as sink:
        @with_gateway(registry, sink)
        async def _(gw, connect) -> None:
            c = await connect()
            await c.send(REALTIME)
            c.writer.write_eof()
            assert read_header((await c.answer()).data).get("CN") == "9014"


def test_slow_sender_is_cut_off(registry: Registry) -> None:
    with MemorySink() as sink:
        @with_gateway(registry, sink, frame_timeout_s=0.3)
        async def _(gw, connect) -> None:
            c = await connect()
            await c.send(REALTIME[:10])
            await asyncio.sleep(0.2)
            await c.send(REALTIME[10:20])  # trickling does not extend the frame deadline
            assert await c.closed_by_peer(2.0)
        [rej] = sink.rejected
        assert rej.reasons[0].startswith("slow_sender") and rej.raw.payload == REALTIME[:20]


def test_idle_connection_is_closed(registry: Registry) -> None:
    with MemorySink() as sink:
        @with_gateway(registry, sink, idle_timeout_s=0.3)
        async def _(gw, connect) -> None:
            c = await connect()
            await c.send(REALTIME)
            await c.answer()
            assert await c.closed_by_peer(2.0)
            await asyncio.sleep(0.05)
            assert gw.connections == 0
        assert sink.rejected == []


def test_garbage_flood_closes_the_connection_not_the_service(registry: Registry) -> None:
    with MemorySink() as sink:
        @with_gateway(registry, sink, max_bad_bytes=4096)
        async def _(gw, connect) -> None:
            c = await connect()
            c.writer.write(b"\x16\x03\x01" + b"z" * 20_000)  # a TLS client hello, say
            assert await c.closed_by_peer(2.0)
            good = await connect()
            await good.send(REALTIME)
            await good.answer()
        assert sink.rejected and all(len(r.raw.payload) <= 4096 + 12 for r in sink.rejected)


def test_connection_cap_refuses_when_every_connection_is_logged_in(registry: Registry) -> None:
    with MemorySink() as sink:
        @with_gateway(registry, sink, max_connections=3)
        async def _(gw, connect) -> None:
            clients = [await connect() for _ in range(3)]
            for c in clients:
                await c.send(REALTIME)
                await c.answer()
            extra = await connect()
            assert await extra.closed_by_peer(2.0)
            await clients[0].send(REALTIME)
            await clients[0].answer()


def test_connection_cap_evicts_the_oldest_idle_connection(registry: Registry) -> None:
    with MemorySink() as sink:
        @with_gateway(registry, sink, max_connections=3)
        async def _(gw, connect) -> None:
            idle = [await connect() for _ in range(3)]
            await asyncio.sleep(0.1)
            monitor = await connect()
            assert await idle[0].closed_by_peer(2.0)  # the oldest one that never logged in
            await monitor.send(REALTIME)
            assert read_header((await monitor.answer()).data).get("CN") == "9014"
            assert gw.connections == 3


def test_fleet_of_1000_monitors_zero_loss() -> None:
    registry = fleet_registry(1000)
    with MemorySink(delay_s=0.005) as sink:
        @with_gateway(registry, sink, max_per_address=1000)  # the whole fleet comes from 127.0.0.1
        async def _(gw, connect) -> None:
            result = await run_fleet("127.0.0.1", gw.bound_port, monitors=1000, packets_each=5,
                                     registry=registry)
            assert result.errors == []
            assert (result.sent, result.answered) == (5000, 5000)
        assert sink.rejected == []
        readings = [r for a in sink.accepted for r in a.readings]
        assert len(readings) == 5000
        assert len({(r.device, r.ts_ms) for r in readings}) == 5000
        assert len({r.device for r in readings}) == 1000


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def test_2000_concurrent_idle_connections(registry: Registry) -> None:
    _raise_nofile(4096 + 2 * 2000)  # both ends of every connection live in this process
    with MemorySink() as sink:
        @with_gateway(registry, sink, max_connections=2000, max_per_address=2000)
        async def _(gw, connect) -> None:
            sem = asyncio.Semaphore(200)  # a connect storm overflows the listen backlog

            async def gated() -> Client:
                async with sem:
                    return await connect()

            clients = await asyncio.gather(*(gated() for _ in range(2000)))
            for _ in range(100):
                if gw.connections == 2000:
                    break
                await asyncio.sleep(0.05)
            assert gw.connections == 2000
            # every one of them is served, not just accepted
            await clients[-1].send(REALTIME)
            await clients[-1].answer()
            await clients[0].send(REALTIME)
            await clients[0].answer()


def test_a_frame_without_crlf_is_answered_once_the_monitor_waits(registry: Registry) -> None:
    """A monitor that sends no CR LF and then waits for its answer: the gateway takes the
    frame when the input pauses, because its CRC proves it; a late CR LF is eaten. A frame
    the CRC does not prove is not taken: it ends as a slow_sender dead letter."""
    with MemorySink() as sink:
        @with_gateway(registry, sink, frame_timeout_s=1.5)
        async def _(gw, connect) -> None:
            c = await connect()
            await c.send(REALTIME[:-2])
            assert read_header((await c.answer(timeout=3)).data).get("CN") == "9014"
            await c.send(b"\r\n" + MINUTE)  # the late CR LF, then a normal frame
            await c.send(REALTIME[:-6] + b"0000")  # no CR LF and a CRC that proves nothing
            with pytest.raises(TimeoutError):
                await c.answer(timeout=1.0)
            for _ in range(100):
                if len(sink.outcomes) == 3:
                    break
                await asyncio.sleep(0.05)
        assert [type(o).__name__ for o in sink.outcomes] == ["Accepted", "Accepted", "Rejected"]
        assert sink.rejected[0].reasons[0].startswith("slow_sender")
