"""Alerts through the real service: the dust-episode scenario published over MQTT raises
the PM10 alert on `alerts/#` in Chinese, survives a SIGKILL while firing without a second
notification, resolves (clearing the retained message), and lands in InfluxDB."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import paho.mqtt.client as mqtt
import pytest

from simulators import generate
from tests.support import Publisher, ServiceProcess, service_env

pytestmark = pytest.mark.integration
TZ = ZoneInfo("Asia/Shanghai")
TOPIC = "alerts/S0001/D00001/dust_pm10_10min"


class AlertListener:
    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="alert-listener")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("alerts/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def live(self, topic: str) -> list[dict]:
        """Notifications as they happened (not replays of the retained message)."""
        with self.lock:
            return [json.loads(p) for t, p, retained in self.messages if t == topic and p and not retained]

    def cleared(self, topic: str) -> int:
        with self.lock:
            return sum(1 for t, p, retained in self.messages if t == topic and not p and not retained)

    def wait(self, predicate, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"condition not met; messages: {self.messages[-10:]}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def retained(port: int, topic: str) -> bytes | None:
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="retained-probe")
    c.on_message = lambda cl, u, m: got.append(m.payload)
    c.connect("127.0.0.1", port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    time.sleep(1.0)
    c.loop_stop()
    c.disconnect()
    return got[0] if got and got[0] else None


def test_dust_episode_alert_end_to_end_with_sigkill_while_firing(mosquitto, influxd, tmp_path):
    env = service_env(mqtt_url=mosquitto.url, influx_url=influxd.url, data_dir=tmp_path / "cw", database="alerts")
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    svc.wait_log("connected to broker")
    listener = AlertListener(mosquitto.port)
    day = (datetime.now(TZ) - timedelta(days=1)).date()
    start = datetime(day.year, day.month, day.day, 10, 0, tzinfo=TZ)
    messages = [(m.topic, m.payload, m.sim_ts_ms) for m in
                generate("dust-episode", sites=2, seed=7, start=start, duration_s=5400)]
    split = int((start + timedelta(minutes=50)).timestamp() * 1000)  # the episode is 10:30–10:45
    before = [(t, p) for t, p, ts in messages if ts < split]
    after = [(t, p) for t, p, ts in messages if ts >= split]
    pub = Publisher(mosquitto.port, "pub-alerts")
    pub.publish_all(before)

    listener.wait(lambda: any(a["state"] == "firing" for a in listener.live(TOPIC)))
    (firing,) = [a for a in listener.live(TOPIC) if a["state"] == "firing"]
    assert firing["severity"] == "major" and firing["site"] == "S0001" and firing["field"] == "pm10"
    assert firing["value"] > 150 and firing["threshold"] == 150
    assert "PM10" in firing["message"] and "超过设定值" in firing["message"] and "立即停工降尘" in firing["message"]
    assert firing["message_en"].startswith("PM10 10-min mean")
    assert retained(mosquitto.port, TOPIC) is not None

    svc.kill()  # while firing
    svc.start()
    svc.wait_log("connected to broker")
    pub.publish_all(after)
    # Resolving clears the retained alert: an empty payload on its topic.
    listener.wait(lambda: listener.cleared(TOPIC) > 0, timeout=90)
    time.sleep(2.0)
    sent = [(a["id"], a["state"], a["severity"]) for a in listener.live(TOPIC)]
    # One notification per change: firing (major), maybe the 30-min escalation to critical
    # while unacknowledged; never the same one twice, in particular not after the restart.
    assert len(sent) == len(set(sent)), sent
    assert sent[0] == (firing["id"], "firing", "major")
    assert set(sent) <= {(firing["id"], "firing", "major"), (firing["id"], "firing", "critical")}
    assert listener.cleared(TOPIC) == 1
    assert retained(mosquitto.port, TOPIC) is None
    others = {t for t, _, _ in listener.messages if t != TOPIC and "pm10" in t}
    assert not any("S0002" in t for t in others), "the second site had no episode"
    listener.close()
    pub.close()

    deadline = time.monotonic() + 30
    rows = []
    while time.monotonic() < deadline and not rows:
        r = httpx.get(f"{influxd.url}/query", params={"db": "alerts", "q": 'SELECT * FROM "alerts"'})
        rows = (r.json()["results"][0].get("series") or [{}])[0].get("values", [])
        time.sleep(0.5)
    assert rows, "alert history must reach InfluxDB"
    assert svc.stop() == 0
