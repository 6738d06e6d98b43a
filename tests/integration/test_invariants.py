"""The durability promise, pinned message by message (docs/invariants.md).

The real consumer, committer and spool run in this process against a real mosquitto (and
the real HJ 212 gateway over TCP); `tests/durability.py` records every spool write, every
fsync and every byte on every socket, in the order they happened. Then, for every single
acknowledgement that left:

- an MQTT PUBACK (on the consumer's socket, parsed from the bytes sent), or an HJ 212
  answer (on the gateway's socket),
- the reading of that message had been written to a spool segment, and that write had
  been fsynced (the fsync returned) before the acknowledgement was sent.

A slow disk (a sleep before each fsync) gives an acknowledgement sent too early the time
to reach the socket first, so a wrong order fails every run, not now and then. A failing
disk (fsync raising EIO) must acknowledge nothing until a later append succeeds.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from citywatch.influx import InfluxClient
from citywatch.registry import Registry
from citywatch.settings import Settings
from ingest import paho_adapter
from ingest.committer import Committer
from ingest.consumer import MqttConsumer
from ingest.deadletters import DeadLetterStore
from ingest.decode import Decoder
from ingest.hj212 import Hj212Gateway, read_header
from ingest.hj212.framing import FrameDecoder
from ingest.hj212.testing import encode_packet, fleet_registry, monitor_values, read_answer
from ingest.metrics import IngestMetrics
from ingest.spool import Spool
from ingest.writer import InfluxWriter
from tests.durability import Recorder, line_key, mqtt_packets
from tests.influx_proxy import RecordingInfluxProxy
from tests.support import Publisher, readings

pytestmark = pytest.mark.integration

PUBLISH, PUBACK = 3, 4
SLOW_FSYNC_S = 0.005


class Pipeline:
    """Spool, dead letters and committer as `build_ingest` wires them (no writer: the
    spool only fills, so every spool write is an append of the committer)."""

    def __init__(self, tmp_path) -> None:
        self.spool = Spool(tmp_path / "spool")
        self.deadletters = DeadLetterStore(tmp_path / "dead.sqlite3")
        self.committer = Committer(spool=self.spool, deadletters=self.deadletters, interval_s=0.02)

    def close(self) -> None:
        self.committer.stop()
        self.spool.close()
        self.deadletters.close()


def consumer_port(rec: Recorder, broker_port: int) -> int:
    """The local port of the socket that received PUBLISH packets from the broker (the
    consumer's; the publisher in this process only receives CONNACK and PUBACKs)."""
    ports = {e.local_port for e in rec.snapshot() if e.kind == "recv" and e.peer_port == broker_port}
    for port in ports:
        if any(p.type == PUBLISH for p in mqtt_packets(rec.snapshot(), kind="recv", local_port=port)):
            return port
    raise AssertionError("no socket of this process received a PUBLISH")


def assert_every_puback_follows_the_fsync_of_its_reading(rec: Recorder, broker_port: int, expected: int) -> None:
    events = rec.snapshot()
    port = consumer_port(rec, broker_port)
    received = [p for p in mqtt_packets(events, kind="recv", local_port=port) if p.type == PUBLISH]
    pubacks = [p for p in mqtt_packets(events, kind="send", local_port=port) if p.type == PUBACK]
    durable = {line_key(line): index for line, index in rec.durable_lines(events).items()}
    violations = []
    for ack in pubacks:
        # The message this PUBACK acknowledges: the last PUBLISH with its packet id before it.
        publish = [p for p in received if p.mid == ack.mid and p.event < ack.event][-1]
        topic, payload = publish.publish()
        key = (topic.rsplit("/", 1)[1], json.loads(payload)["ts"])
        synced_at = durable.get(key)
        if synced_at is None or synced_at > ack.event:
            violations.append((key, ack.event, synced_at))
    assert not violations, (f"{len(violations)} of {len(pubacks)} PUBACKs left before their reading was "
                            f"spooled and fsynced, e.g. (reading, ack event, fsync event) {violations[:3]}")
    assert len(pubacks) == expected, f"{len(pubacks)} PUBACKs for {expected} messages"
    assert len({line_key(line) for line in rec.durable_lines(events)}) == expected


def pubacks_sent(rec: Recorder, broker_port: int) -> int:
    try:
        port = consumer_port(rec, broker_port)
    except AssertionError:
        return 0
    return sum(p.type == PUBACK for p in mqtt_packets(rec.snapshot(), kind="send", local_port=port))


def run_mqtt(tmp_path, mosquitto, rec: Recorder, n: int, *, fast: bool = True) -> None:
    pipeline = Pipeline(tmp_path)
    settings = Settings(mqtt_url=mosquitto.url, data_dir=tmp_path, mqtt_client_id="cw-invariants")
    consumer = MqttConsumer(settings=settings, decoder=Decoder(registry=Registry.load(None)),
                            sink=pipeline.committer, metrics=IngestMetrics())
    assert paho_adapter.is_fast(consumer._client) is fast
    pipeline.committer.start()
    consumer.start()
    publisher = None
    try:
        assert consumer.connected.wait(10)
        publisher = Publisher(mosquitto.port, "pub-invariants")
        assert publisher.publish_all(readings(10, n // 10), timeout=120) == n
        # Until the consumer has sent a PUBACK for every message (the checks below say
        # what is wrong when it never does). Generous: with every fsync slowed down, retried
        # failures and the suite's other workers on 2 cores, 30 s once left 3 of 1,000 short.
        deadline = time.monotonic() + 120
        while pubacks_sent(rec, mosquitto.port) < n and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if publisher is not None:
            publisher.close()
        consumer.stop(settle_s=0.2)
        pipeline.close()


@pytest.mark.parametrize("paho", ["fast", "plain"])
def test_every_puback_leaves_after_its_reading_is_spooled_and_fsynced(tmp_path, mosquitto, monkeypatch, paho):
    if paho == "plain":  # what the consumer runs on when paho's internals changed (ingest/paho_adapter.py)
        monkeypatch.setattr(paho_adapter, "fast_path_available", lambda: False)
    rec = Recorder(tmp_path / "spool", fsync_delay_s=SLOW_FSYNC_S).install(monkeypatch)
    run_mqtt(tmp_path, mosquitto, rec, 3000, fast=paho == "fast")
    assert_every_puback_follows_the_fsync_of_its_reading(rec, mosquitto.port, 3000)


def test_a_failing_spool_append_acknowledges_nothing(tmp_path, mosquitto, monkeypatch):
    # The first two group commits fail at their fsync (EIO): the committer must retry them,
    # and no PUBACK may leave for a reading whose only write was never made durable.
    rec = Recorder(tmp_path / "spool", fsync_delay_s=SLOW_FSYNC_S).install(monkeypatch)
    rec.fail_fsyncs = 2
    run_mqtt(tmp_path, mosquitto, rec, 1000)
    assert rec.fail_fsyncs == 0 and sum(e.kind == "fsync_failed" for e in rec.snapshot()) == 2
    assert_every_puback_follows_the_fsync_of_its_reading(rec, mosquitto.port, 1000)


def test_every_hj212_answer_leaves_after_its_reading_is_spooled_and_fsynced(tmp_path, monkeypatch):
    registry = fleet_registry(3)
    rec = Recorder(tmp_path / "spool", fsync_delay_s=SLOW_FSYNC_S).install(monkeypatch)
    pipeline = Pipeline(tmp_path)
    pipeline.committer.start()
    tz = ZoneInfo("Asia/Shanghai")
    first = datetime.now(tz).replace(microsecond=0) - timedelta(hours=1)
    reading_of_qn: dict[str, tuple[str, int]] = {}

    async def monitors() -> int:
        gw = Hj212Gateway(registry=registry, sink=pipeline.committer, host="127.0.0.1", port=0)
        task = asyncio.create_task(gw.serve())
        await asyncio.wait_for(gw.wait_ready(), 5)

        async def monitor(k: int, device) -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.bound_port)
            decoder, backlog, answered = FrameDecoder(), [], 0
            rng = random.Random(k)
            for n in range(40):
                ts = first + timedelta(seconds=30 * n)
                qn = ts.strftime("%Y%m%d%H%M%S") + f"{k:03d}"
                reading_of_qn[qn] = (device.id, int(ts.timestamp() * 1000))
                writer.write(encode_packet(mn=device.hj212_mn, pw=device.hj212_pw, data_time=ts,
                                           values=monitor_values(rng), qn=qn))
                answer = await asyncio.wait_for(read_answer(reader, decoder, backlog), 10)
                assert read_header(answer.data).qn == qn
                answered += 1
            writer.close()
            return answered

        try:
            # Three monitors at once: their answers and group commits interleave.
            counts = await asyncio.gather(*(monitor(k, d) for k, d in enumerate(registry.devices.values())))
            return sum(counts)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        assert asyncio.run(asyncio.wait_for(monitors(), 60)) == 120
    finally:
        pipeline.close()
    events = rec.snapshot()
    durable = {line_key(line): index for line, index in rec.durable_lines(events).items()}
    answers = [(e.index, read_header(frame.data).qn) for e in events if e.kind == "send" and b"CN=9014" in e.data
               for frame in FrameDecoder().feed(e.data)]
    assert len(answers) == 120
    late = [(qn, index, durable.get(reading_of_qn[qn])) for index, qn in answers
            if durable.get(reading_of_qn[qn]) is None or durable[reading_of_qn[qn]] > index]
    assert not late, f"{len(late)} answers left before their reading was fsynced, e.g. {late[:3]}"


def test_the_writer_moves_its_checkpoint_only_past_lines_influxdb_accepted(tmp_path, influx, monkeypatch):
    """The real writer, spool and influxd, with the recording proxy between them: at every
    move of the checkpoint, every line before the new position was in a write InfluxDB had
    already accepted. The proxy refuses the first write (503), so a writer that moved on
    a failed write fails here too. And without a crash each line is delivered once."""
    rec = Recorder(tmp_path / "spool").install(monkeypatch)
    spool = Spool(tmp_path / "spool")
    lines_before: dict[tuple[int, int], list[bytes]] = {}
    appended: list[bytes] = []
    for group in range(6):
        lines = [f"dust,device=D{d:05d},site=S0001 pm10={group}.5 {1_700_000_000_000 + group * 1000}"
                 for d in range(500)]
        end = spool.append(lines)
        appended += [line.encode() for line in lines]
        lines_before[(end.segment, end.offset)] = list(appended)

    with RecordingInfluxProxy(influx.url, on_write=lambda lines, status: rec.record(
            "influx_write", info={"status": status, "lines": lines})) as proxy:
        proxy.fail_next = 1
        settings = Settings(influx_url=proxy.url, influx_database="invariant_checkpoint", data_dir=tmp_path)
        deadletters = DeadLetterStore(tmp_path / "dead.sqlite3")
        writer = InfluxWriter(spool=spool, client=InfluxClient(settings), deadletters=deadletters,
                              metrics=IngestMetrics(), batch_lines=1000, max_backoff_s=0.05, rng=random.Random(1))

        async def deliver_all() -> None:
            task = asyncio.create_task(writer.run())
            deadline = time.monotonic() + 30
            while spool.backlog_lines and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            writer.request_stop()
            await asyncio.wait_for(task, 10)

        asyncio.run(deliver_all())
        deadletters.close()
        spool.close()

    accepted: set[bytes] = set()
    moves = 0
    for e in rec.snapshot():
        if e.kind == "influx_write" and 200 <= e.info["status"] < 300:
            accepted.update(e.info["lines"])
        elif e.kind == "checkpoint":
            moves += 1
            position = (e.info["segment"], e.info["offset"])
            missing = [line for line in lines_before[position] if line not in accepted]
            assert not missing, (f"checkpoint moved to {position} while InfluxDB had not accepted "
                                 f"{len(missing)} line(s) before it, e.g. {missing[0]!r}")
    assert moves == 3  # three batches of two records each
    assert proxy.writes[0][0] == 503  # the refused first write was retried, not skipped
    deliveries = Counter(proxy.accepted_lines())
    assert set(deliveries) == set(appended) and set(deliveries.values()) == {1}
