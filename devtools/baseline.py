"""The "tutorial pipeline": the baseline `citywatch bench` compares the service against.

What a typical MQTT → InfluxDB tutorial builds, and what PEERS.md measured as the Python
peer: a paho subscriber with a persistent session (fixed client id, clean session off),
QoS 1 with paho's *automatic* acks (the PUBACK goes out on arrival, before anything is
stored), `json.loads` and nothing else (no validation, no spool, no dead letters), and a
thread that every 200 ms posts whatever arrived as one plain InfluxDB 1.x `/write`
(line protocol, ms precision). Measurement = kind, tags site/device, like the service, so
both are counted with the same query.

It is deliberately not hardened: a crash loses what was acked but not yet written, a
failed write drops the batch after a few tries, and malformed input goes to InfluxDB or
to the floor. It exists only to be measured.

    python -m devtools.baseline --mqtt-url mqtt://127.0.0.1:1883 \
        --influx-url http://127.0.0.1:8086 --database baseline --client-id tutorial
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt

log = logging.getLogger("devtools.baseline")


def _ts_ms(ts) -> int:
    if isinstance(ts, (int, float)):
        return int(ts)
    return int(datetime.fromisoformat(ts).timestamp() * 1000)


def _field(key: str, value) -> str:
    if value is True:
        return f"{key}=true"
    if value is False:
        return f"{key}=false"
    return f"{key}={float(value)!r}"


class TutorialPipeline:
    def __init__(self, *, mqtt_url: str, influx_url: str, database: str, client_id: str,
                 topic: str = "telemetry/#", interval_s: float = 0.2) -> None:
        self.influx_url = influx_url.rstrip("/")
        self.database = database
        self.interval_s = interval_s
        self.buffer: list[str] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.received = 0
        self.written = 0
        parts = urlsplit(mqtt_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.topic = topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.http = httpx.Client(timeout=30)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        log.info("connected to broker (session present: %s)", flags.session_present)
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        # The tutorial: parse the JSON, turn it into a line, keep going. No validation.
        try:
            _, kind, site, device = msg.topic.split("/")
            data = json.loads(msg.payload)
            fields = ",".join(_field(k, v) for k, v in data["values"].items())
            line = f"{kind},device={device},site={site} {fields} {_ts_ms(data['ts'])}"
        except Exception:  # noqa: BLE001 - tutorials log and move on
            return
        with self.lock:
            self.buffer.append(line)
            self.received += 1

    def _flush(self) -> None:
        with self.lock:
            batch, self.buffer = self.buffer, []
        if not batch:
            return
        body = "\n".join(batch).encode()
        for attempt in range(3):
            try:
                r = self.http.post(f"{self.influx_url}/write", params={"db": self.database, "precision": "ms"},
                                   content=body)
                if r.status_code < 300:
                    self.written += len(batch)
                    return
                log.warning("write failed: %s %s", r.status_code, r.text[:200])
            except httpx.HTTPError as exc:
                log.warning("write failed: %s", exc)
            time.sleep(0.5 * (attempt + 1))
        log.error("dropping a batch of %d lines", len(batch))

    def run(self) -> None:
        self.http.post(f"{self.influx_url}/query", params={"q": f'CREATE DATABASE "{self.database}"'})
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        try:
            while not self.stop_event.wait(self.interval_s):
                self._flush()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self._flush()
            self.http.close()
            log.info("stopped; received %d, written %d", self.received, self.written)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.baseline", description=__doc__.splitlines()[0])
    p.add_argument("--mqtt-url", required=True)
    p.add_argument("--influx-url", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--client-id", default="tutorial-pipeline")
    p.add_argument("--interval-ms", type=float, default=200.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pipe = TutorialPipeline(mqtt_url=args.mqtt_url, influx_url=args.influx_url, database=args.database,
                            client_id=args.client_id, interval_s=args.interval_ms / 1000)
    signal.signal(signal.SIGTERM, lambda *_: pipe.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: pipe.stop_event.set())
    pipe.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
