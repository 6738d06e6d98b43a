"""Helpers for integration tests: the service as a real subprocess, a QoS 1 publisher
that waits for every PUBACK, and InfluxDB counting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]


class ServiceProcess:
    """`citywatch run` in a child process with a CW_* environment."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServiceProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run"], env=self.env, cwd=ROOT,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def wait_log(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace"):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"service exited {self.proc.returncode}: {self.log()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in service log within {timeout}s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("service did not stop on SIGTERM") from None


def service_env(*, mqtt_url: str, influx_url: str, data_dir: Path, database: str, **extra: str) -> dict[str, str]:
    env = {"CW_MQTT_URL": mqtt_url, "CW_INFLUX_URL": influx_url, "CW_DATA_DIR": str(data_dir),
           "CW_INFLUX_DATABASE": database, "CW_LOG_FORMAT": "text", "CW_MQTT_CLIENT_ID": f"cw-{database}"}
    env.update({f"CW_{k.upper()}": v for k, v in extra.items()})
    return env


class Publisher:
    """QoS 1 publisher with a persistent session: returns only when every message has its
    PUBACK, re-sending across broker restarts."""

    def __init__(self, port: int, client_id: str, *, inflight: int = 1000) -> None:
        self.acked = 0
        self._done = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.2, 2)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._done:
            self.acked += 1
            self._done.notify_all()

    def publish_all(self, messages: Iterable[tuple[str, bytes]], timeout: float = 300) -> int:
        n = 0
        for topic, payload in messages:
            self.client.publish(topic, payload, qos=1)
            n += 1
        deadline = time.monotonic() + timeout
        with self._done:
            while self.acked < n:
                if not self._done.wait(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"only {self.acked}/{n} PUBACKs within {timeout}s")
        return n

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def readings(n_devices: int, per_device: int, *, start_ms: int | None = None, site: str = "S0001",
             kind: str = "dust") -> list[tuple[str, bytes]]:
    """Valid telemetry interleaved across devices; distinct timestamps per device."""
    start_ms = start_ms or (int(time.time() * 1000) - per_device * 1000 - 60_000)
    out = []
    for i in range(per_device):
        for d in range(n_devices):
            payload = {"ts": start_ms + i * 1000, "seq": i, "values": {"pm10": 50.0 + (i % 50), "pm25": 20 + d % 7,
                                                                       "noise": 55.5, "spray_on": i % 2 == 0}}
            out.append((f"telemetry/{kind}/{site}/D{d:05d}", json.dumps(payload).encode()))
    return out


def influx_count(influx_url: str, database: str, measurement: str = "dust", field: str = "pm10") -> int:
    r = httpx.get(f"{influx_url}/query", params={"db": database, "q": f'SELECT count("{field}") FROM "{measurement}"'})
    r.raise_for_status()
    series = r.json()["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def wait_count(influx_url: str, database: str, expected: int, timeout: float = 120, **kw) -> int:
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        try:
            n = influx_count(influx_url, database, **kw)
        except httpx.HTTPError:
            n = -1
        if n >= expected:
            return n
        time.sleep(0.3)
    return n


def fuzz_settings(examples: int):
    """Hypothesis settings for the property tests of the input parsers.

    `make test` runs the same `examples` examples every time (derandomized): a red suite
    means a change broke something, never that the search got lucky that day. `make fuzz`
    (CW_FUZZ_EXPLORE=1) explores instead: new random examples, CW_FUZZ_EXAMPLES of them per
    test (default 5,000). What it finds is pinned as an explicit test."""
    from hypothesis import HealthCheck, settings

    explore = os.environ.get("CW_FUZZ_EXPLORE") == "1"
    return settings(max_examples=int(os.environ.get("CW_FUZZ_EXAMPLES", "5000")) if explore else examples,
                    derandomize=not explore, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
