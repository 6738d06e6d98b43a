"""Issue 11, item 2: the shipped broker speaks TLS only, and clients verify it.

Broker from deploy/mosquitto/mosquitto.conf (ports and paths moved, see
broker_shipped.py), certificates from scripts/make-certs.sh.
"""

from __future__ import annotations

import socket
import ssl

import paho.mqtt.client as mqtt
import pytest

from simulators.message import SimMessage
from simulators.publisher import PublishError, Publisher
from tests.security.broker_shipped import ShippedBroker, make_certs

pytestmark = pytest.mark.integration

# MQTT 3.1.1 CONNECT, clean session, client id "x", no credentials.
PLAIN_CONNECT = bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 1]) + b"x"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with ShippedBroker(tmp_path_factory.mktemp("tls") / "broker") as server:
        yield server


def _clear_text_answer(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(PLAIN_CONNECT)
        answer = b""
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


@pytest.mark.parametrize("which", ["device", "service"])
def test_listeners_refuse_clear_text(broker, which):
    port = broker.port if which == "device" else broker.service_port
    answer = _clear_text_answer(port)
    # A CONNACK starts with 0x20; a TLS server answers a non-TLS hello with nothing or an alert.
    assert not answer.startswith(b"\x20"), f"clear-text MQTT answered on the {which} listener"


def test_a_client_that_trusts_another_ca_refuses_the_broker(broker, tmp_path):
    other = make_certs(tmp_path / "other-ca", "localhost", "127.0.0.1")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="D00001", protocol=mqtt.MQTTv5)
    c.username_pw_set("D00001", broker.passwords["D00001"])
    c.tls_set(ca_certs=str(other / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect("127.0.0.1", broker.port)
    # ... and so does a simulated device, with a message that says what to do.
    url = broker.device_url("D00001")
    with pytest.raises(PublishError, match="did not verify.*--ca-file"):
        Publisher(url=url, client_id="D00001", ca_file=str(other / "ca.crt"), connect_timeout_s=5).connect()
    # Without a CA file the system's trust store is used, which does not know a private CA.
    with pytest.raises(PublishError, match="did not verify"):
        Publisher(url=url, client_id="D00001", connect_timeout_s=5).connect()


def test_a_certificate_for_another_name_is_refused(broker):
    # What paho does with cert_reqs=CERT_REQUIRED: the default context checks the name too.
    ctx = ssl.create_default_context(cafile=str(broker.ca_file))
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            ctx.wrap_socket(raw, server_hostname="broker.example.org")
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_a_simulated_device_verifies_the_broker_and_publishes(broker):
    import json
    import time

    pub = Publisher(url=broker.device_url("D00001"), client_id="ignored-by-the-broker",
                    ca_file=str(broker.ca_file), connect_timeout_s=10).connect()
    try:
        payload = json.dumps({"ts": int(time.time() * 1000), "values": {"pm10": 80.0}}).encode()
        pub.publish(_message("telemetry/dust/S0001/D00001", payload))
        pub.flush()
        assert pub.acked == 1
    finally:
        pub.close()


def _message(topic: str, payload: bytes) -> SimMessage:
    return SimMessage(sim_ts_ms=0, topic=topic, payload=payload, fault=None, device="D00001", kind="dust",
                      site="S0001")
