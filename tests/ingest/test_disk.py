"""Resource exhaustion, unit by unit: the spool gives its space back as the checkpoint
moves, the thresholds suit small disks, the watch pauses and resumes intake by itself,
the dead-letter store keeps to its quota and retention, and a full disk (a real small
tmpfs, filled to the last byte) makes every store wait and retry — never crash, never
acknowledge what is not durable, never lose a transition."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from citywatch.errors import ConfigError, SpoolError
from citywatch.model import RawMessage
from citywatch.settings import Settings
from ingest.committer import Committer
from ingest.deadletters import DeadLetterError, DeadLetterStore
from ingest.disk import (DiskWatch, Usage, check_data_dir, deadletter_quota, pause_threshold, resume_threshold,
                         warn_threshold)
from ingest.metrics import IngestMetrics
from ingest.spool import Spool
from tests.smallfs import fill, free_bytes, small_fs

MiB = 1024 * 1024


def allocated(directory: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in directory.glob("*.seg"))


def drain(spool: Spool, max_lines: int = 1000) -> list[bytes]:
    out = []
    while (batch := spool.read_batch(max_lines)) is not None:
        out.extend(batch.lines)
        spool.commit(batch)
    return out


def big_lines(prefix: str, n: int, width: int = 200) -> list[str]:
    return [f"{prefix}{i:07d}," + "x" * width for i in range(n)]


# -- the spool gives space back --------------------------------------------------------
def test_a_caught_up_writer_gets_the_active_segment_rolled_and_deleted(tmp_path):
    spool = Spool(tmp_path, segment_bytes=64 * MiB)  # the production size: it would never fill here
    for k in range(20):
        spool.append(big_lines(f"a{k}-", 1000))
    assert allocated(tmp_path) > 3 * MiB
    assert len(drain(spool)) == 20_000
    assert allocated(tmp_path) == 0  # nothing left behind in a 64 MB segment that never filled
    spool.append(["after"])
    assert drain(spool) == [b"after"]


def test_the_consumed_prefix_is_given_back_while_a_big_segment_drains(tmp_path):
    spool = Spool(tmp_path, segment_bytes=64 * MiB)
    for k in range(40):
        spool.append(big_lines(f"b{k}-", 1000))
    spool.append(["still-being-written"])  # the writer never catches up in this test
    full = allocated(tmp_path)
    for _ in range(30):  # three quarters of it stored
        spool.commit(spool.read_batch(1000))
    assert allocated(tmp_path) < full * 0.3
    assert spool.reclaimable_bytes < MiB  # what is left to give back is under one step
    spool.close()
    again = Spool(tmp_path, segment_bytes=64 * MiB)  # a restart reads exactly the rest
    rest = drain(again)
    assert len(rest) == 10_001 and rest[0].startswith(b"b30-0000000,") and rest[-1] == b"still-being-written"


def test_restart_after_the_checkpoint_segment_was_rolled_away(tmp_path):
    spool = Spool(tmp_path, segment_bytes=64 * MiB)
    spool.append(big_lines("c", 10_000))
    assert len(drain(spool)) == 10_000
    spool.close()
    assert list(tmp_path.glob("*.seg")) == [] or all(p.stat().st_size == 0 for p in tmp_path.glob("*.seg"))
    again = Spool(tmp_path, segment_bytes=64 * MiB)
    again.append(["d1", "d2"])
    again.close()
    third = Spool(tmp_path, segment_bytes=64 * MiB)
    assert third.backlog_lines == 2 and drain(third) == [b"d1", b"d2"]


def test_a_checkpoint_on_a_full_disk_uses_the_reserve(tmp_path, monkeypatch):
    spool = Spool(tmp_path, segment_bytes=4096)
    for i in range(30):
        spool.append([f"line-{i}-" + "x" * 500])
    real = spool._write_checkpoint
    calls = []

    def full_once(pos):
        calls.append(pos)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(pos)

    monkeypatch.setattr(spool, "_write_checkpoint", full_once)
    batch = spool.read_batch(20)
    spool.commit(batch)
    assert len(calls) == 2 and spool.checkpoint == batch.end
    assert not (tmp_path / "reserve").exists() or (tmp_path / "reserve").stat().st_size == 64 * 1024
    assert len(drain(spool)) == 10


# -- thresholds and the start-up check ---------------------------------------------------
def settings(tmp_path, **kw) -> Settings:
    return Settings(data_dir=tmp_path, **kw)


def test_thresholds_are_the_smaller_of_bytes_and_percent(tmp_path):
    s = settings(tmp_path)
    big, small = 2 * 1024**4, 2 * 1024**3
    assert pause_threshold(s, big) == 256 * MiB and warn_threshold(s, big) == 2 * 1024**3
    assert pause_threshold(s, small) == int(small * 0.05)  # ~102 MiB on a 2 GiB volume
    assert warn_threshold(s, small) == int(small * 0.15)
    assert pause_threshold(s, small) < resume_threshold(s, small) <= pause_threshold(s, small) + 64 * MiB
    assert deadletter_quota(s, big) == 256 * MiB and deadletter_quota(s, small) == int(small * 0.10)


def test_run_refuses_a_data_dir_that_cannot_hold_one_segment_above_the_threshold(tmp_path):
    with small_fs(tmp_path / "fs", 8 * MiB) as fs:
        with pytest.raises(ConfigError) as err:
            check_data_dir(settings(fs, spool_segment_bytes=16 * MiB))
        message = str(err.value)
        assert "CW_SPOOL_SEGMENT_BYTES" in message and "\n" not in message
        check_data_dir(settings(fs, spool_segment_bytes=1 * MiB))  # fits: no error


def test_citywatch_run_exits_2_with_one_line_naming_the_setting(tmp_path):
    import subprocess
    import sys

    from tests.support import ROOT

    with small_fs(tmp_path / "fs", 8 * MiB) as fs:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CW_")}, "CW_DATA_DIR": str(fs),
               "CW_SPOOL_SEGMENT_BYTES": str(64 * MiB), "CW_LOG_FORMAT": "text"}
        r = subprocess.run([sys.executable, "-m", "app.cli", "run"], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "CW_SPOOL_SEGMENT_BYTES" in lines[0] and "pause threshold" in lines[0], r.stderr


class FakeCommitter:
    def __init__(self) -> None:
        self.paused_reason = None

    def pause(self, reason) -> None:
        self.paused_reason = reason


def test_the_watch_pauses_and_resumes_once_each_counting_what_can_be_given_back(tmp_path, monkeypatch, caplog):
    import ingest.disk as disk

    spool = Spool(tmp_path / "spool", segment_bytes=64 * MiB)
    free = {"n": 500 * MiB}
    monkeypatch.setattr(disk, "usage", lambda path: Usage(10 * 1024**3, free["n"]))
    metrics, committer = IngestMetrics(), FakeCommitter()
    watch = DiskWatch(settings=settings(tmp_path), spool=spool, committer=committer, metrics=metrics)
    caplog.set_level(logging.INFO, "citywatch.ingest.disk")
    watch.check()
    assert not watch.paused and committer.paused_reason is None
    free["n"] = 200 * MiB  # under min(256 MiB, 5 % of 10 GiB)
    watch.check()
    watch.check()
    assert watch.paused and committer.paused_reason == "disk nearly full"
    free["n"] = 260 * MiB  # above the threshold but not the resume margin: stays paused
    watch.check()
    assert watch.paused
    monkeypatch.setattr(Spool, "reclaimable_bytes", property(lambda self: 30 * MiB))
    watch.check()  # 260 + 30 MB that the checkpoint released counts as free
    watch.check()
    assert not watch.paused and committer.paused_reason is None
    snap = metrics.snapshot()
    assert snap["citywatch_intake_pauses_total"] == 1 and snap["citywatch_intake_resumes_total"] == 1
    assert snap["citywatch_intake_paused"] == 0
    logs = [r.getMessage() for r in caplog.records]
    assert sum("MQTT intake paused" in m for m in logs) == 1 and sum("MQTT intake resumed" in m for m in logs) == 1


# -- the dead-letter store's own limits ---------------------------------------------------
def garbage(n: int, start: int = 0, size: int = 1000) -> list:
    return [(RawMessage(f"telemetry/dust/S1/G{i}", os.urandom(size), 1_700_000_000_000 + i, "hj212"),
             ("bad_frame: garbage",)) for i in range(start, start + n)]


def test_the_dead_letter_store_keeps_its_quota_by_evicting_the_oldest(tmp_path, caplog):
    metrics = IngestMetrics()
    store = DeadLetterStore(tmp_path / "dl.sqlite3", max_bytes=512 * 1024, metrics=metrics)
    caplog.set_level(logging.WARNING, "citywatch.ingest.deadletters")
    for k in range(100):  # 10,000 garbage frames of 1 kB: 20 times the quota
        store.add_many(garbage(100, start=k * 100))
    assert store.used_bytes() <= 512 * 1024
    assert (tmp_path / "dl.sqlite3").stat().st_size <= 640 * 1024  # the file too (freed pages are reused)
    kept = store.list(limit=100_000)
    assert kept and kept[-1].topic.endswith("G9999")  # the newest are kept, the oldest went
    ids = [d.id for d in kept]
    assert ids == sorted(ids) and len(kept) + store.evicted["quota"] == 10_000
    assert metrics.snapshot()["citywatch_deadletters_evicted_total{reason=quota}"] == store.evicted["quota"]
    assert sum("size quota" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_the_dead_letter_store_drops_what_is_past_its_retention(tmp_path):
    now = {"t": 1_700_000_000.0}
    store = DeadLetterStore(tmp_path / "dl.sqlite3", retention_s=86400, clock=lambda: now["t"])
    old = [(RawMessage("t/a", b"x", int((now["t"] - 2 * 86400) * 1000), "mqtt"), ("old",)) for _ in range(5)]
    new = [(RawMessage("t/b", b"y", int(now["t"] * 1000), "mqtt"), ("new",)) for _ in range(3)]
    store.add_many(old + new)
    store.maintain()
    assert store.count() == 3 and store.evicted["retention"] == 5


def test_a_dead_letter_store_on_a_full_disk_raises_and_resumes(tmp_path):
    with small_fs(tmp_path / "fs", 4 * MiB) as fs:
        store = DeadLetterStore(fs / "dl.sqlite3")
        store.add_many(garbage(10))
        filler = fill(fs)
        with pytest.raises(DeadLetterError):
            for k in range(1000):
                store.add_many(garbage(50, start=1000 + k * 50))
        assert store.failing
        filler.unlink()
        store.add_many(garbage(5, start=900_000))
        assert store.failing is None
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.close()


# -- the committer on a full disk ---------------------------------------------------------
def test_a_full_disk_acknowledges_nothing_until_space_returns_and_writes_nothing_twice(tmp_path):
    from tests.ingest.test_committer import accepted, rejected

    with small_fs(tmp_path / "fs", 4 * MiB) as fs:
        spool = Spool(fs / "spool", segment_bytes=MiB)
        dead = DeadLetterStore(fs / "dl.sqlite3")
        metrics = IngestMetrics()
        committer = Committer(spool=spool, deadletters=dead, metrics=metrics, interval_s=0.01)
        committer.start()
        acks: list[tuple[int, bool]] = []
        lock = threading.Lock()

        def cb(n):
            def done(ok):
                with lock:
                    acks.append((n, ok))
            return done

        filler = fill(fs)
        items = [(accepted(i), cb(i)) for i in range(200)] + [(rejected(i), cb(1000 + i)) for i in range(20)]
        committer.submit_many(items)
        time.sleep(2.0)
        assert acks == [] and committer.failing  # nothing acknowledged while nothing is durable
        assert metrics.snapshot()["citywatch_commit_failures_total"] >= 1
        filler.unlink()
        deadline = time.monotonic() + 15
        while len(acks) < 220 and time.monotonic() < deadline:
            time.sleep(0.05)
        committer.stop()
        assert sorted(acks) == sorted([(i, True) for i in range(200)] + [(1000 + i, True) for i in range(20)])
        assert committer.failing is None
        assert len(drain(spool)) == 200 and dead.count() == 20  # each part written once
        spool.close()
        dead.close()


def test_a_disk_pause_holds_inputs_but_not_the_alert_history(tmp_path):
    from tests.ingest.test_committer import accepted

    spool = Spool(tmp_path / "spool")
    committer = Committer(spool=spool, deadletters=DeadLetterStore(tmp_path / "dl.sqlite3"), interval_s=0.01)
    committer.start()
    committer.pause("disk nearly full")
    acked = []
    history = threading.Thread(target=committer.submit, args=(accepted(1, source="alerts"), acked.append))
    history.start()
    history.join(5)
    assert not history.is_alive()
    mqtt = threading.Thread(target=committer.submit, args=(accepted(2, source="mqtt"), acked.append), daemon=True)
    mqtt.start()
    mqtt.join(1.0)
    assert mqtt.is_alive()  # held back: the broker keeps the message
    committer.pause(None)
    mqtt.join(5)
    committer.stop()
    assert acked == [True, True]


# -- the alert state on a full disk -------------------------------------------------------
class Recorder:
    name = "rec"

    def __init__(self) -> None:
        self.sent: list = []

    async def send(self, n):
        from alerts.notify import Delivery

        self.sent.append((n.event, n.alert["device"]))
        return Delivery(True)


def test_alert_transitions_on_a_full_disk_are_held_and_stored_in_order_once_space_returns(tmp_path):
    from alerts import AlertEngine, EngineConfig, load_rules
    from alerts.store import AlertStore
    from citywatch.model import Reading
    from citywatch.stream import Batch

    async def scenario(fs: Path) -> None:
        rec = Recorder()
        now = time.time()
        engine = AlertEngine(EngineConfig(state_path=fs / "alerts.sqlite3", tick_interval_s=0.05),
                             rules=load_rules(), notifiers=[rec], clock=lambda: now)
        woke = asyncio.Event()
        loop = asyncio.get_running_loop()
        resumed = engine.store.on_resumed

        def on_resumed():
            resumed()
            loop.call_soon_threadsafe(woke.set)

        engine.store.on_resumed = on_resumed
        task = asyncio.create_task(engine.run(None))
        filler = fill(fs)
        ts = int(now * 1000)
        # Leaks on 30 devices: each fires heating_leak at once (state, outbox, rstate writes).
        for i in range(30):
            engine.process(Batch([Reading("heating", "S1", f"LEAK{i:03d}", ts + i, {"leak_detected": True})], []))
        await asyncio.sleep(0.5)
        assert engine.store.failing and engine.store.deferred_count > 0
        assert rec.sent == []  # nothing notified before its transition is on disk
        filler.unlink()
        await asyncio.wait_for(woke.wait(), 10)
        for _ in range(100):
            if len(rec.sent) >= 30:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert engine.store.failing is None
        assert sorted(rec.sent) == sorted(("firing", f"LEAK{i:03d}") for i in range(30))  # each once
        engine.close()
        again = AlertStore(fs / "alerts.sqlite3")
        firing = again.query("SELECT device FROM alerts WHERE state='firing' ORDER BY device")
        assert [r["device"] for r in firing] == [f"LEAK{i:03d}" for i in range(30)]
        assert again.query("PRAGMA integrity_check")[0][0] == "ok"
        assert again.outbox_backlog() == {}
        again.close()

    with small_fs(tmp_path / "fs", 4 * MiB) as fs:
        asyncio.run(scenario(fs))


def test_held_deliveries_are_not_sent_twice(tmp_path):
    from alerts.store import AlertStore

    with small_fs(tmp_path / "fs", 2 * MiB) as fs:
        store = AlertStore(fs / "a.sqlite3")
        with store.transaction() as tx:
            for i in range(3):
                tx.enqueue("rec", "firing", f"a{i}", {"i": i}, 1)
        filler = fill(fs)
        delivered = []
        for _ in range(200):  # deliveries until the disk refuses the updates
            row = store.next_outbox("rec")
            if row is None:
                break
            delivered.append(row.seq)
            store.outbox_delivered(row.seq, 2)
        assert delivered == [1, 2, 3] and store.next_outbox("rec") is None
        assert store.outbox_backlog().get("rec", 0) == 0
        filler.unlink()
        deadline = time.monotonic() + 5
        while store.deferred_count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.deferred_count == 0 and store.next_outbox("rec") is None
        assert [r[0] for r in store.query("SELECT delivered_ms FROM outbox")] == [2, 2, 2]
        store.close()


class GroupReceiver:
    """A routing receiver that records the outbox seqs it is sent (one group per message)."""

    name, limits, max_merge = "office", (), 1

    def __init__(self, fail_first: int = 0):
        self.sent: list[int] = []
        self.fail_first = fail_first

    def fits(self, messages) -> bool:
        return True

    async def send(self, batch):
        from alerts.notify import Delivery

        self.sent.append(batch.seq)
        if len(self.sent) <= self.fail_first:
            return Delivery(False, retryable=True, detail="503")
        return Delivery(True)


def wait_written(store, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while store.deferred_count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.deferred_count == 0 and store.failing is None


def test_held_group_deliveries_are_not_sent_twice_and_a_held_retry_keeps_its_backoff(tmp_path):
    from alerts.routing.deliver import GroupDispatcher
    from alerts.routing.group import outbox_name
    from alerts.store import AlertStore

    now = [1000.0]
    with small_fs(tmp_path / "fs", 2 * MiB) as fs:
        store = AlertStore(fs / "a.sqlite3")
        store.ensure_routing_schema()
        box = outbox_name("office")
        with store.transaction() as tx:
            for i in range(3):
                tx.enqueue(box, "group", f"g{i}", {"i": i}, 1)
        receiver = GroupReceiver(fail_first=1)
        d = GroupDispatcher(store, receiver, clock=lambda: now[0])
        filler = fill(fs)

        async def deliver() -> list[float | None]:
            waits = []
            for _ in range(6):  # bounded: a row that is sent again and again must fail the test, not hang it
                waits.append(await d.step())
                if waits[-1] is None:
                    break
                if waits[-1] == 2.0:
                    assert await d.step() > 0  # the held retry's backoff holds: nothing sent meanwhile
                    now[0] += 2.0
            return waits

        waits = asyncio.run(deliver())
        assert store.failing and store.deferred_count > 0  # every outbox update was held in memory
        assert receiver.sent == [1, 1, 2, 3] and waits == [2.0, 0.0, 0.0, 0.0, None]
        assert store.pending_outbox(box, 10) == [] and store.outbox_backlog().get(box, 0) == 0
        assert store.outbox_sent_since(box, 0) == [1002000]  # the held deliveries count for the rate window
        filler.unlink()
        wait_written(store)
        assert asyncio.run(d.step()) is None and receiver.sent == [1, 1, 2, 3]
        rows = store.query(f"SELECT attempts, delivered_ms FROM outbox WHERE notifier='{box}' ORDER BY seq")
        assert [tuple(r) for r in rows] == [(2, 1002000), (1, 1002000), (1, 1002000)]
        store.close()


def test_a_group_is_flushed_once_while_the_disk_is_full(tmp_path):
    from zoneinfo import ZoneInfo

    from alerts.routing import labels_from
    from alerts.routing.config import parse_routes
    from alerts.routing.group import Grouper, outbox_name
    from alerts.routing.tree import build_tree
    from alerts.store import AlertStore

    routes = parse_routes("""\
receivers:
  - {name: office, type: webhook, url: "https://a.example/", secret: "0123456789abcdef0123456789abcdef"}
route: {receiver: office, group_by: [site], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}
""")
    t0 = 1_795_744_800_000
    alert = {"id": "a", "rule": "r", "severity": "major", "state": "firing", "acked": False, "kind": "dust",
             "site": "S1", "device": "D1", "field": "pm10", "value": 200.0, "threshold": 150,
             "started_at": "2026-11-27T10:00:00+08:00", "resolved_at": None, "message": "m", "message_en": "m"}
    with small_fs(tmp_path / "fs", 2 * MiB) as fs:
        store = AlertStore(fs / "a.sqlite3")
        store.ensure_routing_schema()
        g = Grouper(store, build_tree(routes), [], labels_of=labels_from(None), tz=ZoneInfo("Asia/Shanghai"),
                    receivers=["office"])
        g.add(alert, t0)
        filler = fill(fs)
        flushed = [g.flush_due(t0 + s * 1000) for s in (30, 31, 32)]  # the flusher looks every second
        assert store.deferred_count > 0
        # A change while full is not taken (the groups read from the disk would be stale): the
        # engine's delivery stage hands it over again once the disk has room.
        assert g.add({**alert, "value": 210.0}, t0 + 33_000) is False
        filler.unlink()
        wait_written(store)
        assert g.add({**alert, "value": 210.0}, t0 + 33_500) is True
        flushed.append(g.flush_due(t0 + 34_000))
        # The first flush is held (and written later); the group does not look due again.
        assert flushed == [{"office"}, set(), set(), set()]
        rows = store.pending_outbox(outbox_name("office"), 10)
        assert [[a["value"] for a in r.payload["alerts"]] for r in rows] == [[200.0]]  # one notification
        members = store.query("SELECT payload, notified FROM route_group_alerts")
        assert [(json.loads(r["payload"])["value"], r["notified"]) for r in members] == [(210.0, 1)]
        store.close()


def test_spool_appends_fail_cleanly_on_a_full_disk_and_space_comes_back_in_full(tmp_path):
    with small_fs(tmp_path / "fs", 6 * MiB) as fs:
        spool = Spool(fs / "spool", segment_bytes=MiB)
        before = free_bytes(fs)
        written = 0
        with pytest.raises(SpoolError):
            for k in range(10_000):
                spool.append(big_lines(f"e{k}-", 100))
                written += 100
        assert spool.backlog_lines == written
        assert len(drain(spool)) == written
        assert free_bytes(fs) >= before - 64 * 1024  # all of it back (but a page or so)
        spool.append(["again"])
        assert drain(spool) == [b"again"]
        spool.close()


def test_what_was_submitted_before_a_pause_waits_for_its_end_and_a_stop_meanwhile_acks_nothing(tmp_path):
    from tests.ingest.test_committer import accepted

    spool = Spool(tmp_path / "spool")
    committer = Committer(spool=spool, deadletters=DeadLetterStore(tmp_path / "dl.sqlite3"), interval_s=0.2)
    acks: list[bool] = []
    committer.submit_many([(accepted(i), acks.append) for i in range(5)])  # not committed yet (not started)
    committer.pause("disk nearly full")
    committer.start()
    time.sleep(0.5)
    assert acks == [] and spool.backlog_lines == 0  # the pause writes nothing more from the inputs
    committer.pause(None)
    deadline = time.monotonic() + 5
    while len(acks) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert acks == [True] * 5 and spool.backlog_lines == 5
    committer.pause("disk nearly full")
    committer.submit_many([(accepted(9, source="alerts"), acks.append)])
    with committer._cond:  # an input's items that got in just before the pause
        committer._pending.append((accepted(10), acks.append))
    time.sleep(0.5)
    committer.stop()
    assert acks == [True] * 6 + [False] and spool.backlog_lines == 6


def test_the_six100_evidence_gives_up_coverage_on_a_full_disk_instead_of_holding_the_writer(tmp_path):
    """Marks are an index the compliance report can do without (it reads InfluxDB instead),
    the spool's drain is not: on a full disk `mark_body` must return, having recorded that
    nothing is covered any more, and mark again from the moment space returns."""
    import time

    from ingest.evidence.store import NO_COVERAGE, EvidenceStore

    body = b"".join(b"dust,device=D%d,site=S%d pm10=80 %d\n" % (i, i, 1_795_000_000_000 + i * 60_000)
                    for i in range(2000))
    with small_fs(tmp_path / "fs", 2 * MiB) as fs:
        store = EvidenceStore(fs / "six100.sqlite3")
        store.mark_body(body[:200])
        store.apply({}, rebuilt_days=[1_794_960_000_000])
        assert store.pending_count() > 0 and store.rebuilt([1_794_960_000_000])
        filler = fill(fs)
        for _ in range(20):  # batch after batch, as the writer drains: never raises, never waits
            store.mark_body(body)
        assert store.live_since_ms() >= NO_COVERAGE  # no day claims the kept evidence now
        assert not store.rebuilt([1_794_960_000_000])
        filler.unlink()
        before = int(time.time() * 1000)
        store.mark_body(body[:200])
        assert before <= store.live_since_ms() < NO_COVERAGE  # marking again, covering from now on
        assert store.pending_count() > 0
        store.close()


def test_window_snapshots_wait_for_the_spool_on_a_low_disk_but_transitions_do_not(tmp_path, caplog):
    # The spool has the data disk first: below the warning threshold (a real small disk,
    # filled by another program) the alert engine's window snapshots wait in memory, while
    # device rows and an alert's transition are still written; once space is back the
    # newest windows are written, and a new engine restores exactly them.
    from alerts import AlertEngine, EngineConfig, load_rules
    from citywatch.model import Reading
    from citywatch.stream import Batch

    with small_fs(tmp_path / "fs", 8 * MiB) as fs:
        s = settings(fs, spool_segment_bytes=256 * 1024)
        watch = DiskWatch(settings=s, spool=Spool(s.spool_dir, segment_bytes=s.spool_segment_bytes),
                          committer=FakeCommitter(), metrics=IngestMetrics())
        now = time.time()
        t0 = int(now * 1000) - 600_000
        path = fs / "alerts.sqlite3"
        engine = AlertEngine(EngineConfig(state_path=path), rules=_rules_24h_on(load_rules), clock=lambda: now)
        engine.snapshots.defer = watch.defer_write  # as app/service.py wires it

        def dust(i0: int, n: int) -> Batch:  # pm25 feeds the 24-h rule's minute buckets
            return Batch([Reading("dust", "S1", "D1", t0 + i * 1000, {"pm10": 60.0 + i % 7, "pm25": 30.0 + i % 5})
                          for i in range(i0, i0 + n)], [])

        def stored() -> dict:
            return {r["field"]: (r["ts"], r["v"]) for r in engine.store.query(
                "SELECT field, ts, v FROM series WHERE device='D1'")}

        caplog.set_level(logging.INFO, "citywatch.alerts")
        engine.process(dust(0, 90))
        watch.check()
        assert not watch.low_space
        engine.snapshot()
        before = stored()
        assert set(before) == {"pm10", "pm25"}
        assert engine.store.query("SELECT count(*) FROM series_buckets WHERE device='D1'")[0][0] >= 1

        filler = fill(fs, leave=512 * 1024)  # below min(2 GiB, 15 % of 8 MiB): the warning threshold
        watch.check()
        assert watch.low_space
        engine.process(dust(90, 90))
        engine.process(Batch([Reading("heating", "S1", "LEAK1", t0 + 180_000, {"leak_detected": True})], []))
        engine.snapshot()
        engine.snapshot()
        assert stored() == before  # deferred: the windows wait in memory
        assert (path.parent / (path.name + "-wal")).stat().st_size == 0  # its WAL given back to the spool
        watermarks = {r["device"]: r["watermark_ms"] for r in engine.store.query("SELECT * FROM devices")}
        assert watermarks == {"D1": t0 + 179_000, "LEAK1": t0 + 180_000}  # device rows still written
        firing = engine.store.query("SELECT rule, device FROM alerts WHERE state='firing'")
        assert [(r["rule"], r["device"]) for r in firing] == [("heating_leak", "LEAK1")]  # never deferred
        assert engine.store.failing is None and engine.stats["snapshots_deferred"] == 2

        filler.unlink()
        watch.check()
        assert not watch.low_space
        engine.snapshot()
        want = {f: s.dump() for f, s in engine._devices["D1"].series.items()}
        assert stored() == want != before  # the newest windows, written once space is back
        again = AlertEngine(EngineConfig(state_path=path), rules=_rules_24h_on(load_rules), clock=lambda: now)
        restored = again._devices["D1"].series
        assert restored["pm10"].dump() == want["pm10"]
        # pm25's raw tail is restored trimmed to what late samples need; it ends where the engine's did
        mine = engine._devices["D1"].series["pm25"]
        n = len(restored["pm25"].ts)
        assert 0 < n and restored["pm25"].ts.tolist() == mine.ts.tolist()[-n:]
        assert restored["pm25"].ts[-1] == t0 + 179_000
        again.close()
        engine.close()
    logs = [r.getMessage() for r in caplog.records]
    assert sum("snapshots deferred" in m for m in logs) == 1 and sum("written again" in m for m in logs) == 1


def test_low_space_follows_the_warning_threshold_with_intakes_margin(tmp_path, monkeypatch):
    import ingest.disk as disk

    free = {"n": 3 * 1024**3}
    monkeypatch.setattr(disk, "usage", lambda path: Usage(10 * 1024**3, free["n"]))
    s = settings(tmp_path)
    watch = DiskWatch(settings=s, spool=Spool(tmp_path / "spool"), committer=FakeCommitter(),
                      metrics=IngestMetrics())
    total = 10 * 1024**3
    warn, margin = warn_threshold(s, total), resume_threshold(s, total) - pause_threshold(s, total)
    seen = []
    for n in (warn, warn - 1, warn + margin - 1, warn + margin, warn + margin - 1):
        free["n"] = n
        watch.check()
        seen.append(watch.low_space)
    assert seen == [False, True, True, False, False]
    # Above it, a cache write waits if it would take the disk there (twice its size: WAL, then file).
    room = free["n"] - warn
    assert watch.defer_write(room // 2) is None
    assert "would take the data disk below its warning threshold" in (watch.defer_write(room // 2 + 1) or "")


def _rules_24h_on(load_rules):
    """The shipped rules with the GB 3095 24-h rules (shipped off, alerts/README.md) on: their
    minute buckets are what a deferred snapshot keeps in memory."""
    import yaml

    from alerts.rules import DEFAULT_RULES_DIR, parse_rule

    rules = load_rules()
    for doc in yaml.safe_load((DEFAULT_RULES_DIR / "dust.yaml").read_text("utf-8"))["rules"]:
        if doc["id"] in ("dust_pm25_24h", "dust_tsp_24h"):
            rules[doc["id"]] = parse_rule({**doc, "enabled": True}, "dust.yaml")
    return rules
