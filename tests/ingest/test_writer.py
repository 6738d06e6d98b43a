"""ingest.writer: the status-code policy (retry, split, isolate, create) with a scripted
transport, and the bad-point isolation against a real influxd."""

from __future__ import annotations

import asyncio
import gzip
import random

import httpx
import pytest

from citywatch.influx import InfluxClient
from citywatch.settings import Settings
from ingest.deadletters import DeadLetterStore
from ingest.metrics import IngestMetrics
from ingest.spool import Spool
from ingest.writer import InfluxWriter


def make_writer(tmp_path, url: str = "http://influx.test", transport=None, database: str = "w"):
    settings = Settings(influx_url=url, influx_database=database, data_dir=tmp_path)
    spool = Spool(tmp_path / "spool")
    dead = DeadLetterStore(tmp_path / "dead.sqlite3")
    client = InfluxClient(settings, transport=transport)
    writer = InfluxWriter(spool=spool, client=client, deadletters=dead, metrics=IngestMetrics(), batch_lines=1000,
                          max_backoff_s=0.05, rng=random.Random(1))
    return writer, spool, dead, client


class Script:
    """A transport answering each POST with the next status from a function of the body."""

    def __init__(self, answer):
        self.answer = answer
        self.bodies: list[list[bytes]] = []
        self.encodings: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/query":
            return httpx.Response(200, json={"results": [{}]})
        content = request.content
        if request.headers.get("content-encoding") == "gzip":
            content = gzip.decompress(content)
        self.encodings.append(request.headers.get("content-encoding"))
        body = content.strip().split(b"\n")
        self.bodies.append(body)
        status, text = self.answer(body, len(self.bodies))
        return httpx.Response(status, text=text)


def run(writer) -> int:
    return asyncio.run(writer.deliver_once())


def test_5xx_and_429_are_retried_until_stored(tmp_path):
    script = Script(lambda body, n: (503, "overloaded") if n == 1 else (429, "") if n == 2 else (204, ""))
    writer, spool, dead, _ = make_writer(tmp_path, transport=httpx.MockTransport(script))
    spool.append(["m f=1.0 1", "m f=2.0 2"])
    assert run(writer) == 2
    assert len(script.bodies) == 3 and spool.backlog_lines == 0 and dead.count() == 0


def test_413_splits_the_batch(tmp_path):
    script = Script(lambda body, n: (413, "too large") if len(body) > 2 else (204, ""))
    writer, spool, dead, _ = make_writer(tmp_path, transport=httpx.MockTransport(script))
    spool.append([f"m f={i}.0 {i}" for i in range(8)])
    assert run(writer) == 8
    stored = [line for body in script.bodies if len(body) <= 2 for line in body]
    assert sorted(stored) == sorted(f"m f={i}.0 {i}".encode() for i in range(8))


def test_400_isolates_the_bad_point_and_keeps_the_rest(tmp_path):
    bad = b"m f=oops 3"
    script = Script(lambda body, n: (400, "unable to parse") if bad in body else (204, ""))
    writer, spool, dead, _ = make_writer(tmp_path, transport=httpx.MockTransport(script))
    spool.append([f"m f={i}.0 {i}" for i in range(3)] + [bad.decode()] + [f"m f={i}.0 {i}" for i in range(4, 9)])
    assert run(writer) == 9
    (letter,) = dead.list()
    assert letter.payload == bad and letter.reasons[0].startswith("influx_rejected: 400")
    good = {line for body in script.bodies if bad not in body for line in body}
    assert len(good) == 8


def test_missing_database_is_created_then_written(tmp_path):
    created = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/query":
            created.append(request.content)
            return httpx.Response(200, json={"results": [{}]})
        return httpx.Response(204) if created else httpx.Response(404, text='{"error":"database not found"}')

    writer, spool, _, _ = make_writer(tmp_path, transport=httpx.MockTransport(handler))
    spool.append(["m f=1.0 1"])
    assert run(writer) == 1 and b"CREATE+DATABASE" in created[0]


def test_stop_interrupts_retries_without_losing_the_batch(tmp_path):
    writer, spool, _, _ = make_writer(tmp_path, transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    spool.append(["m f=1.0 1"])

    async def go():
        task = asyncio.create_task(writer.run())
        await asyncio.sleep(0.3)
        writer.request_stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    assert spool.backlog_lines == 1  # still there for the next start


@pytest.mark.integration
def test_real_influxd_type_conflict_is_dead_lettered_and_the_rest_stored(tmp_path, influx):
    writer, spool, dead, client = make_writer(tmp_path, url=influx.url, database="conflict")

    async def go() -> int:
        spool.append([f"dust,device=D1,site=S1 pm10={i}.5 {1_700_000_000_000 + i}" for i in range(5)])
        assert await writer.deliver_once() == 5
        spool.append(["dust,device=D1,site=S1 pm10=true 1700000001000"] +
                     [f"dust,device=D1,site=S1 pm10={i}.5 {1_700_000_100_000 + i}" for i in range(5)])
        assert await writer.deliver_once() == 6
        return await client.count("dust", "pm10")

    assert asyncio.run(go()) == 10
    (letter,) = dead.list()
    assert b"pm10=true" in letter.payload and "field type conflict" in letter.reasons[0]


@pytest.mark.parametrize("url,setting,gzipped", [
    ("http://127.0.0.1:8086", None, False), ("http://localhost:8086", None, False), ("http://[::1]:8086", None, False),
    ("https://influx.example.org", None, True), ("http://10.1.2.3:8086", None, True),
    ("http://127.0.0.1:8086", True, True), ("https://influx.example.org", False, False),
])
def test_bodies_are_gzipped_only_for_a_remote_influxdb_unless_configured(url, setting, gzipped):
    from citywatch.influx import InfluxClient
    from citywatch.settings import Settings

    client = InfluxClient(Settings(influx_url=url, influx_gzip=setting))
    assert client.gzip is gzipped


def test_a_local_influxdb_gets_plain_bodies_and_a_remote_one_gzip(tmp_path):
    for url, encoding in (("http://127.0.0.1:8086", None), ("http://influx.test", "gzip")):
        script = Script(lambda body, n: (204, ""))
        writer, spool, _, _ = make_writer(tmp_path / encoding.__class__.__name__, url=url,
                                          transport=httpx.MockTransport(script))
        spool.append([f"m f={i}.0 {i}" for i in range(300)])  # large enough for the threaded gzip path
        assert run(writer) == 300
        assert script.encodings == [encoding] and len(script.bodies[0]) == 300
