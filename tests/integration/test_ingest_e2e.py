"""End to end against real mosquitto and influxd: the service runs as a subprocess, a
QoS 1 publisher sends readings, InfluxDB is counted. Nothing here is faked.

The service writes through a recording proxy in front of the real influxd
(`tests/influx_proxy.py`), so these tests count deliveries — how many accepted writes
carried each reading — not only points, which overwrite themselves when re-sent."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.influx_proxy import RecordingInfluxProxy
from tests.support import (ROOT, Publisher, ServiceProcess, influx_count, readings, service_env, wait_count)

pytestmark = pytest.mark.integration

N_DEVICES, PER_DEVICE = 20, 1000
TOTAL = N_DEVICES * PER_DEVICE
# Small windows for the SIGKILL tests, so that "duplicates only of what was in flight at
# the kill" is a bound that can fail: at most RECEIVE_MAXIMUM messages spooled but not yet
# acknowledged (the broker sends them again) plus one write batch stored but not yet
# checkpointed (the writer sends it again), per spool.
IN_FLIGHT = {"mqtt_receive_maximum": "1000", "write_batch_lines": "1000"}
MAX_RESENT_PER_SPOOL = 1000 + 1000


def per_device_counts(influx_url: str, db: str) -> dict[str, int]:
    r = httpx.get(f"{influx_url}/query", params={"db": db, "q": 'SELECT count("pm10") FROM "dust" GROUP BY "device"'})
    return {s["tags"]["device"]: s["values"][0][1] for s in r.json()["results"][0].get("series", [])}


@pytest.fixture
def proxy(influxd):
    with RecordingInfluxProxy(influxd.url) as recording:
        yield recording


@pytest.fixture
def service(mosquitto, influxd, proxy, tmp_path):
    env = service_env(mqtt_url=mosquitto.url, influx_url=proxy.url, data_dir=tmp_path / "cw", database="e2e",
                      **IN_FLIGHT)
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    svc.wait_log("connected to broker")
    yield svc
    svc.stop()


def publish_in_background(port: int, messages, client_id: str) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        pub = Publisher(port, client_id)
        try:
            result["sent"] = pub.publish_all(messages, timeout=600)
        except BaseException as exc:  # surfaced by the test
            result["error"] = exc
        finally:
            pub.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def assert_delivered_once_each(proxy: RecordingInfluxProxy, total: int) -> None:
    deliveries = proxy.deliveries()
    assert len(deliveries) == total
    resent = {key: n for key, n in deliveries.items() if n != 1}
    assert not resent, f"{len(resent)} readings delivered more than once, e.g. {list(resent.items())[:3]}"


def kill_mid_stream_then_count_all(svc: ServiceProcess, mosquitto, influxd, db: str, client_id: str,
                                   proxy: RecordingInfluxProxy, spools: int = 1) -> int:
    """Publish TOTAL readings in the background, SIGKILL the service once part of the
    stream is stored and more is in flight, restart it, and check that every reading
    arrives, and that the only readings delivered twice are those in flight at the kill
    (at most MAX_RESENT_PER_SPOOL per spool). Returns how many were stored at the kill."""
    thread, result = publish_in_background(mosquitto.port, readings(N_DEVICES, PER_DEVICE), client_id)
    assert wait_count(influxd.url, db, 3000, timeout=60) >= 3000
    svc.kill()
    stored_at_kill = influx_count(influxd.url, db)
    time.sleep(1.0)
    svc.start()
    thread.join(600)
    assert "error" not in result, result.get("error")
    assert wait_count(influxd.url, db, TOTAL, timeout=180) == TOTAL
    time.sleep(1.0)
    assert influx_count(influxd.url, db) == TOTAL
    assert set(per_device_counts(influxd.url, db).values()) == {PER_DEVICE}
    deliveries = proxy.deliveries()
    assert len(deliveries) == TOTAL and min(deliveries.values()) >= 1
    resent = sum(n - 1 for n in deliveries.values())
    assert resent <= spools * MAX_RESENT_PER_SPOOL, f"{resent} re-deliveries after one kill"
    return stored_at_kill


def test_20k_readings_from_20_devices_arrive_exactly_once(service, mosquitto, influxd, proxy):
    pub = Publisher(mosquitto.port, "pub-20k")
    assert pub.publish_all(readings(N_DEVICES, PER_DEVICE)) == TOTAL
    pub.close()
    assert wait_count(influxd.url, "e2e", TOTAL) == TOTAL
    time.sleep(1.0)  # nothing extra trickles in afterwards
    assert influx_count(influxd.url, "e2e") == TOTAL
    assert set(per_device_counts(influxd.url, "e2e").values()) == {PER_DEVICE}
    assert_delivered_once_each(proxy, TOTAL)
    assert service.stop() == 0
    assert "spool drained" in service.log()


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(service, mosquitto, influxd, proxy):
    # The default layout: MQTT ingest in a child process with the plain session; killing
    # the main process takes the child with it (PR_SET_PDEATHSIG).
    assert "started the MQTT ingest process" in service.log()
    client_id = service.env["CW_MQTT_CLIENT_ID"]
    assert f"as {client_id}" in service.log() and f"as {client_id}-0" not in service.log()
    stored_at_kill = kill_mid_stream_then_count_all(service, mosquitto, influxd, "e2e", "pub-kill", proxy)
    assert stored_at_kill < TOTAL, "the kill happened after the stream had finished: the test proved nothing"


def test_one_process_layout_sigkill_mid_stream_loses_nothing(mosquitto, influxd, proxy, tmp_path):
    env = service_env(mqtt_url=mosquitto.url, influx_url=proxy.url, data_dir=tmp_path / "cw", database="single",
                      ingest_process="false", **IN_FLIGHT)
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    svc.wait_log("connected to broker")
    assert "MQTT ingest process" not in svc.log()
    stored_at_kill = kill_mid_stream_then_count_all(svc, mosquitto, influxd, "single", "pub-single", proxy)
    assert stored_at_kill < TOTAL, "the kill happened after the stream had finished: the test proved nothing"
    assert svc.stop() == 0
    assert not (tmp_path / "cw" / "spool-mqtt-0").exists()  # everything went through the main spool


def test_influxdb_down_for_60s_mid_stream_then_everything_arrives(service, mosquitto, influxd):
    messages = readings(N_DEVICES, PER_DEVICE)
    pub = Publisher(mosquitto.port, "pub-influx-down")
    pub.publish_all(messages[: TOTAL // 4])
    assert wait_count(influxd.url, "e2e", TOTAL // 4, timeout=60) == TOTAL // 4
    influxd.stop()
    started = time.monotonic()
    pub.publish_all(messages[TOTAL // 4:])  # the service keeps accepting into its spool
    service.wait_log("retrying, nothing is dropped", timeout=30)
    time.sleep(max(0.0, 60 - (time.monotonic() - started)))
    assert service.proc.poll() is None
    influxd.start()
    assert wait_count(influxd.url, "e2e", TOTAL, timeout=180) == TOTAL
    pub.close()
    time.sleep(1.0)
    assert influx_count(influxd.url, "e2e") == TOTAL
    service.wait_log("InfluxDB writes succeed again", timeout=10)


def test_broker_restart_mid_stream_every_reading_arrives(service, mosquitto, influxd):
    thread, result = publish_in_background(mosquitto.port, readings(N_DEVICES, PER_DEVICE), "pub-restart")
    assert wait_count(influxd.url, "e2e", 2000, timeout=60) >= 2000
    mosquitto.restart()
    thread.join(600)
    assert "error" not in result, result.get("error")
    assert wait_count(influxd.url, "e2e", TOTAL, timeout=180) == TOTAL
    time.sleep(1.0)
    assert influx_count(influxd.url, "e2e") == TOTAL
    assert service.log().count("connected to broker") >= 2


def _bad_corpus(now_ms: int) -> list[tuple[str, bytes, str]]:
    """(topic, payload, the reason code we expect) for each kind of bad input."""
    ok_values = {"pm10": 80.0}
    return [
        ("telemetry/dust/S0001/D00001", b"this is not json", "invalid_json"),
        ("telemetry/dust/S0001/D00001", json.dumps({"ts": now_ms, "values": {"pm10": "80"}}).encode(), "invalid_field"),
        ("telemetry/dust/S0001/D00001", b'{"ts": %d, "values": {"pm10": NaN}}' % now_ms, "invalid_field"),
        ("telemetry/dust/S0001/D00001", b'{"ts": %d, "values": {"pm10": Infinity}}' % now_ms, "invalid_field"),
        ("telemetry/dust/S0001/D00001", json.dumps({"values": ok_values}).encode(), "missing_field"),
        ("telemetry/dust/S0001/D00001", json.dumps({"ts": now_ms, "values": {"pm10": 99999.0}}).encode(),
         "invalid_field"),
        ("telemetry/dust/S0001/D00001", json.dumps({"ts": now_ms + 10 * 86400_000, "values": ok_values}).encode(),
         "future_timestamp"),
        ("telemetry/dust/S0001/D 1", json.dumps({"ts": now_ms, "values": ok_values}).encode(), "bad_topic"),
        ("telemetry/dust/S0001/D,1", json.dumps({"ts": now_ms, "values": ok_values}).encode(), "bad_topic"),
        ("telemetry/dust/S0001/D=1", json.dumps({"ts": now_ms, "values": ok_values}).encode(), "bad_topic"),
        # A newline in a topic cannot even reach us: mosquitto drops the publisher's connection
        # for control characters in topics. The decoder's own test covers that case.
        ("telemetry/dust/S0001/D00001", b'{"ts": %d, "values": {"pm10": 1}, "pad": "%s"}' % (now_ms, b"x" * 1048576),
         "payload_too_large"),
        ("telemetry/dust/S0001/D00001", json.dumps({"ts": now_ms, "values": {"pm10": 1, "colour": 3}}).encode(),
         "unknown_field"),
        ("telemetry/dust/S0001/D99999", json.dumps({"ts": now_ms, "values": ok_values}).encode(), "unknown_device"),
        ("telemetry/dust/S0002/D00001", json.dumps({"ts": now_ms, "values": ok_values}).encode(),
         "registry_mismatch"),
    ]


def test_bad_input_corpus_is_dead_lettered_with_reasons_and_valid_traffic_flows(mosquitto, influxd, tmp_path):
    registry = tmp_path / "devices.toml"
    registry.write_text("".join(
        f'[[device]]\nid = "D{d:05d}"\nsite = "S0001"\nkind = "dust"\nexpected_interval_s = 10\n\n' for d in range(5)))
    env = service_env(mqtt_url=mosquitto.url, influx_url=influxd.url, data_dir=tmp_path / "cw", database="bad",
                      devices_file=str(registry))
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    svc.wait_log("connected to broker")
    now_ms = int(time.time() * 1000)
    good = readings(5, 40)
    corpus = _bad_corpus(now_ms)
    mixed: list[tuple[str, bytes]] = []
    for i, (topic, payload) in enumerate(good):
        mixed.append((topic, payload))
        if i % 13 == 0 and i // 13 < len(corpus):
            mixed.append(corpus[i // 13][:2])
    assert len(mixed) == len(good) + len(corpus)
    pub = Publisher(mosquitto.port, "pub-bad")
    pub.publish_all(mixed, timeout=60)
    pub.close()
    assert wait_count(influxd.url, "bad", len(good)) == len(good)
    deadline = time.monotonic() + 20
    letters: list[dict] = []
    while time.monotonic() < deadline and len(letters) < len(corpus):
        out = subprocess.run([sys.executable, "-m", "app.cli", "deadletters", "list", "--json"],
                             env=svc.env, cwd=ROOT, capture_output=True, text=True, check=True)
        letters = json.loads(out.stdout)
        time.sleep(0.3)
    assert svc.proc.poll() is None, "the service must survive the corpus"
    assert len(letters) == len(corpus)
    by_topic_payload = {(d["topic"], d["payload"][:200]): d for d in letters}
    assert len(by_topic_payload) == len(corpus)
    for topic, payload, code in corpus:
        letter = by_topic_payload[(topic, payload[:200].decode())]
        assert any(r.startswith(code + ":") for r in letter["reasons"]), (code, letter["reasons"])
    # The raw bytes are kept whole, even the 1 MiB one.
    assert max(d["payload_bytes"] for d in letters) > 1_000_000
    assert svc.stop() == 0
    time.sleep(0.5)
    assert influx_count(influxd.url, "bad") == len(good)


def test_deadletter_replay_after_registry_fix(mosquitto, influxd, tmp_path):
    registry = tmp_path / "devices.toml"
    registry.write_text('[[device]]\nid = "D00000"\nsite = "S0001"\nkind = "dust"\n')
    env = service_env(mqtt_url=mosquitto.url, influx_url=influxd.url, data_dir=tmp_path / "cw", database="replay",
                      devices_file=str(registry))
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    svc.wait_log("connected to broker")
    pub = Publisher(mosquitto.port, "pub-replay")
    pub.publish_all(readings(2, 10))  # D00001 is not registered yet
    pub.close()
    assert wait_count(influxd.url, "replay", 10) == 10
    assert svc.stop() == 0
    registry.write_text(registry.read_text() + '[[device]]\nid = "D00001"\nsite = "S0001"\nkind = "dust"\n')
    cli = [sys.executable, "-m", "app.cli", "deadletters"]
    out = subprocess.run(cli + ["replay"], env=svc.env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert "replayed 10 message(s)" in out.stdout
    svc.start()
    assert wait_count(influxd.url, "replay", 20) == 20
    listing = subprocess.run(cli + ["list", "--json"], env=svc.env, cwd=ROOT, capture_output=True, text=True)
    assert json.loads(listing.stdout) == []
    svc.stop()


def test_two_ingest_workers_share_the_stream_and_survive_sigkill(mosquitto, influxd, proxy, tmp_path):
    env = service_env(mqtt_url=mosquitto.url, influx_url=proxy.url, data_dir=tmp_path / "cw", database="workers",
                      ingest_workers="2", **IN_FLIGHT)
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    svc.wait_log("started 2 MQTT ingest worker processes")
    deadline = time.monotonic() + 20
    while svc.log().count("connected to broker") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    # Killing the main process: the kernel takes its workers with it.
    kill_mid_stream_then_count_all(svc, mosquitto, influxd, "workers", "pub-workers", proxy, spools=2)
    log = svc.log()
    assert "as cw-workers-0" in log and "as cw-workers-1" in log
    assert svc.stop() == 0
    # Both workers' spools were drained by their own writers.
    for k in (0, 1):
        assert (tmp_path / "cw" / f"spool-mqtt-{k}").is_dir()
