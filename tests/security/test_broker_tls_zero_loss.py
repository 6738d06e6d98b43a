"""Zero loss with TLS on: the real service reads a TLS listener (verifying the broker's
certificate from scripts/make-certs.sh), is SIGKILLed mid-stream and restarted, and
InfluxDB ends with exactly every reading the broker acknowledged. Real mosquitto and
influxd; the consumer's bulk PUBLISH parse runs on the TLS socket here."""

from __future__ import annotations

import threading
import time

import pytest

from devtools.servers import Mosquitto, free_port
from simulators.message import SimMessage
from simulators.publisher import Publisher
from tests.security.broker_shipped import make_certs
from tests.support import ServiceProcess, influx_count, readings, service_env, wait_count

pytestmark = pytest.mark.integration

N_DEVICES, PER_DEVICE = 10, 1000
TOTAL = N_DEVICES * PER_DEVICE


@pytest.fixture
def tls_broker(tmp_path):
    certs = make_certs(tmp_path / "certs", "localhost", "127.0.0.1")
    port = free_port()
    extra = f"listener {port} 127.0.0.1\ncertfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\n"
    with Mosquitto(tmp_path / "mosquitto", extra_config=extra) as broker:
        yield f"mqtts://localhost:{port}", str(certs / "ca.crt")


def _messages():
    for topic, payload in readings(N_DEVICES, PER_DEVICE):
        _, kind, site, device = topic.split("/")
        yield SimMessage(sim_ts_ms=0, topic=topic, payload=payload, fault=None, device=device, kind=kind, site=site)


def test_a_killed_service_reading_over_tls_loses_nothing(tls_broker, influxd, tmp_path):
    url, ca_file = tls_broker
    db = "tls_e2e"
    env = service_env(mqtt_url=url, influx_url=influxd.url, data_dir=tmp_path / "cw", database=db,
                      mqtt_ca_file=ca_file, alerts_enabled="false")
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        svc.wait_log("connected to broker", timeout=30)
        result: dict = {}

        def publish() -> None:
            try:
                with Publisher(url=url, client_id="pub-tls", ca_file=ca_file, max_inflight=1000) as pub:
                    for m in _messages():
                        pub.publish(m)
                    pub.flush()
                    result["acked"] = pub.acked
            except BaseException as exc:  # surfaced below
                result["error"] = exc

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        assert wait_count(influxd.url, db, 2000, timeout=60) >= 2000
        svc.kill()
        stored_at_kill = influx_count(influxd.url, db)
        time.sleep(1.0)
        svc.start()
        thread.join(300)
        assert "error" not in result, result.get("error")
        assert result["acked"] == TOTAL
        assert wait_count(influxd.url, db, TOTAL, timeout=180) == TOTAL
        time.sleep(1.0)
        assert influx_count(influxd.url, db) == TOTAL
        assert stored_at_kill < TOTAL, "the kill came too late to test anything"
    finally:
        svc.stop()
