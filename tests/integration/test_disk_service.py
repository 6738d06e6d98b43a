"""Resource exhaustion end to end: `citywatch run` (a real subprocess, the default
two-process layout) with its data directory on a small real filesystem (a tmpfs the test
mounts), real mosquitto and influxd, InfluxDB stopped and started again.

1. Three outages in a row: intake pauses when the disk is nearly full, every reading the
   broker got a PUBACK for is stored once InfluxDB is back, intake resumes by itself, and
   the disk space comes back each time (the pause is visible in /health and /metrics).
2. The disk filled to the last byte by the service itself — readings, garbage for the
   dead-letter store, alerts for the alert state — with no pause threshold to save it:
   every store meets ENOSPC, nothing crashes, nothing acknowledged is lost, and each
   store resumes once InfluxDB drains the spool.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from devtools.servers import free_port
from ingest.disk import spool_bytes
from tests.smallfs import free_bytes, small_fs
from tests.support import Publisher, ServiceProcess, influx_count, readings, service_env, wait_count

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
TOKEN = "disk-test-token"


def wait_until(what: str, cond, timeout: float, svc: ServiceProcess | None = None, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if svc is not None and svc.proc is not None and svc.proc.poll() is not None:
            raise AssertionError(f"service exited {svc.proc.returncode} while waiting for {what}: {svc.log()[-3000:]}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" +
                         (f"; service log tail:\n{svc.log()[-3000:]}" if svc is not None else ""))


def listing(root: Path) -> str:
    """Where the space went (for a failing assertion's message)."""
    rows = [(p.stat().st_blocks * 512, str(p.relative_to(root))) for p in root.rglob("*") if p.is_file()]
    return ", ".join(f"{name}: {size // 1024} KiB" for size, name in sorted(rows, reverse=True)[:12])


def alert_state_bytes(data_dir: Path) -> int:
    """The stores that grow with new data, not with a backlog: the alert state (window
    snapshots) and the kept six-100 evidence (facts of the new days)."""
    return sum(p.stat().st_blocks * 512 for pattern in ("alerts.sqlite3*", "six100*.sqlite3*")
               for p in data_dir.glob(pattern))


def health(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()


def metric(port: int, name: str, text: str | None = None) -> float:
    if text is None:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_takes_nothing_while_paused(port: int, total: int) -> None:
    """While paused the service takes nothing more (the broker keeps it, unacknowledged to
    us). Measured over a window in which intake stayed paused throughout: space given back
    by the alert state's WAL may let intake resume briefly, which is right."""
    for _ in range(10):
        time.sleep(1.2)  # the worker's counters reach the main process every second
        paused_before = health(port)["intake"] == "paused"
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        flips = [metric(port, f"citywatch_workers_intake_{k}_total", text) for k in ("pauses", "resumes")]
        taken = metric(port, "citywatch_workers_readings_accepted_total", text)
        time.sleep(2.0)
        doc = health(port)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if not paused_before or doc["intake"] != "paused" or flips != [
                metric(port, f"citywatch_workers_intake_{k}_total", text) for k in ("pauses", "resumes")]:
            continue  # not paused throughout this window: try another
        assert metric(port, "citywatch_workers_readings_accepted_total", text) == taken < total, (taken, total)
        # Visible while it lasts: /health degraded with the free space, the gauge in /metrics.
        assert doc["status"] == "degraded" and doc["disk_free_bytes"] > 0, doc
        assert metric(port, "citywatch_workers_intake_paused", text) == 1
        return
    raise AssertionError("intake never stayed paused for 3 s")


def publish_background(pub: Publisher, messages) -> int:
    """Queue every message with paho (QoS 1) and return at once; `pub.acked` counts PUBACKs."""
    for topic, payload in messages:
        pub.client.publish(topic, payload, qos=1)
    return len(messages)


def test_three_outages_on_a_small_disk_pause_intake_then_store_everything_and_resume(mosquitto, influxd, tmp_path):
    api_port = free_port()
    with small_fs(tmp_path / "small", 6 * MiB) as fs:
        env = service_env(mqtt_url=mosquitto.url, influx_url=influxd.url, data_dir=fs / "cw", database="disk",
                          spool_segment_bytes=str(256 * 1024), spool_min_free_bytes=str(2 * MiB),
                          spool_min_free_percent="100", api_tokens=f"{TOKEN}=admin", api_port=str(api_port))
        svc = ServiceProcess(env, tmp_path / "service.log").start()
        pub = Publisher(mosquitto.port, "pub-disk", inflight=2000)
        try:
            svc.wait_log("connected to broker")
            svc.wait_log("HTTP API and dashboard")
            wait_until("a first disk check", lambda: health(api_port).get("disk_free_bytes"), 20, svc)
            total = 0
            for cycle in range(1, 4):
                free_before, alerts_before = free_bytes(fs), alert_state_bytes(fs / "cw")
                influxd.stop()
                start_ms = int(time.time() * 1000) - 86_400_000 * (4 - cycle)  # each outage its own day
                total += publish_background(pub, readings(20, 2000, start_ms=start_ms))  # more than fits
                wait_until(f"intake paused (outage {cycle})", lambda: health(api_port)["intake"] == "paused", 90, svc)
                assert_takes_nothing_while_paused(api_port, total)
                assert free_bytes(fs) > 64 * 1024  # paused before the disk was full

                influxd.start()
                wait_until(f"intake resumed (outage {cycle})", lambda: health(api_port)["intake"] == "running", 120, svc)  # backoff ≤ 30 s, then the drain
                wait_until(f"every PUBACK (outage {cycle})", lambda: pub.acked >= total, 120, svc)
                assert wait_count(influxd.url, "disk", total, timeout=120) == total
                try:  # the writer's backoff: up to 30 s
                    wait_until("/health ok again", lambda: health(api_port)["status"] == "ok", 60, svc)
                except AssertionError as exc:
                    raise AssertionError(f"{health(api_port)}: {str(exc)[-2000:]}") from None
                # The space came back: the consumed segments are gone, whatever their geometry.
                # (the alert state and the six-100 evidence may grow: snapshots and facts of the new
                # readings are new data)
                try:
                    wait_until("free space back", lambda: spool_bytes(fs / "cw") <= 256 * 1024 and free_bytes(fs)
                               + alert_state_bytes(fs / "cw") - alerts_before >= free_before - 256 * 1024, 20, svc)
                except AssertionError:
                    raise AssertionError(f"free {free_bytes(fs)}, {free_before} before the outage; spools "
                                         f"{spool_bytes(fs / 'cw')}: {listing(fs)}") from None
                # Every pause was followed by a resume, each counted (the alert state giving back WAL
                # space can let intake run a little more within an outage: a legitimate extra pair).
                text = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=10).text
                pauses = metric(api_port, "citywatch_workers_intake_pauses_total", text)
                assert pauses >= cycle and metric(api_port, "citywatch_workers_intake_resumes_total", text) == pauses
            time.sleep(1.0)
            assert influx_count(influxd.url, "disk") == total == 120_000  # nothing lost, nothing twice
            log = svc.log()
            # Each transition logged once, by the process whose intake it is (the MQTT ingest process).
            assert log.count("MQTT intake paused") == log.count("MQTT intake resumed") == pauses
            assert log.count("intake paused") == pauses
            assert "Traceback" not in log
        finally:
            pub.close()
            code = svc.stop()
        assert code == 0


def leak(device: str, ts: int) -> tuple[str, bytes]:
    return f"telemetry/heating/S0009/{device}", json.dumps({"ts": ts, "values": {"leak_detected": True}}).encode()


def test_a_disk_filled_to_the_last_byte_by_readings_garbage_and_alerts_loses_nothing(mosquitto, influxd, tmp_path):
    api_port = free_port()
    with small_fs(tmp_path / "small", 6 * MiB) as fs:
        # No pause threshold: the service's own data (spool, dead letters, alert state) fills
        # the disk to ENOSPC, the worst case a misconfiguration or a neighbour can cause.
        env = service_env(mqtt_url=mosquitto.url, influx_url=influxd.url, data_dir=fs / "cw", database="full",
                          spool_segment_bytes=str(256 * 1024), spool_min_free_bytes="0",
                          deadletter_max_bytes=str(256 * 1024), api_tokens=f"{TOKEN}=admin",
                          api_port=str(api_port))
        svc = ServiceProcess(env, tmp_path / "service.log").start()
        pub = Publisher(mosquitto.port, "pub-full", inflight=2000)
        try:
            svc.wait_log("connected to broker")
            svc.wait_log("HTTP API and dashboard")
            influxd.stop()
            now = int(time.time() * 1000)
            leaks = [f"LEAK{i:03d}" for i in range(40)]
            garbage = [(f"telemetry/dust/S0001/G{i:05d}", b"{not json " + bytes(600)) for i in range(3000)]
            valid = readings(20, 3000, start_ms=now - 4 * 3600_000)
            # Interleaved: readings, garbage, and a leak (an alert) every 1,500 messages.
            mixed, g, k = [], 0, 0
            for i, m in enumerate(valid):
                mixed.append(m)
                if i % 20 == 0 and g < len(garbage):
                    mixed.append(garbage[g])
                    g += 1
                if i % 1500 == 0 and k < len(leaks):
                    mixed.append(leak(leaks[k], now - 60_000 + k))
                    k += 1
            mixed += garbage[g:] + [leak(d, now - 60_000 + j) for j, d in enumerate(leaks[k:], start=k)]
            total = publish_background(pub, mixed)
            wait_until("the spool to meet a full disk", lambda: "group commit failed" in svc.log(), 120, svc)
            wait_until("a failing store in /health",
                       lambda: any(v != "ok" for v in health(api_port)["storage"].values()), 20, svc)
            failure = svc.log().split("group commit failed", 1)[1].split("\n", 1)[0]
            assert "Errno 28" in failure or "disk is full" in failure, failure  # a real ENOSPC, not another error
            # An operator acknowledges every firing alert while the disk is full.
            acked_ids = []
            for a in httpx.get(f"http://127.0.0.1:{api_port}/v1/alerts", params={"state": "firing", "limit": 500},
                               headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()["items"]:
                r = httpx.post(f"http://127.0.0.1:{api_port}/v1/alerts/{a['id']}/ack", json={"note": "disk full"},
                               headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
                assert r.status_code == 200, r.text
                acked_ids.append(a["id"])
            assert acked_ids, "some leak alerts fired before the disk was full"
            time.sleep(3.0)
            taken = metric(api_port, "citywatch_workers_readings_accepted_total")
            assert taken < len(valid) and svc.proc.poll() is None

            influxd.start()  # the writer drains, the checkpoint frees space, every store resumes
            wait_until("every PUBACK", lambda: pub.acked >= total, 180, svc)
            stored = wait_count(influxd.url, "full", len(valid), timeout=120)
            assert stored == len(valid), (stored, len(valid), listing(fs))
            wait_until("the history of every leak alert",
                       lambda: influx_count(influxd.url, "full", "alerts", "alert_id") >= len(leaks) + len(acked_ids),
                       60, svc, every=0.5)
            try:
                wait_until("/health ok again", lambda: health(api_port)["status"] == "ok", 60, svc)
            except AssertionError as exc:
                raise AssertionError(f"{health(api_port)}; {listing(fs)}; {str(exc)[-1500:]}") from None
            doc = health(api_port)
            assert doc["storage"] == {"spool": "ok", "deadletters": "ok", "alert_state": "ok"}, doc
            # Every garbage message committed. A message whose acknowledgement could not go out
            # before the broker dropped the blocked connection comes again (at least once), so
            # the store is checked against what the service committed, read in one snapshot.
            wait_until("every garbage message committed",
                       lambda: metric(api_port, "citywatch_workers_rejected_total") >= len(garbage), 30, svc)
            time.sleep(1.5)
            text = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=10).text
            rejected = metric(api_port, "citywatch_workers_rejected_total", text)
            evicted = metric(api_port, "citywatch_workers_deadletters_evicted_total", text)
        finally:
            pub.close()
            code = svc.stop()
        assert code == 0
        log = svc.log()
        assert "Traceback" not in log and "group commit succeeded again" in log
        # The dead-letter store: every garbage message is stored or counted as evicted, within its quota.
        db = sqlite3.connect(fs / "cw" / "deadletters.sqlite3")
        stored = db.execute("SELECT count(*) FROM deadletters").fetchone()[0]
        pages, free = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count"))
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        assert stored + evicted == rejected >= len(garbage) and evicted > 0, (stored, evicted, rejected)
        assert (pages - free) * 4096 <= 256 * 1024
        # The alert state: every leak fired once, every acknowledgement made on the full disk is kept.
        db = sqlite3.connect(fs / "cw" / "alerts.sqlite3")
        leak_devices = [r[0] for r in db.execute("SELECT device FROM alerts WHERE rule='heating_leak'")]
        acked_in_db = {r[0] for r in db.execute("SELECT id FROM alerts WHERE acked=1")}
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        assert sorted(leak_devices) == leaks
        assert acked_in_db >= set(acked_ids)
