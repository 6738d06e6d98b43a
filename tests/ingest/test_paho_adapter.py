"""ingest/paho_adapter.py: the only code that touches paho's private parts.

These tests fail loudly when the installed paho differs from the one the fast path was
verified on, and show that the adapter notices each kind of change and falls back to
plain paho with a warning instead of silently doing nothing (or stalling)."""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import __version__ as installed_paho

from ingest import paho_adapter

ROOT = Path(__file__).resolve().parents[2]
PRIVATE_USE = re.compile(r"\._(sock|in_packet|packet_queue|last_bytes_received|reconnect_delay|topic|out_packet|sockpair[RW])\b"
                         r"|\btime_func\b|_ConnectionState")


def test_the_installed_paho_has_every_private_part_the_fast_path_uses():
    problems = paho_adapter.paho_internals_problems()
    assert problems == [], (
        f"paho-mqtt {installed_paho} changed what ingest/paho_adapter.py relies on: {problems}. The service "
        "still runs (plain paho, slower); re-verify the fast path against this paho, then move the pin")
    assert paho_adapter.fast_path_available()


def test_pyproject_pins_paho_to_the_verified_minor_version():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (paho,) = [d for d in deps if d.startswith("paho-mqtt")]
    major, minor = map(int, paho_adapter.VERIFIED_PAHO.split("."))
    assert paho.replace(" ", "") == f"paho-mqtt>={major}.{minor},<{major}.{minor + 1}"
    assert installed_paho.startswith(paho_adapter.VERIFIED_PAHO + ".")


def test_no_other_module_touches_paho_private_parts():
    offenders = []
    for package in ("citywatch", "ingest", "alerts", "api", "simulators"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "paho_adapter.py":
                continue
            for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
                if PRIVATE_USE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_a_paho_without_time_func_is_noticed(monkeypatch):
    # (plain paho itself needs it, so there is nothing to fall back to: the check says so)
    monkeypatch.delattr(mqtt, "time_func")
    problems = paho_adapter.paho_internals_problems()
    assert problems and all("time_func" in p for p in problems), problems


def _without_in_packet(monkeypatch):
    init = mqtt.Client.__init__

    def patched(self, *a, **kw):
        init(self, *a, **kw)
        del self._in_packet
    monkeypatch.setattr(mqtt.Client, "__init__", patched)


class _MessageWithoutRawTopic:
    """A paho message that keeps its topic only as text."""

    def __init__(self, mid: int = 0, topic: bytes = b"") -> None:
        self.mid, self.topic = mid, topic.decode()


@pytest.mark.parametrize("change,expected", [
    (lambda mp: mp.setattr(mqtt.Client, "_packet_queue", lambda self, packet, info=None: None), "_packet_queue"),
    (_without_in_packet, "_in_packet"),
    (lambda mp: mp.setattr(mqtt, "MQTTMessage", _MessageWithoutRawTopic), "_topic"),
    (lambda mp: mp.setattr(paho_adapter.inspect, "getsource", lambda obj: "class Client: pass"), "pending()"),
])
def test_each_change_of_paho_is_noticed_and_falls_back_to_plain_paho(monkeypatch, caplog, change, expected):
    change(monkeypatch)
    problems = paho_adapter.paho_internals_problems()
    assert any(expected in p for p in problems), problems
    paho_adapter.fast_path_available.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="citywatch.ingest.mqtt"):
            client = paho_adapter.new_client("cw-test", on_publishes=lambda batch: None)
        assert type(client) is mqtt.Client and not paho_adapter.is_fast(client)
        assert "using plain paho" in caplog.text and expected in caplog.text
    finally:
        paho_adapter.fast_path_available.cache_clear()


def test_plain_paho_acknowledges_one_message_at_a_time(monkeypatch):
    client = paho_adapter.new_client("cw-test", on_publishes=lambda batch: None, fast=False)
    acked: list[tuple[int, int]] = []
    monkeypatch.setattr(client, "ack", lambda mid, qos: acked.append((mid, qos)))
    paho_adapter.send_pubacks(client, [3, 4, 5])
    assert acked == [(3, 1), (4, 1), (5, 1)]
    paho_adapter.buffer_socket(client)  # plain paho keeps its own socket
    assert getattr(client, "_sock", None) is None


def test_the_fast_client_queues_one_write_for_a_group_of_pubacks(monkeypatch):
    client = paho_adapter.new_client("cw-test", on_publishes=lambda batch: None, fast=True)
    queued: list = []
    monkeypatch.setattr(client, "_packet_queue", lambda *args: queued.append(args))
    paho_adapter.send_pubacks(client, [7, 8])
    assert queued == [(0x40, b"\x40\x02\x00\x07\x40\x02\x00\x08", 8, 1)]


def test_a_topic_that_is_not_utf8_keeps_its_bytes_visible():
    msg = mqtt.MQTTMessage(mid=1, topic=b"telemetry/dust/S1/\xff")
    assert paho_adapter.message_topic(msg) == "telemetry/dust/S1/\\xff"
    assert paho_adapter.message_topic(mqtt.MQTTMessage(mid=1, topic=b"a/b")) == "a/b"
