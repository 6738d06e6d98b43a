"""Notification delivery: notifiers, the durable outbox stage, and the in-process hub.

A notifier is one small class with one async `send(notification) -> Delivery`. It never
sleeps, loops or retries: it only says whether a failure is worth retrying. The single
`OutboxDispatcher` stage (one per notifier) owns order, backoff and logging: it takes the
oldest undelivered outbox row, sends it, and on a retryable failure keeps it at the head
(so a receiver that is down for an hour gets everything afterwards, once, in order).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from citywatch.aio import wait_event
from citywatch.lineproto import escape_tag, format_value
from citywatch.model import RawMessage

log = logging.getLogger("citywatch.alerts")

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Notification:
    """One alert change to tell the world about. `event` is firing | resolved | repeat |
    escalated | acked (and pending, for the in-process stream only)."""

    seq: int
    event: str
    alert: dict[str, Any]  # the docs/contract.md §3 alert payload at the time of the change
    created_ms: int

    @property
    def topic(self) -> str:
        a = self.alert
        return f"alerts/{a['site']}/{a['device']}/{a['rule']}"


@dataclass(frozen=True, slots=True)
class Delivery:
    ok: bool
    retryable: bool = False
    detail: str = ""


@runtime_checkable
class Notifier(Protocol):
    name: str

    async def send(self, notification: Notification) -> Delivery:
        """Deliver once; never sleep or retry. Return Delivery(ok=False, retryable=...)."""
        ...


# -- MQTT --------------------------------------------------------------------------------
class MqttNotifier:
    """Publishes the alert to `alerts/{site}/{device}/{rule}`, QoS 1, retained while firing;
    on resolve an empty retained payload clears it (docs/contract.md §3)."""

    name = "mqtt"

    def __init__(self, *, host: str, port: int, username: str | None = None, password: str | None = None,
                 tls: bool = False, client_id: str = "citywatch-alerts", ack_timeout: float = 10.0,
                 ca_file: str | None = None):
        import paho.mqtt.client as mqtt

        self._ack_timeout = ack_timeout
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True)
        if username:
            self._client.username_pw_set(username, password)
        if tls:  # verify the broker against ca_file (CW_MQTT_CA_FILE), else the system's CAs
            import ssl

            self._client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()

    @classmethod
    def from_settings(cls, settings: Any) -> "MqttNotifier":
        a = settings.mqtt
        return cls(host=a.host, port=a.port, username=a.username, password=a.password, tls=a.tls,
                   client_id=f"{settings.mqtt_client_id}-alerts",
                   ca_file=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None)

    async def send(self, notification: Notification) -> Delivery:
        if notification.event == "pending":
            return Delivery(True, detail="pending is not published")
        alert = notification.alert
        if alert["state"] == "resolved":
            payload = b""
        elif alert["state"] == "firing":
            payload = json.dumps(alert, ensure_ascii=False).encode()
        else:
            return Delivery(True, detail=f"state {alert['state']} is not published")
        return await self._publish(notification.topic, payload, retain=True)

    async def _publish(self, topic: str, payload: bytes, *, retain: bool, name: str = "") -> Delivery:
        """Publish at QoS 1 and wait for the broker's PUBACK; every failure is retryable.
        `name`: put before the detail (a receiver's name)."""
        prefix = f"{name}: " if name else ""
        if not self._client.is_connected():
            return Delivery(False, retryable=True, detail=f"{prefix}mqtt not connected")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != 0:
            return Delivery(False, retryable=True, detail=f"{prefix}mqtt publish rc={info.rc}")
        try:
            await asyncio.to_thread(info.wait_for_publish, self._ack_timeout)
        except (RuntimeError, ValueError) as exc:
            return Delivery(False, retryable=True, detail=f"{prefix}mqtt {type(exc).__name__}: {exc}")
        if not info.is_published():
            return Delivery(False, retryable=True, detail=f"{prefix}mqtt PUBACK timeout")
        return Delivery(True, detail=f"{prefix}ok" if name else "")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


# -- webhook ------------------------------------------------------------------------------
MIN_SECRET_BYTES = 32  # the same floor as CW_ALERT_WEBHOOK_SECRET's check in citywatch/settings.py
TIMESTAMP_HEADER = "X-Citywatch-Timestamp"
SIGNATURE_HEADER = "X-Citywatch-Signature"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `X-Citywatch-Signature` value: `sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`.
    The timestamp (Unix seconds, also sent as `X-Citywatch-Timestamp`) is inside the MAC, so a
    receiver that rejects old timestamps and remembers the deliveries of the last few minutes
    rejects a captured request played again (alerts/README.md shows the receiver's check)."""
    return "sha256=" + hmac.new(secret, f"{int(timestamp)}.".encode() + body, hashlib.sha256).hexdigest()


def _retryable_status(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


class WebhookNotifier:
    """POSTs `{"event", "seq", "alert"}` as JSON, signed with HMAC-SHA256 over the send time
    and the exact body (`sign`). `X-Citywatch-Delivery` carries the outbox seq so a receiver
    can drop the rare duplicate (a crash between its 2xx and our commit). Each attempt is
    signed with its own time, so a delivery retried after an outage is not stale."""

    def __init__(self, url: str, secret: bytes | str, *, name: str = "webhook", timeout: float = 10.0,
                 client: httpx.AsyncClient | None = None, clock: Clock = time.time):
        from citywatch.errors import ConfigError

        self.name = name
        self.url = url
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret or b"")
        if len(self._secret) < MIN_SECRET_BYTES:
            # An empty or short key makes the signature forgeable: refuse to start instead.
            raise ConfigError(f"webhook {name}: the secret must be at least {MIN_SECRET_BYTES} bytes "
                              f"(got {len(self._secret)}); set CW_ALERT_WEBHOOK_SECRET, e.g. `openssl rand -hex 32`")
        self._clock = clock
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def send(self, notification: Notification) -> Delivery:
        if notification.event == "pending":
            return Delivery(True)
        body = json.dumps({"event": notification.event, "seq": notification.seq, "alert": notification.alert},
                          ensure_ascii=False, separators=(",", ":")).encode()
        ts = int(self._clock())
        headers = {"Content-Type": "application/json; charset=utf-8",
                   TIMESTAMP_HEADER: str(ts),
                   SIGNATURE_HEADER: sign(self._secret, ts, body),
                   "X-Citywatch-Event": notification.event,
                   "X-Citywatch-Delivery": str(notification.seq)}
        try:
            resp = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Delivery(False, retryable=True, detail=f"webhook: {type(exc).__name__}")
        if 200 <= resp.status_code < 300:
            return Delivery(True, detail=str(resp.status_code))
        return Delivery(False, retryable=_retryable_status(resp.status_code), detail=f"webhook HTTP {resp.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


# -- alert history in InfluxDB (through the ingest sink) -----------------------------------
def alert_line(n: Notification) -> str:
    a = n.alert
    tags = ",".join(f"{k}={escape_tag(str(a[k]))}" for k in ("device", "kind", "rule", "severity", "site"))
    fields = {"alert_id": a["id"], "state": a["state"], "event": n.event, "acked": bool(a["acked"]),
              "message": a["message"], "message_en": a["message_en"]}
    for k in ("value", "threshold"):
        v = a.get(k)
        if isinstance(v, bool):
            fields[k + "_bool"] = v
        elif isinstance(v, (int, float)):
            fields[k] = float(v)
    body = ",".join(f"{escape_tag(k)}={format_value(v)}" for k, v in fields.items())
    return f"alerts,{tags} {body} {n.created_ms}"


class SinkNotifier:
    """Writes alert history (measurement `alerts`) through the ingest sink; delivered once
    the sink reports the outcome durable."""

    name = "history"

    def __init__(self, sink: Any):
        self._sink = sink

    async def send(self, notification: Notification) -> Delivery:
        from ingest.types import Accepted

        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()

        def done(ok: bool) -> None:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(ok))

        raw = RawMessage(topic=notification.topic, payload=json.dumps(notification.alert, ensure_ascii=False).encode(),
                         received_ms=notification.created_ms, source="alerts")
        outcome = Accepted(raw=raw, lines=(alert_line(notification),))
        try:
            await asyncio.to_thread(self._sink.submit, outcome, done)
            # No timeout of its own: the dispatcher bounds the whole send. A nested
            # wait_for could swallow the shutdown's cancellation on Python 3.11 when the
            # result arrives at the same moment (the service then hung for 30 s).
            ok = await fut
        except (OSError, RuntimeError) as exc:
            return Delivery(False, retryable=True, detail=f"sink: {exc!r}")
        return Delivery(ok, retryable=not ok, detail="" if ok else "sink could not store")


# -- in-process stream (the API's SSE) ------------------------------------------------------
class NotificationHub:
    """Fan-out of notifications to in-process subscribers (bounded; a slow subscriber loses
    its oldest items rather than blocking the engine). Not durable: live view only."""

    def __init__(self, max_items: int = 1000):
        self._subs: list[HubSubscription] = []
        self._max = max_items

    def publish(self, n: Notification) -> None:
        for sub in list(self._subs):
            sub._put(n)

    def subscribe(self) -> "HubSubscription":
        """Registered at once: everything published after this call is seen."""
        sub = HubSubscription(self, self._max)
        self._subs.append(sub)
        return sub


class HubSubscription:
    """`async for n in sub:`; `close()` (or `async with`) unsubscribes."""

    def __init__(self, hub: NotificationHub, max_items: int):
        self._hub = hub
        self._q: deque[Notification] = deque(maxlen=max_items)
        self._ev: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def _put(self, n: Notification) -> None:
        self._q.append(n)
        if self._ev is not None and self._loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self._loop:
                self._ev.set()
            else:
                self._loop.call_soon_threadsafe(self._ev.set)

    def __aiter__(self) -> "HubSubscription":
        return self

    async def __anext__(self) -> Notification:
        if self._ev is None:
            self._ev, self._loop = asyncio.Event(), asyncio.get_running_loop()
        while not self._q:
            if self.closed:
                raise StopAsyncIteration
            self._ev.clear()
            await self._ev.wait()
        return self._q.popleft()

    def close(self) -> None:
        self.closed = True
        if self in self._hub._subs:
            self._hub._subs.remove(self)
        if self._ev is not None:
            self._ev.set()

    async def __aenter__(self) -> "HubSubscription":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# -- the one retry stage ----------------------------------------------------------------------
class Stage(Protocol):
    """A delivery stage: `step()` sends at most once and says how long to wait (None:
    nothing queued; 0: go on; > 0: seconds); `wake` is set when rows arrive."""

    wake: asyncio.Event

    async def step(self) -> float | None: ...


async def run_stage(stage: Stage) -> None:
    """Until cancelled: step, then wait for the time the step asked for or for `wake`.
    `stage.wake` is read each time round (the owner may bind a new event to its loop)."""
    while True:
        wait = await stage.step()
        if wait is None:
            await stage.wake.wait()
            stage.wake.clear()
        elif wait > 0:
            # Re-check at least every second: an injected clock may jump.
            if await wait_event(stage.wake, min(wait, 1.0)):
                stage.wake.clear()


@dataclass
class Backoff:
    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0

    def delay(self, attempts: int) -> float:
        return min(self.max_s, self.initial_s * self.factor ** max(0, attempts - 1))


@dataclass
class OutboxDispatcher:
    """Delivers one notifier's outbox rows strictly in order. Retryable failures keep the
    row at the head with exponential backoff (no limit: nothing is dropped); a
    non-retryable failure marks the row failed, logs it and moves on."""

    store: Any
    notifier: Notifier
    clock: Clock = time.time
    backoff: Backoff = field(default_factory=Backoff)
    send_timeout_s: float = 30.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0
    failures: int = 0

    async def run(self) -> None:
        """Until cancelled: deliver, wait for the backoff or for new rows."""
        await run_stage(self)

    async def step(self) -> float | None:
        """Try the head row once. None: nothing queued; 0: go on; > 0: seconds to wait."""
        name = self.notifier.name
        row = self.store.next_outbox(name)
        if row is None:
            return None
        wait = row.next_ms / 1000.0 - self.clock()
        if wait > 0:
            return wait
        n = Notification(row.seq, row.event, row.payload, row.created_ms)
        try:
            # asyncio.timeout, not wait_for: it never turns a cancellation into a result.
            async with asyncio.timeout(self.send_timeout_s):
                result = await self.notifier.send(n)
        except TimeoutError:
            result = Delivery(False, retryable=True, detail="send timed out")
        except Exception as exc:  # a notifier bug must not stop delivery for good
            result = Delivery(False, retryable=True, detail=f"{type(exc).__name__}: {exc}")
        now_ms = int(self.clock() * 1000)
        if result.ok:
            self.store.outbox_delivered(row.seq, now_ms, result.detail)
            self.delivered += 1
            return 0.0
        self.failures += 1
        if result.retryable:
            delay = self.backoff.delay(row.attempts + 1)
            self.store.outbox_retry(row.seq, now_ms + int(delay * 1000), result.detail)
            log.warning("alert notification %s #%d failed (%s); retry in %.1fs", name, row.seq, result.detail, delay)
            return delay
        self.store.outbox_failed(row.seq, result.detail)
        log.error("alert notification %s #%d dropped (not retryable): %s", name, row.seq, result.detail)
        return 0.0
