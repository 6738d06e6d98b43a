"""Publisher and load generator against a real mosquitto (fixtures in tests/conftest.py)."""

from __future__ import annotations

import argparse
import io
import threading
import time
import uuid
from collections import Counter

import paho.mqtt.client as mqtt
import pytest

from simulators import LoadSpec, Pacer, generate, publish_all, run_load
from simulators.cli import add_arguments, run

pytestmark = pytest.mark.integration


class Subscriber:
    """A persistent QoS 1 subscriber to telemetry/# and events/# that counts what arrives."""

    def __init__(self, port: int) -> None:
        self.received: Counter[tuple[str, bytes]] = Counter()
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, *a: c.subscribe([("telemetry/#", 1), ("events/#", 1)])
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.received[(message.topic, message.payload)] += 1

    def wait_for(self, expected: Counter, timeout: float = 30.0) -> Counter:
        """Missing messages (empty when all arrived; duplicates are allowed, QoS 1)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                missing = expected - self.received
            if not missing:
                return missing
            time.sleep(0.1)
        return missing

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def sent(messages) -> Counter:
    return Counter((m.topic, m.payload) for m in messages)


def test_every_message_is_acked_and_received(mosquitto):
    messages = list(generate("faults", sites=4, seed=1, duration_s=2 * 3600))
    assert len(messages) > 2000
    sub = Subscriber(mosquitto.port)
    try:
        summary = publish_all(messages, url=mosquitto.url, client_id="sim-test-1", max_inflight=500)
        assert summary.sent == summary.acked == len(messages)
        assert sum(summary.by_kind.values()) == len(messages) and summary.faults
        assert not sub.wait_for(sent(messages))
    finally:
        sub.close()


def test_broker_restart_loses_nothing(persistent_mosquitto):
    mosquitto = persistent_mosquitto
    messages = list(generate("normal-day", sites=6, seed=2, duration_s=3600))
    assert len(messages) > 1500
    sub = Subscriber(mosquitto.port)
    result = {}

    def publish() -> None:
        result["summary"] = publish_all(messages, url=mosquitto.url, client_id="sim-test-restart",
                                        pacer=Pacer(rate=1500), max_inflight=200, stall_timeout_s=60)

    worker = threading.Thread(target=publish)
    try:
        worker.start()
        time.sleep(0.5)  # part-way through
        mosquitto.restart()
        worker.join(60)
        assert not worker.is_alive()
        summary = result["summary"]
        assert summary.sent == summary.acked == len(messages)
        assert summary.reconnects >= 1
        assert not sub.wait_for(sent(messages))
    finally:
        sub.close()


def test_load_generator_spreads_over_processes(broker):
    spec = LoadSpec(scenario="normal-day", sites=6, seed=4, url=broker.url, duration_s=1800, processes=2,
                    client_id_prefix=f"sim-load-{uuid.uuid4().hex[:6]}")
    expected = list(generate("normal-day", sites=6, seed=4, duration_s=1800))
    sub = Subscriber(broker.port)
    progress = []
    try:
        summary = run_load(spec, on_progress=lambda s, a: progress.append((s, a)))
        assert summary.sent == summary.acked == len(expected)
        assert not sub.wait_for(sent(expected))
    finally:
        sub.close()


def test_cli_publishes_and_prints_a_summary(broker):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    args = parser.parse_args(["--scenario", "dust-episode", "--sites", "2", "--duration", "20m",
                              "--speed", "max", "--seed", "5", "--client-id", "sim-cli"])
    assert run(args, broker.url, out=out, err=err) == 0
    assert "sent " in out.getvalue() and "dust" in out.getvalue()
    assert "\r[" in err.getvalue()


def test_cli_lists_scenarios_and_rejects_bad_input(broker):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    assert run(parser.parse_args(["--list"]), broker.url, out=out, err=err) == 0
    assert "dust-episode" in out.getvalue() and "faults" in out.getvalue()
    assert run(parser.parse_args(["--scenario", "nope"]), broker.url, out=out, err=err) == 2
    assert run(parser.parse_args(["--sites", "1", "--duration", "1m", "--no-progress",
                                               "--connect-timeout", "2"]),
               "mqtt://127.0.0.1:1", out=out, err=err) == 1
