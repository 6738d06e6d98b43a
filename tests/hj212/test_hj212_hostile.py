"""Attacks on the running gateway over real TCP (README "On a hostile network").

The attacker connects from 127.0.0.1 and the real monitor from 127.0.0.2 (Linux routes
all of 127/8 to the loopback interface), so that the two are different source addresses.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable

import pytest

from citywatch.registry import Device, Registry
from ingest.hj212 import FrameDecoder, read_header
from ingest.hj212.framing import Frame, encode_frame
from ingest.hj212.guard import GuardPolicy
from ingest.hj212.metrics import GatewayMetrics
from ingest.hj212.probe import guess_frame, guess_rate
from ingest.hj212.testing import MemorySink, read_answer
from tests.hj212.conftest import running
from tests.hj212.samples import MN, PW, REALTIME

ATTACKER, MONITOR = "127.0.0.1", "127.0.0.2"
MODBUS_MN = "4A4300000000000000D00002"
FAST = GuardPolicy(max_failures=10, backoff_after=3, backoff_base_s=0.05, backoff_max_s=0.2, lockout_s=60)


def run(coro: Awaitable[None], timeout: float = 120) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def registry() -> Registry:
    devs = [Device(id="D00001", site="S0001", kind="dust", hj212_mn=MN, hj212_pw=PW),
            Device(id="D00002", site="S0001", kind="dust", hj212_mn=MODBUS_MN, hj212_pw=PW, hj212_crc="modbus")]
    return Registry({d.id: d for d in devs}, {d.hj212_mn: d for d in devs if d.hj212_mn})


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder, self.backlog = FrameDecoder(), list[Frame]()

    @classmethod
    async def connect(cls, port: int, source: str = MONITOR) -> "Client":
        return cls(*await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)))

    async def exchange(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send one frame, return the raw answer frame (b"" when the gateway closed instead)."""
        self.writer.write(data)
        await self.writer.drain()
        try:
            frame = await asyncio.wait_for(read_answer(self.reader, self.decoder, self.backlog), timeout)
        except ConnectionError:
            return b""
        return frame.raw

    def close(self) -> None:
        self.writer.close()


def test_300_wrong_passwords_are_not_all_answered_and_the_monitor_keeps_working() -> None:
    with MemorySink() as sink:
        async def main() -> None:
            async with running(registry(), sink, guard=FAST) as gw:
                monitor = await Client.connect(gw.bound_port)
                assert b"CN=9014" in await monitor.exchange(REALTIME)  # logged in before the attack
                res = await guess_rate("127.0.0.1", gw.bound_port, mn=MN, seconds=30, connections=4,
                                       source=ATTACKER, max_guesses=300)
                assert res.sent == 300
                # 3 refused at once, the next 6 only after a growing delay with the connection
                # closed, then the address and the MN are locked: no answer, connection closed.
                assert res.refusals <= FAST.max_failures - 1 < 300
                assert res.other_answers == 0
                assert res.closed + res.refused_connections >= 300 - FAST.max_failures
                # The monitor that logged in from its own address still gets through, on its
                # open connection and on a new one (the MN is locked for everyone else).
                assert b"CN=9014" in await monitor.exchange(REALTIME)
                again = await Client.connect(gw.bound_port)
                assert b"CN=9014" in await again.exchange(REALTIME)
                stranger = await Client.connect(gw.bound_port, "127.0.0.3")
                assert await stranger.exchange(REALTIME) == b""  # locked MN, right PW: not even checked
                for c in (monitor, again, stranger):
                    c.close()
                m: GatewayMetrics = gw.metrics
                assert m.lockouts.labels("address")._value.get() == 1
                assert m.lockouts.labels("mn")._value.get() == 1
                assert m.auth_failures._value.get() == FAST.max_failures  # nothing after the lockout was checked
        run(main())
        lockouts = [e for o in sink.accepted for e in o.events]
        assert sorted(e.device for e in lockouts) == ["ip-127-0-0-1", f"mn-{MN}"]
        reasons = [r.reasons[0].split(":")[0] for r in sink.rejected]
        # stored up to the rate limit (a delayed refusal may find the bucket emptied by the
        # locked frames of the attacker's other connections): counted either way
        assert 1 <= reasons.count("wrong_pw") <= FAST.max_failures and "locked_out" in reasons
        assert len(sink.rejected) <= FAST.deadletter_burst + 30
        assert all("PW=" not in reason for r in sink.rejected for reason in r.reasons)


def test_unknown_mn_and_wrong_pw_get_the_same_answer_after_the_same_wait() -> None:
    def frame(mn: str, crc: str = "strict") -> bytes:
        return encode_frame(guess_frame(mn, "not-the-pw", 7)[6:-6], crc=crc)  # type: ignore[arg-type]

    with MemorySink(delay_s=0.2) as sink:  # answers wait for the (simulated) fsync
        async def main() -> None:
            async with running(registry(), sink, guard=GuardPolicy(max_failures=100, backoff_after=100)) as gw:
                answers: dict[str, bytes] = {}
                waits: dict[str, float] = {}
                for name, data in (("wrong_pw", frame(MN)), ("unknown_mn", frame("4A43000000000000000XXXXX")),
                                   # a registered device with another CRC: no CRC answer tells it apart
                                   ("modbus_device", frame(MODBUS_MN)), ("no_mn", frame(""))):
                    c = await Client.connect(gw.bound_port, ATTACKER)
                    t0 = time.monotonic()
                    answers[name] = await c.exchange(data)
                    waits[name] = time.monotonic() - t0
                    c.close()
                assert len(set(answers.values())) == 1, answers
                answer = read_header(next(iter(answers.values()))[6:-6])
                assert (answer.get("CN"), answer.cp, answer.get("MN"), answer.get("PW")) == ("9011", "QnRtn=3",
                                                                                               None, None)
                assert all(w >= 0.2 for w in waits.values()), waits  # both stored first, then answered
        run(main())
        assert [r.reasons[0].split(":")[0] for r in sink.rejected] == ["wrong_pw", "unknown_mn", "bad_crc",
                                                                       "unknown_mn"]


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def test_2500_idle_connections_from_one_address_do_not_keep_a_monitor_out() -> None:
    _raise_nofile(4096 + 2 * 2500)  # both ends of every connection live in this process
    with MemorySink() as sink:
        async def main() -> None:
            # The defaults (2,000 connections, 256 per address) but a short login deadline.
            async with running(registry(), sink, auth_timeout_s=3.0) as gw:
                sem = asyncio.Semaphore(200)  # a connect storm overflows the listen backlog
                idle: list[Client] = []

                async def one() -> None:
                    async with sem:
                        try:
                            idle.append(await Client.connect(gw.bound_port, ATTACKER))
                        except OSError:
                            pass

                try:
                    await asyncio.gather(*(one() for _ in range(2500)))
                    assert len(idle) == 2500  # all connected; the gateway closed most of them
                    await asyncio.sleep(0.2)
                    assert gw.connections <= 256
                    monitor = await Client.connect(gw.bound_port, MONITOR)
                    assert b"CN=9014" in await monitor.exchange(REALTIME)
                    # behind the attacker's own address too: an idle connection gives way
                    neighbour = await Client.connect(gw.bound_port, ATTACKER)
                    assert b"CN=9014" in await neighbour.exchange(REALTIME)
                    # and the login deadline closes every idle one
                    for _ in range(100):
                        if gw.connections == 2:
                            break
                        await asyncio.sleep(0.1)
                    assert gw.connections == 2
                    m: GatewayMetrics = gw.metrics
                    assert m.connections_refused.labels("evicted")._value.get() >= 2500 - 256
                    assert m.connections_closed.labels("auth_deadline")._value.get() >= 1
                    monitor.close()
                    neighbour.close()
                finally:
                    for c in idle:
                        c.close()
                    await asyncio.gather(*(c.writer.wait_closed() for c in idle), return_exceptions=True)
        run(main())
        assert len(sink.accepted) == 2


def test_garbage_from_unauthenticated_sources_is_rate_limited_not_stored() -> None:
    policy = GuardPolicy(deadletter_rate=1.0, deadletter_burst=20)
    garbage = b"##00x1junk\r\n" * 1000  # 1,000 framing errors per connection
    with MemorySink() as sink:
        async def main() -> None:
            async with running(registry(), sink, guard=policy) as gw:
                for _ in range(10):
                    c = await Client.connect(gw.bound_port, ATTACKER)
                    c.writer.write(garbage)
                    await c.writer.drain()
                    c.writer.write_eof()
                    await asyncio.wait_for(c.reader.read(), 10)  # the gateway closes after EOF
                    c.close()
                # a logged-in monitor's bad frames are always stored
                monitor = await Client.connect(gw.bound_port, MONITOR)
                assert b"CN=9014" in await monitor.exchange(REALTIME)
                monitor.writer.write(b"##00x1junk\r\n" * 50)
                monitor.writer.write_eof()  # the last error ends at EOF (it might go on to the next ##)

                def from_(source: str) -> int:
                    return sum(1 for r in sink.rejected if r.raw.topic.startswith(f"hj212/{source}:"))

                for _ in range(100):
                    if from_(MONITOR) >= 50:
                        break
                    await asyncio.sleep(0.05)
                monitor.close()
                assert from_(MONITOR) == 50
                stored = from_(ATTACKER)
                dropped = gw.metrics.deadletters_dropped._value.get()
                assert stored + dropped == 10_000
                assert 20 <= stored <= 20 + 60  # the burst, plus 1/s for the seconds this took
        run(main())


def test_the_refusal_uses_the_requests_crc_not_the_registered_devices() -> None:
    from ingest.hj212.crc import crc_ok
    from ingest.hj212.session import refusal_answer

    for crc in ("strict", "modbus"):
        [req] = FrameDecoder().feed(encode_frame(guess_frame("ANY", "x", 1)[6:-6], crc=crc))  # type: ignore[arg-type]
        assert isinstance(req, Frame)
        [ans] = FrameDecoder().feed(refusal_answer(read_header(req.data), req))
        assert isinstance(ans, Frame) and crc_ok(ans.data, ans.crc, crc)  # type: ignore[arg-type]
        assert b"MN=" not in ans.data and b"PW=" not in ans.data and b"QnRtn=3" in ans.data


def test_every_frame_is_accounted_for_when_a_failed_login_closes_the_connection() -> None:
    with MemorySink() as sink:
        async def main() -> None:
            async with running(registry(), sink, guard=FAST) as gw:
                c = await Client.connect(gw.bound_port, ATTACKER)
                c.writer.write(b"".join(guess_frame(MN, f"wrong{i}", i) for i in range(6)) + b"##0100QN=")
                answers = [await c.exchange(b"") for _ in range(5)]
                # three refusals at once, the fourth after its delay, then the connection is closed
                assert [b"QnRtn=3" in a for a in answers] == [True, True, True, True, False]
                c.close()
        run(main())
        reasons = [r.reasons[0].split(":")[0] for r in sink.rejected]
        assert reasons == ["wrong_pw"] * 4 + ["not_checked"] * 3  # two frames and the cut-off tail
