"""Notifiers: webhook outbox against a local receiver that is down, then flaky, then up
(everything once, in order, signed); MQTT retained alert topics against a real broker."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt
import pytest

from alerts import AlertEngine, Backoff, EngineConfig, MqttNotifier, WebhookNotifier
from alerts.notify import Delivery, Notification, OutboxDispatcher
from alerts_helpers import MIN, T0, series
from devtools.servers import free_port

SECRET = "s3cret-值-" + "0123456789abcdef" * 2  # at least 32 bytes (the notifier refuses less)


class Receiver:
    """A tiny HTTP receiver on 127.0.0.1; answers 503 to the first `fail_first` posts."""

    def __init__(self, port: int, fail_first: int = 0):
        self.port, self.fail_first, self.got, self.posts = port, fail_first, [], 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts += 1
                if outer.posts <= outer.fail_first:
                    self.send_response(503)
                else:
                    outer.got.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def leak_flaps(n_devices: int):
    out = []
    for d in range(n_devices):
        dev = f"H{d + 1}"
        out += series(dev, T0 + d * 1000, 2, {"leak_detected": True}, site=f"S{d + 1}")
        out += series(dev, T0 + 2 * MIN + d * 1000, 2, {"leak_detected": False}, site=f"S{d + 1}")
    return sorted(out, key=lambda r: r.ts_ms)


def test_webhook_outbox_down_then_up_delivers_once_in_order(tmp_path):
    port = free_port()
    hook = WebhookNotifier(f"http://127.0.0.1:{port}/hook", SECRET, timeout=2.0)
    config = EngineConfig(state_path=tmp_path / "a.sqlite3", time_mode="event",
                          backoff=Backoff(initial_s=0.05, max_s=0.2), tick_interval_s=0.05)
    engine = AlertEngine(config, rules=None, notifiers=[hook], clock=time.time)
    for r in leak_flaps(5):
        engine.process_readings([r])
    expected = [(r["event"], r["alert_id"]) for r in engine.store.query(
        "SELECT event, alert_id FROM outbox WHERE notifier='webhook' ORDER BY seq")]
    assert len(expected) == 10  # 5 x (firing, resolved)

    async def go():
        task = asyncio.create_task(engine.run(None))
        await asyncio.sleep(0.6)  # receiver down: connection refused, retried with backoff
        assert engine.backlog()["webhook"] == 10
        with Receiver(port, fail_first=2) as rx:  # then up, answering 503 twice first
            deadline = time.monotonic() + 15
            while len(rx.got) < 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # nothing more may arrive
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await hook.aclose()
            return rx.got

    got = asyncio.run(go())
    bodies = [json.loads(b) for _, b in got]
    assert [(b["event"], b["alert"]["id"]) for b in bodies] == expected  # once each, in order
    seqs = [b["seq"] for b in bodies]
    assert seqs == sorted(seqs) and len(set(seqs)) == 10
    for headers, body in got:
        ts = headers["X-Citywatch-Timestamp"]
        assert abs(int(ts) - time.time()) < 60
        want = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["X-Citywatch-Signature"] == want
    assert bodies[0]["alert"]["message"].startswith("换热站检测到漏水")
    engine.close()


@pytest.mark.parametrize("status,retryable", [
    (503, True),   # server trouble: keep and retry
    (429, True),   # rate limited: retry
    (400, False),  # our request is wrong: dropped with a log line, next one goes
    (404, False),  # no such endpoint
])
def test_webhook_status_sorting(status, retryable):
    import httpx

    transport = httpx.MockTransport(lambda req: httpx.Response(status))
    hook = WebhookNotifier("http://x/hook", SECRET, client=httpx.AsyncClient(transport=transport))
    n = Notification(1, "firing", {"id": "a", "rule": "r", "site": "s", "device": "d"}, 0)
    d = asyncio.run(hook.send(n))
    assert d == Delivery(False, retryable, f"webhook HTTP {status}")


def test_non_retryable_failure_moves_on(tmp_path):
    # one notifier answers 'not retryable' for the first row: it is marked failed, the rest go
    from alerts.testing import RecordingNotifier

    class FirstBad(RecordingNotifier):
        async def send(self, n):
            if n.seq == 1:
                return Delivery(False, retryable=False, detail="bad")
            return await super().send(n)

    rec = FirstBad(name="x")
    engine = AlertEngine(EngineConfig(state_path=tmp_path / "a.sqlite3", time_mode="event"), notifiers=[rec])
    for r in leak_flaps(2):
        engine.process_readings([r])
    assert asyncio.run(engine.drain(5))
    assert len(rec.sent) == 3
    engine.close()


def retained(port: int, seconds: float = 1.0) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    c.on_message = lambda cl, ud, msg: got.__setitem__(msg.topic, msg.payload) if msg.retain else None
    c.connect("127.0.0.1", port)
    c.subscribe("alerts/#", qos=1)
    c.loop_start()
    time.sleep(seconds)
    c.loop_stop()
    c.disconnect()
    return got


def test_mqtt_retained_while_firing_cleared_on_resolve(tmp_path, broker):
    notifier = MqttNotifier(host="127.0.0.1", port=broker.port, client_id=f"cw-alerts-{uuid.uuid4().hex[:6]}")
    config = EngineConfig(state_path=tmp_path / "a.sqlite3", time_mode="event", backoff=Backoff(initial_s=0.05, max_s=0.2))
    engine = AlertEngine(config, notifiers=[notifier])
    topic = "alerts/S7/H7/heating_leak"
    try:
        engine.process_readings(series("H7", T0, 2, {"leak_detected": True}, site="S7"))
        assert asyncio.run(engine.drain(10))
        msgs = retained(broker.port)
        assert topic in msgs
        payload = json.loads(msgs[topic])
        assert payload["state"] == "firing" and payload["severity"] == "critical" and payload["acked"] is False
        assert payload["rule"] == "heating_leak" and payload["resolved_at"] is None

        engine.process_readings(series("H7", T0 + 2 * MIN, 2, {"leak_detected": False}, site="S7"))
        assert asyncio.run(engine.drain(10))
        assert topic not in retained(broker.port)
    finally:
        notifier.close()
        engine.close()


def test_run_consumes_validated_stream_and_delivers(tmp_path):
    # the service path: readings published on the ValidatedStream from another thread are
    # evaluated by run(), and the outbox is delivered by its stage without drain()
    from alerts.testing import RecordingNotifier
    from citywatch.stream import ValidatedStream

    rec = RecordingNotifier()
    engine = AlertEngine(EngineConfig(state_path=tmp_path / "a.sqlite3", time_mode="event", tick_interval_s=0.05),
                         notifiers=[rec])
    stream = ValidatedStream()

    async def go():
        task = asyncio.create_task(engine.run(stream))
        while not stream.has_subscribers:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(stream.publish, series("H1", T0, 2, {"leak_detected": True}))
        deadline = time.monotonic() + 5
        while not rec.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(go())
    assert rec.events() == [("firing", "heating_leak", "critical")]
    engine.close()
