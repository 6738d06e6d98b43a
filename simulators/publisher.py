"""QoS 1 publisher that returns only when the broker acknowledged every message.

Lifecycle: `connect()` (or `with`), any number of `publish()`, then `flush()` which
blocks until every PUBACK arrived, then `close()`. The session is persistent (fixed client
id, clean session off) and paho reconnects with backoff on its network thread; paho keeps
each unacknowledged message and re-sends it (DUP) after a reconnect, so a broker restart
costs time, not messages. Duplicates are possible (QoS 1 is at-least-once).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from simulators.errors import PublishError
from simulators.message import SimMessage
from simulators.pacing import Pacer

# Message ids are 16 bits: more than 65,535 unacknowledged messages would reuse an id.
MAX_INFLIGHT_LIMIT = 65_000


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> "BrokerAddress":
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise PublishError(f"MQTT URL scheme must be mqtt:// or mqtts://, not {parts.scheme!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )


@dataclass(frozen=True, slots=True)
class PublishSummary:
    sent: int
    acked: int
    by_kind: dict[str, int]
    faults: dict[str, int]
    seconds: float
    reconnects: int = 0

    @classmethod
    def merge(cls, parts: Iterable["PublishSummary"]) -> "PublishSummary":
        parts = list(parts)
        kinds: Counter[str] = Counter()
        faults: Counter[str] = Counter()
        for p in parts:
            kinds.update(p.by_kind)
            faults.update(p.faults)
        return cls(sum(p.sent for p in parts), sum(p.acked for p in parts), dict(kinds), dict(faults),
                   max((p.seconds for p in parts), default=0.0), sum(p.reconnects for p in parts))


class Publisher:
    """One MQTT client, at most `max_inflight` messages awaiting PUBACK."""

    def __init__(self, *, url: str, client_id: str, max_inflight: int = 10_000, keepalive_s: int = 30,
                 connect_timeout_s: float = 30.0, stall_timeout_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= max_inflight <= MAX_INFLIGHT_LIMIT:
            raise PublishError(f"max_inflight must be within 1..{MAX_INFLIGHT_LIMIT}")
        self._address = BrokerAddress.parse(url)
        self._max_inflight = max_inflight
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: set[int] = set()   # mids published, PUBACK not yet seen
        self._early: set[int] = set()     # PUBACKs that overtook the bookkeeping of their publish()
        self._connected = False
        self._connects = 0
        self._last_progress = clock()
        self.sent = 0
        self.acked = 0
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                   protocol=mqtt.MQTTv311)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=8)
        if self._address.username:
            self._client.username_pw_set(self._address.username, self._address.password)
        if self._address.tls:
            self._client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # paho network thread -------------------------------------------------------------
    # These run with paho's internal locks held: they take our lock only briefly, and our
    # code never calls paho while holding it, so the two locks cannot deadlock.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            if not reason_code.is_failure:
                self._connected = True
                self._connects += 1
                self._last_progress = self._clock()
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            if mid in self._pending:
                self._pending.discard(mid)
                self.acked += 1
            else:
                self._early.add(mid)
            self._last_progress = self._clock()
            self._cond.notify_all()

    # caller thread --------------------------------------------------------------------
    def connect(self) -> "Publisher":
        try:
            self._client.connect_async(self._address.host, self._address.port, keepalive=self._keepalive_s)
        except (OSError, ValueError) as exc:
            raise PublishError(f"cannot connect to MQTT broker {self._address.host}:{self._address.port}: {exc}") from exc
        self._client.loop_start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._connected, timeout=self._connect_timeout_s):
                self._client.loop_stop()
                raise PublishError(
                    f"no connection to MQTT broker {self._address.host}:{self._address.port} "
                    f"within {self._connect_timeout_s:.0f} s")
        return self

    def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait under the lock until `predicate`, failing when acks stop for too long."""
        while not predicate():
            self._cond.wait(timeout=1.0)
            if self._clock() - self._last_progress > self._stall_timeout_s:
                raise PublishError(f"{what}: no PUBACK for {self._stall_timeout_s:.0f} s "
                                   f"({len(self._pending)} messages unacknowledged)")

    def publish(self, message: SimMessage) -> None:
        with self._cond:
            self._wait(lambda: len(self._pending) < self._max_inflight, "publishing")
        # Not under our lock: paho may call _on_publish for this very mid before we return.
        info = self._client.publish(message.topic, message.payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN is fine: paho queued it and sends it after the reconnect.
            raise PublishError(f"paho refused to queue a message: {mqtt.error_string(info.rc)}")
        with self._cond:
            self.sent += 1
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked += 1
            else:
                self._pending.add(info.mid)

    def flush(self) -> None:
        """Block until every published message has its PUBACK."""
        with self._cond:
            self._last_progress = max(self._last_progress, self._clock() - 1.0)
            self._wait(lambda: not self._pending, "flushing")

    @property
    def reconnects(self) -> int:
        return max(0, self._connects - 1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> "Publisher":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_all(messages: Iterable[SimMessage], *, url: str, client_id: str, pacer: Pacer | None = None,
                max_inflight: int = 10_000, stall_timeout_s: float = 300.0, connect_timeout_s: float = 30.0,
                on_progress: Callable[[int, int], None] | None = None,
                clock: Callable[[], float] = time.monotonic) -> PublishSummary:
    """Publish every message (QoS 1), paced by `pacer`, and return once all are acked."""
    kinds: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    started = clock()
    last_report = started
    with Publisher(url=url, client_id=client_id, max_inflight=max_inflight,
                   stall_timeout_s=stall_timeout_s, connect_timeout_s=connect_timeout_s, clock=clock) as pub:
        for message in messages:
            if pacer is not None:
                pacer.wait(message.sim_ts_ms)
            pub.publish(message)
            kinds[message.kind] += 1
            if message.fault:
                faults[message.fault] += 1
            if on_progress is not None and (pub.sent % 1000 == 0 or clock() - last_report >= 0.25):
                last_report = clock()
                on_progress(pub.sent, pub.acked)
        pub.flush()
        if on_progress is not None:
            on_progress(pub.sent, pub.acked)
        return PublishSummary(pub.sent, pub.acked, dict(kinds), dict(faults), clock() - started, pub.reconnects)
