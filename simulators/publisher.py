"""QoS 1 publisher that returns only when the broker acknowledged every message.

Lifecycle: `connect()` (or `with`), any number of `publish()`, then `flush()` which
blocks until every PUBACK arrived, then `close()`. The session is persistent (fixed client
id, clean session off); on a lost connection it reconnects with backoff, and paho re-sends
every unacknowledged message (DUP), so a broker restart costs time, not messages.
Duplicates are possible (QoS 1 is at-least-once).
"""

from __future__ import annotations

import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
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
    """One MQTT client, at most `max_inflight` messages awaiting PUBACK.

    Single-threaded on purpose: paho's network loop runs in the caller's thread between
    publishes. With paho's own loop thread the two threads trade the GIL on every PUBACK
    and throughput drops about tenfold (measured: 1,900 vs 18,000 msg/s). The price is that
    reconnecting is ours: `_recover()` retries with exponential backoff.
    """

    def __init__(self, *, url: str, client_id: str, max_inflight: int = 10_000, keepalive_s: int = 30,
                 connect_timeout_s: float = 30.0, stall_timeout_s: float = 300.0, ca_file: str | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if not 1 <= max_inflight <= MAX_INFLIGHT_LIMIT:
            raise PublishError(f"max_inflight must be within 1..{MAX_INFLIGHT_LIMIT}")
        self._address = BrokerAddress.parse(url)
        self._max_inflight = max_inflight
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._clock = clock
        self._sleep = sleep
        self._connected = False
        self._connects = 0
        self._last_progress = clock()
        self.sent = 0
        self.acked = 0
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                   protocol=mqtt.MQTTv311)
        # paho keeps every unacknowledged message and re-sends it (DUP) after reconnect().
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        if self._address.username:
            self._client.username_pw_set(self._address.username, self._address.password)
        if self._address.tls:  # a device verifies the broker: ca_file (a private CA), else the system's
            self._client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # paho callbacks: they run inside self._client.loop(), in our thread -------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self._connected = True
            self._connects += 1
            self._last_progress = self._clock()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected = False

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # paho reports each message once (it forgets the mid at the first PUBACK).
        self.acked += 1
        self._last_progress = self._clock()

    # network loop -----------------------------------------------------------------
    def _await_connack(self, deadline: float) -> bool:
        while not self._connected and self._clock() < deadline:
            if self._client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
                return False
        return self._connected

    def _check_stall(self, what: str) -> None:
        if self._clock() - self._last_progress > self._stall_timeout_s:
            raise PublishError(f"{what}: no PUBACK for {self._stall_timeout_s:.0f} s "
                               f"({self.sent - self.acked} messages unacknowledged)")

    def _recover(self) -> None:
        """Reconnect with backoff until the broker is back (or acks have stalled too long)."""
        delay = 0.25
        while not self._connected:
            self._check_stall("reconnecting")
            try:
                self._client.reconnect()
                if self._await_connack(self._clock() + 10.0):
                    return
            except OSError:
                pass  # refused or unreachable: the broker is still down
            self._sleep(delay)
            delay = min(delay * 2, 8.0)

    def _service(self, timeout: float) -> None:
        """Let paho read PUBACKs and write queued packets; reconnect if the link is gone."""
        if self._connected:
            self._client.loop(timeout)
        if not self._connected:
            self._recover()

    def connect(self) -> "Publisher":
        deadline = self._clock() + self._connect_timeout_s
        while True:
            try:
                self._client.connect(self._address.host, self._address.port, keepalive=self._keepalive_s)
                if self._await_connack(deadline):
                    return self
            except ssl.SSLCertVerificationError as exc:  # retrying cannot help: say why at once
                raise PublishError(f"the certificate of MQTT broker {self._address.host}:{self._address.port} did "
                                   f"not verify ({exc.verify_message}): give the CA that signed it with --ca-file "
                                   "or CW_MQTT_CA_FILE") from exc
            except OSError:
                pass
            if self._clock() >= deadline:
                raise PublishError(f"no connection to MQTT broker {self._address.host}:{self._address.port} "
                                   f"within {self._connect_timeout_s:.0f} s")
            self._sleep(0.5)

    def publish(self, message: SimMessage) -> None:
        while self.sent - self.acked >= self._max_inflight:
            self._service(0.01)
            self._check_stall("publishing")
        info = self._client.publish(message.topic, message.payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST):
            # NO_CONN / CONN_LOST are fine: paho keeps the message and sends it after reconnect.
            raise PublishError(f"paho refused to queue a message: {mqtt.error_string(info.rc)}")
        self.sent += 1
        if self.sent % 64 == 0:
            self._service(0)

    def idle(self, seconds: float) -> None:
        """Wait `seconds` while keeping the connection served (keepalive, acks)."""
        end = self._clock() + seconds
        while (left := end - self._clock()) > 0:
            self._service(min(left, 0.1))

    def flush(self) -> None:
        """Block until every published message has its PUBACK."""
        self._last_progress = max(self._last_progress, self._clock() - 1.0)
        while self.acked < self.sent:
            self._service(0.05)
            self._check_stall("flushing")

    @property
    def reconnects(self) -> int:
        return max(0, self._connects - 1)

    def close(self) -> None:
        if self._connected:
            self._client.disconnect()
            self._client.loop(0.1)

    def __enter__(self) -> "Publisher":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_all(messages: Iterable[SimMessage], *, url: str, client_id: str, pacer: Pacer | None = None,
                max_inflight: int = 10_000, stall_timeout_s: float = 300.0, connect_timeout_s: float = 30.0,
                on_progress: Callable[[int, int], None] | None = None,
                clock: Callable[[], float] = time.monotonic, ca_file: str | None = None) -> PublishSummary:
    """Publish every message (QoS 1), paced by `pacer`, and return once all are acked."""
    kinds: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    started = clock()
    last_report = started
    with Publisher(url=url, client_id=client_id, max_inflight=max_inflight,
                   stall_timeout_s=stall_timeout_s, connect_timeout_s=connect_timeout_s, clock=clock,
                   ca_file=ca_file) as pub:
        # Pacing waits keep the connection served instead of sleeping blind.
        paced = replace(pacer, sleep=pub.idle) if pacer is not None else None
        for message in messages:
            if paced is not None:
                paced.wait(message.sim_ts_ms)
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
