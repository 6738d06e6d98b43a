"""Issue 11, item 1: one device's valid credentials harm no one else on the shipped broker.

The broker runs from deploy/mosquitto/ (mosquitto.conf and acl as shipped; only ports and
paths moved into a temp dir, see broker_shipped.py), with users made by
scripts/mqtt-credentials.sh and certificates by scripts/make-certs.sh. The service is the
real `citywatch run` writing to a real InfluxDB; nothing here is faked.
"""

from __future__ import annotations

import json
import ssl
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.security.broker_shipped import ShippedBroker, make_credentials
from tests.support import ServiceProcess, influx_count, service_env, wait_count

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 135  # MQTT 5 reason code, in CONNACK, PUBACK and SUBACK alike
SERVICE_CLIENT_ID = "citywatch-ingest"  # the default CW_MQTT_CLIENT_ID


class Client:
    """An MQTT 5 client over TLS that reports the broker's answer to each packet.

    mosquitto 2.0.11 now and then closes the connection right after answering a denied
    publish; paho reconnects and re-sends anything unacknowledged, so each call waits for
    its own acknowledgement rather than for a connection state."""

    def __init__(self, broker: ShippedBroker, user: str, *, port: int | None = None, client_id: str = "",
                 password: str | None = None, clean_start: bool = False) -> None:
        self.connacks: list[int] = []
        self.messages: list[str] = []
        self._acks: dict[int, list[int]] = {}
        self._cv = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password if password is not None else broker.passwords[user])
        self.c.tls_set(ca_certs=str(broker.ca_file), cert_reqs=ssl.CERT_REQUIRED)
        self.c.reconnect_delay_set(0.1, 1)
        self.c.on_connect = self._on_connect
        self.c.on_publish = lambda c, u, mid, rc, p: self._ack(mid, [rc.value])
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self._ack(mid, [r.value for r in rcs])
        self.c.on_message = lambda c, u, m: self.messages.append(m.topic)
        self.c.connect("127.0.0.1", port or broker.port, clean_start=clean_start)
        self.c.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cv:
            self.connacks.append(reason_code.value)
            self._cv.notify_all()

    def _ack(self, mid: int, codes: list[int]) -> None:
        with self._cv:
            self._acks[mid] = codes
            self._cv.notify_all()

    def first_connack(self, timeout: float = 10) -> int:
        with self._cv:
            assert self._cv.wait_for(lambda: self.connacks, timeout), "no CONNACK"
            return self.connacks[0]

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        info = self.c.publish(topic, payload, qos=1)
        with self._cv:
            assert self._cv.wait_for(lambda: info.mid in self._acks, 10), f"no PUBACK for {topic}"
            return self._acks[info.mid][0]

    def subscribe(self, topic: str) -> int:
        # paho does not keep a SUBSCRIBE made while it is reconnecting: send it again.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rc, mid = self.c.subscribe([(topic, SubscribeOptions(qos=1))])
            if rc == mqtt.MQTT_ERR_SUCCESS:
                with self._cv:
                    if self._cv.wait_for(lambda: mid in self._acks, 2):
                        return self._acks[mid][0]
            else:
                time.sleep(0.1)
        raise AssertionError(f"no SUBACK for {topic}")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def broker(tmp_path):
    with ShippedBroker(tmp_path / "broker") as server:
        yield server


def _reading(ts_ms: int, seq: int) -> bytes:
    return json.dumps({"ts": ts_ms, "seq": seq, "values": {"pm10": 60.0 + seq, "pm25": 20.0}}).encode()


def test_a_device_cannot_take_over_the_services_session(broker, influx, tmp_path):
    db = "sec_takeover"
    env = service_env(mqtt_url=broker.service_url(), influx_url=influx.url, data_dir=tmp_path / "cw", database=db,
                      mqtt_ca_file=str(broker.ca_file), mqtt_client_id=SERVICE_CLIENT_ID, alerts_enabled="false")
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        svc.wait_log("connected to broker", timeout=30)
        # The attack: D00001's valid credentials, the service's client ids, clean start.
        attacks = []
        for victim in (SERVICE_CLIENT_ID, f"{SERVICE_CLIENT_ID}-alerts", f"{SERVICE_CLIENT_ID}-1"):
            attacker = Client(broker, "D00001", client_id=victim, clean_start=True)
            # The broker lets the device in — as D00001, whatever client id it asked for.
            assert attacker.first_connack() == 0
            attacks.append(attacker)
            # On the service's own listener a device's credentials do not authenticate.
            inside = Client(broker, "D00001", port=broker.service_port, client_id=victim, clean_start=True)
            assert inside.first_connack() == NOT_AUTHORIZED
            inside.close()
        time.sleep(1.0)
        assert "disconnected from broker" not in svc.log(), "the service lost its connection to the attacker"

        sender = Client(broker, "D00002", client_id="anything")
        start_ms = int(time.time() * 1000) - 600_000
        acked = [sender.publish("telemetry/dust/S0001/D00002", _reading(start_ms + i * 1000, i)) for i in range(20)]
        assert acked == [0] * 20
        assert wait_count(influx.url, db, 20, timeout=60) == 20

        # While the service is offline its session queues; a device connecting again and
        # again with its client id and a clean start must not discard that queue.
        assert svc.stop() == 0
        for i in range(20, 40):
            assert sender.publish("telemetry/dust/S0001/D00002", _reading(start_ms + i * 1000, i)) == 0
        for attacker in attacks:
            attacker.close()
        for victim in (SERVICE_CLIENT_ID, f"{SERVICE_CLIENT_ID}-1"):
            again = Client(broker, "D00001", client_id=victim, clean_start=True)
            assert again.first_connack() == 0
            again.close()
        sender.close()
        svc.start()
        svc.wait_log("session present: True", timeout=30)
        assert wait_count(influx.url, db, 40, timeout=60) == 40
        time.sleep(1.0)
        assert influx_count(influx.url, db) == 40, "every reading the broker acknowledged is stored, once"
    finally:
        svc.stop()


def test_a_device_publishes_only_its_own_topics_and_receives_nothing(broker):
    service = Client(broker, "citywatch", port=broker.service_port, client_id="citywatch-test")
    assert service.first_connack() == 0
    assert service.subscribe("telemetry/#") == 1
    office = Client(broker, "safety-office", client_id="dashboard")
    assert office.subscribe("alerts/#") == 1
    dev = Client(broker, "D00001", client_id="D00001")
    assert dev.first_connack() == 0
    assert dev.publish("telemetry/dust/S0001/D00002") == NOT_AUTHORIZED  # another device's topic
    assert dev.publish("events/dust/S0001/D00002") == NOT_AUTHORIZED
    assert dev.publish("alerts/S0001/D00002/pm10_exceed") == NOT_AUTHORIZED  # a forged alert
    assert dev.publish("telemetry/dust/S0001/D00001") == 0  # its own
    # Subscribing: mosquitto 2.0's acl_file answers every SUBSCRIBE with a grant and checks
    # read access on each message it would deliver (retained ones included), so a device's
    # subscription to other people's topics stays empty. What counts is what arrives.
    for topic in ("telemetry/#", "telemetry/dust/S0001/D00002", "events/#", "alerts/#", "#"):
        assert dev.subscribe(topic) in (1, NOT_AUTHORIZED), topic
    other = Client(broker, "D00002", client_id="D00002")
    assert other.publish("telemetry/dust/S0001/D00002") == 0
    assert other.publish("events/dust/S0001/D00002") == 0
    alert = service.c.publish("alerts/S0001/D00002/pm10_exceed", b'{"state":"firing"}', qos=1, retain=True)
    alert.wait_for_publish(10)
    late = Client(broker, "D00001", client_id="D00001-late")  # the same device again: retained alerts?
    assert late.subscribe("alerts/#") in (1, NOT_AUTHORIZED)
    time.sleep(1.0)
    assert dev.messages == [] and late.messages == [], "a device received traffic that is not its own"
    assert sorted(service.messages) == ["telemetry/dust/S0001/D00001", "telemetry/dust/S0001/D00002"]
    assert office.messages == ["alerts/S0001/D00002/pm10_exceed"]
    for c in (service, office, dev, other, late):
        c.close()


def test_the_safety_office_reads_alerts_and_publishes_nowhere(broker):
    service = Client(broker, "citywatch", port=broker.service_port, client_id="citywatch-test")
    assert service.subscribe("telemetry/#") == 1 and service.subscribe("alerts/#") == 1
    office = Client(broker, "safety-office", client_id="dashboard")
    assert office.first_connack() == 0
    for topic in ("alerts/S0001/D00001/pm10_exceed", "telemetry/dust/S0001/D00001", "events/dust/S0001/D00001",
                  "safety-office", "anything/else"):
        assert office.publish(topic) == NOT_AUTHORIZED, topic
    assert office.subscribe("telemetry/#") in (1, NOT_AUTHORIZED)  # granted or not, nothing arrives
    device = Client(broker, "D00001", client_id="D00001")
    assert device.publish("telemetry/dust/S0001/D00001") == 0
    time.sleep(1.0)
    assert office.messages == []
    assert service.messages == ["telemetry/dust/S0001/D00001"], "a refused publish reached a subscriber"
    for c in (service, office, device):
        c.close()


def test_the_services_credentials_open_only_the_service_listener(broker):
    # The service's user is not in the devices' password file: a leaked copy of a device's
    # configuration cannot be "upgraded" by guessing, and the service's own password works
    # only on the listener that is not published.
    outside = Client(broker, "citywatch", client_id="citywatch-ingest")
    assert outside.first_connack() == NOT_AUTHORIZED
    outside.close()
    anonymous = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv5)
    anonymous.tls_set(ca_certs=str(broker.ca_file))
    codes: list[int] = []
    anonymous.on_connect = lambda c, u, f, rc, p: codes.append(rc.value)
    anonymous.connect("127.0.0.1", broker.port)
    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        anonymous.loop(0.1)
    assert codes and codes[0] != 0, "anonymous clients must be refused"


def test_credentials_script_keeps_the_service_and_devices_apart(tmp_path):
    import subprocess

    from tests.security.broker_shipped import ROOT

    for reserved in ("citywatch-ingest", "CityWatch-alerts", "citywatch-1"):
        r = subprocess.run([str(ROOT / "scripts/mqtt-credentials.sh"), reserved], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin:/usr/sbin", "MQTT_PASSWD_DIR": str(tmp_path)})
        assert r.returncode == 2 and "reserved" in r.stderr, reserved
    make_credentials(tmp_path, "citywatch")
    make_credentials(tmp_path, "D00001")
    assert (tmp_path / "passwd-service").read_text().startswith("citywatch:")
    assert [line.split(":")[0] for line in (tmp_path / "passwd").read_text().splitlines()] == ["D00001"]
    assert oct((tmp_path / "passwd").stat().st_mode & 0o777) == "0o600"


def test_the_services_alert_notifier_verifies_the_broker_and_reaches_the_safety_office(broker):
    import asyncio

    from alerts.notify import MqttNotifier, Notification
    from citywatch.settings import Settings

    office = Client(broker, "safety-office", client_id="dashboard")
    assert office.subscribe("alerts/#") == 1
    settings = Settings(mqtt_url=broker.service_url(), mqtt_ca_file=broker.ca_file)
    notifier = MqttNotifier.from_settings(settings)
    try:
        deadline = time.monotonic() + 10
        while not notifier._client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        alert = {"site": "S0001", "device": "D00001", "rule": "pm10_exceed", "state": "firing"}
        delivery = asyncio.run(notifier.send(Notification(seq=1, event="firing", alert=alert, created_ms=0)))
        assert delivery.ok, delivery.detail
        deadline = time.monotonic() + 5
        while not office.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert office.messages == ["alerts/S0001/D00001/pm10_exceed"]
    finally:
        notifier.close()
        office.close()
