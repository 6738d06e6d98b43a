"""The MQTT input: a paho-mqtt 2.x client with a persistent session and manual acks.

Each message is decoded on paho's network thread and submitted to the sink with a
callback that sends its PUBACK — which the committer calls only after the outcome is on
disk. So a crash at any moment leaves every unacknowledged message with the broker, which
delivers it again on reconnect (MQTT 5, clean_start=False, session expiry set).

`receive_maximum` caps the messages the broker sends us unacknowledged: that is the
backpressure when the committer (or the disk) is slow.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from citywatch.model import RawMessage
from citywatch.settings import Settings
from ingest.decode import Decoder
from ingest.metrics import IngestMetrics
from ingest.types import BatchSink, Outcome, internal_error

log = logging.getLogger("citywatch.ingest.mqtt")

SUBSCRIPTIONS = ("telemetry/#", "events/#")
# With several ingest workers, one shared subscription: the broker splits the stream
# between the workers' sessions. One worker subscribes plainly, because mosquitto 2.0
# restores plain subscriptions from persistence after a restart but not shared ones.
SHARE_GROUP = "citywatch"
SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our queue for a week of downtime
_READ_BYTES = 262144
_PUBACK = struct.Struct("!BBH")  # fixed header 0x40, remaining length 2, packet id (MQTT 5: success)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """The MQTT variable byte integer at `buf[i:]`: (value, index after it). IndexError
    when the buffer ends inside it, ValueError when it is longer than four bytes."""
    value, shift = 0, 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 127) << shift
        if byte < 128:
            return value, i
        shift += 7
        if shift > 21:
            raise ValueError("variable byte integer longer than 4 bytes")


class _BufferedSocket:
    """A plain TCP socket read in large chunks, with a fast path for PUBLISH packets.

    paho reads each packet's fixed header byte by byte (`recv(1)`) and then its body: three
    or four system calls per message, each releasing and re-taking the GIL. With other
    threads busy (committer, writer, alert engine) every re-take can wait for the switch
    interval — a convoy that cost more than paho's own parsing. Serving those reads from
    one 256 KiB `recv` removes the system calls; `pending()` tells paho's loop that bytes
    are waiting without the socket being readable (the same hook paho uses for TLS) — but
    not the start of a PUBLISH that `take_publishes` cannot finish: those bytes wait for
    the socket, or paho's loop would call select() with no timeout and spin until they do.

    `take_publishes` parses the complete QoS 0/1 PUBLISH packets at the head of the buffer
    itself (see `_Client.loop_read`); everything else still goes through paho.
    """

    __slots__ = ("_sock", "_buf", "_pos", "_short", "_tls")

    def __init__(self, sock) -> None:
        self._sock, self._buf, self._pos = sock, b"", 0
        self._short = False  # take_publishes stopped at an incomplete packet; no byte came since
        # TLS: decrypted bytes can wait inside the SSL object while the socket is not readable.
        self._tls = isinstance(sock, ssl.SSLSocket)

    def recv(self, n: int) -> bytes:
        self._short = False
        if self._pos >= len(self._buf):
            self._buf, self._pos = self._sock.recv(_READ_BYTES), 0  # BlockingIOError passes through to paho
            if not self._buf:
                return b""
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def pending(self) -> int:
        mine = 0 if self._short else len(self._buf) - self._pos
        return mine + self._sock.pending() if self._tls else mine

    def read_more(self) -> bool:
        """Append what the socket has to the unparsed rest; False at end of stream.
        Raises BlockingIOError when nothing is waiting."""
        if self._tls:
            data = self._read_records()
        else:
            data = self._sock.recv(_READ_BYTES)
        if not data:
            return False
        self._buf, self._pos, self._short = self._buf[self._pos:] + data, 0, False
        return True

    def _read_records(self) -> bytes:
        """TLS: everything waiting, up to _READ_BYTES. The broker writes each packet as a TLS
        record of its own and one SSL read returns one record, so a single recv would hand
        the bulk parser one message at a time."""
        parts: list[bytes] = []
        size = 0
        while size < _READ_BYTES:
            try:
                part = self._sock.recv(_READ_BYTES - size)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:  # TLS's "nothing waiting"
                if parts:
                    break
                raise BlockingIOError from exc
            if not part:
                if parts:
                    break  # the end of stream shows on the next read
                return b""
            parts.append(part)
            size += len(part)
        return b"".join(parts)

    def take_publishes(self, out: list) -> bool:
        """Move the complete QoS 0/1 PUBLISH packets at the head of the buffer into `out`
        as (topic bytes, payload bytes, packet id, qos). Returns True when it stopped at
        an incomplete packet (more bytes needed), False when the buffer is empty or the
        next packet is for paho (another type, QoS 2, a malformed length)."""
        buf, pos, end = self._buf, self._pos, len(self._buf)
        append = out.append
        self._short = False
        try:
            while pos < end:
                first = buf[pos]
                qos = (first >> 1) & 3
                if first >> 4 != 3 or qos > 1:
                    return False
                try:
                    length, i = _varint(buf, pos + 1)  # the remaining length
                except IndexError:
                    self._short = True
                    return True  # the fixed header is not all here yet
                stop = i + length
                if stop > end:
                    self._short = True
                    return True
                tlen = (buf[i] << 8) | buf[i + 1]
                j = i + 2 + tlen
                topic = buf[i + 2:j]
                if qos:
                    mid = (buf[j] << 8) | buf[j + 1]
                    j += 2
                else:
                    mid = 0
                # MQTT 5 properties of a PUBLISH (expiry, content type, user properties)
                # say nothing citywatch uses; topic aliases are off (we never allow any).
                plen, j = _varint(buf, j)
                j += plen
                if j > stop or len(topic) != tlen:
                    return False  # inconsistent lengths: leave it to paho's checks
                append((topic, buf[j:stop], mid, qos))
                pos = stop
            return False
        except (IndexError, ValueError):  # a malformed length: paho reports the protocol error
            return False
        finally:
            self._pos = pos

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _Client(mqtt.Client):
    """paho's client with the hot path of a subscriber done in bulk.

    paho handles every packet with several Python calls, a `Properties` object, an
    `MQTTMessage` and a topic-to-callback match — about 35 µs of the ~100 µs a reading
    costs the whole service. When the socket is a `_BufferedSocket` and `on_publishes`
    is set, complete QoS 0/1 PUBLISH packets are parsed straight from the read buffer and
    handed over as one list per read; paho keeps doing everything else (CONNACK, SUBACK,
    PINGRESP, QoS 2, DISCONNECT, partial packets, keepalive, reconnects, writes).
    """

    on_publishes = None  # callable(list[(topic bytes, payload, mid, qos)]) or None

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        sock = self._sock
        if self.on_publishes is None or not isinstance(sock, _BufferedSocket):
            return self._loop_read_paho(max_packets)
        ok = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        batch: list = []
        try:
            while self._sock is sock:
                if self._in_packet["command"] == 0:  # paho is not in the middle of a packet
                    need_more = sock.take_publishes(batch)
                    if batch:
                        self._last_bytes_received = mqtt.time_func()
                        self.on_publishes(batch)
                        batch = []
                    if need_more or sock.pending() == 0:
                        try:
                            if not sock.read_more():
                                return super().loop_read(1)  # paho sees the end of stream and reports it
                        except BlockingIOError:
                            return ok
                        except OSError:
                            return super().loop_read(1)  # paho logs the error and reconnects
                        continue
                rc = super().loop_read(1)  # a packet for paho, possibly partly read already
                if rc != ok or self._sock is not sock:
                    return rc
                if self._in_packet["command"] != 0 and sock.pending() == 0:
                    return ok  # paho waits for the rest of its packet on the next select()
            return ok
        finally:
            if batch:
                self.on_publishes(batch)

    def _loop_read_paho(self, max_packets: int) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        sock = self._sock
        # Parse everything already read into user space before the next select().
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and isinstance(sock, _BufferedSocket) \
                and sock.pending() > 0 and self._sock is sock:
            rc = super().loop_read(1)
        return rc


class AckToken:
    """The `on_durable` callback of one MQTT message. The committer hands a whole group
    commit's tokens to `MqttConsumer.ack_many` (one socket write for all PUBACKs);
    calling a token alone acknowledges just its message."""

    __slots__ = ("ack_group", "mid", "qos", "generation")

    def __init__(self, consumer: "MqttConsumer", mid: int, qos: int, generation: int) -> None:
        self.ack_group, self.mid, self.qos, self.generation = consumer, mid, qos, generation

    def __call__(self, ok: bool) -> None:
        self.ack_group.ack_many([self], ok)


class _PahoLog(logging.LoggerAdapter):
    """paho's own log lines, less one: after our DISCONNECT has closed the socket, paho's
    network thread can look at it once more and log "Client is not connected" as an ERROR
    — at a clean stop, now and then. That line is dropped while we are stopping. While the
    broker cannot be reached paho logs it at every retry; then it goes to DEBUG, and
    `MqttConsumer._on_connect_fail` says it once a minute with the address and the delay."""

    def __init__(self, stopping: Callable[[], bool]) -> None:
        super().__init__(logging.getLogger("citywatch.paho"), {})
        self._stopping = stopping

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self._stopping() and isinstance(msg, str) and msg.startswith("Client is not connected"):
            return
        if isinstance(msg, str) and msg.startswith("Client is not connected") and "MQTT_CS_CONNECTING" in msg:
            level = logging.DEBUG  # a failed (re)connect: MqttConsumer reports it, rate-limited, with the address
        super().log(level, msg, *args, **kwargs)


class MqttConsumer:
    def __init__(self, *, settings: Settings, decoder: Decoder, sink: BatchSink, metrics: IngestMetrics,
                 client_id: str | None = None, shared: bool = False) -> None:
        self._settings = settings
        self._decoder = decoder
        self._sink = sink
        self._metrics = metrics
        self._address = settings.mqtt
        self._client_id = client_id or settings.mqtt_client_id
        self._filters = [f"$share/{SHARE_GROUP}/{t}" if shared else t for t in SUBSCRIPTIONS]
        self._generation = 0  # bumped on every disconnect: acks never cross connections
        self._draining = False
        self.connected = threading.Event()
        self._connect_failures = 0
        self._last_connect_warning: float | None = None
        self._last_refused_log: float | None = None
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        c = _Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=mqtt.MQTTv5,
                    manual_ack=True)
        a = self._address
        if a.username:
            c.username_pw_set(a.username, a.password)
        if a.tls:  # verify the broker: its certificate chains to CW_MQTT_CA_FILE and names the host
            ca = self._settings.mqtt_ca_file
            c.tls_set(ca_certs=str(ca) if ca else None, cert_reqs=ssl.CERT_REQUIRED)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_message = self._on_message  # what paho itself still delivers (QoS 2)
        c.on_publishes = self._on_publishes
        c.enable_logger(_PahoLog(lambda: self._draining))  # type: ignore[arg-type]  # paho only calls .log
        return c

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = self._settings.mqtt_receive_maximum
        # connect_async + loop_start: the service starts (and keeps its spool and writer
        # running) even while the broker is down; paho reconnects with backoff.
        self._client.connect_async(self._address.host, self._address.port, keepalive=30, clean_start=False,
                                   properties=props)
        self._client.loop_start()
        log.info("connecting to %r as %s", self._address, self._client_id)

    def drain(self) -> None:
        """Stop taking new messages (they stay with the broker, unacknowledged)."""
        self._draining = True

    def stop(self, *, settle_s: float = 0.5) -> None:
        """Disconnect after the last acks have gone out. Call after the sink has committed."""
        self._draining = True
        time.sleep(settle_s)  # let paho's thread write the queued PUBACKs
        self._client.disconnect()
        self._client.loop_stop()

    # -- paho callbacks (network thread) ---------------------------------------------
    def _on_connect_fail(self, client, userdata) -> None:
        """The broker cannot be reached: one WARNING with its address and the retry delay,
        then one a minute while it stays so (paho retries every 1..30 s)."""
        self._connect_failures += 1
        now = time.monotonic()
        if self._last_connect_warning is None or now - self._last_connect_warning >= 60:
            self._last_connect_warning = now
            current = getattr(client, "_reconnect_delay", None)  # paho doubles it before the next try
            delay = 1 if current is None else min(current * 2, 30)
            log.warning("MQTT broker %r unreachable (%d failed attempt(s) so far); retrying in %d s, then up to "
                        "every 30 s; devices' messages wait in the broker", self._address, self._connect_failures,
                        delay)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            now = time.monotonic()
            if self._last_refused_log is None or now - self._last_refused_log >= 60:
                self._last_refused_log = now
                log.error("broker %r refused the connection: %s (check CW_MQTT_URL's user and password and the "
                          "broker's ACL); retrying up to every 30 s", self._address, reason_code)
            return
        if self._connect_failures:
            log.info("broker %r reachable again after %d failed attempt(s)", self._address, self._connect_failures)
        self._connect_failures, self._last_connect_warning, self._last_refused_log = 0, None, None
        sock = getattr(client, "_sock", None)
        if sock is not None and type(sock).__name__ in ("socket", "SSLSocket"):
            client._sock = _BufferedSocket(sock)  # TLS too: the bulk PUBLISH parse is most of the gain
        # Subscribing again is harmless with a present session and needed without one.
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self._filters])
        self.connected.set()
        self._metrics.mqtt_connected.set(1)
        log.info("connected to broker (session present: %s)", flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._generation += 1
        self.connected.clear()
        self._metrics.mqtt_connected.set(0)
        if not self._draining:
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        if self._draining:
            return  # not acknowledged: the broker delivers it again next session
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "backslashreplace")
        outcome = self._outcome(RawMessage(topic, msg.payload, time.time_ns() // 1_000_000))
        self._sink.submit(outcome, AckToken(self, msg.mid, msg.qos, self._generation))

    def _outcome(self, raw: RawMessage) -> Outcome:
        try:
            return self._decoder.decode(raw)
        except Exception as exc:  # a decoder bug must not stall the stream: keep the message
            log.exception("decoder failed on %s", raw.topic[:200])
            return internal_error(raw, exc)

    def _on_publishes(self, batch: list[tuple[bytes, bytes, int, int]]) -> None:
        """The fast path's messages (see `_Client`), one read's worth at a time."""
        if self._draining:
            return
        now_ms = time.time_ns() // 1_000_000
        gen = self._generation
        outcome = self._outcome
        items = []
        for topic_bytes, payload, mid, qos in batch:
            try:
                topic = topic_bytes.decode()
            except UnicodeDecodeError:
                topic = topic_bytes.decode("utf-8", "backslashreplace")
            items.append((outcome(RawMessage(topic, payload, now_ms)), AckToken(self, mid, qos, gen)))
        self._sink.submit_many(items)

    def ack_many(self, tokens: list[AckToken], ok: bool = True) -> None:
        """Send the PUBACKs of `tokens` in receive order (MQTT requires that order).

        paho's public `ack(mid)` queues one packet and wakes its network thread per
        message; at tens of thousands of messages a second that wake-up dominates. When
        paho's packet queue is available we queue all PUBACKs of a commit as one write;
        otherwise (a future paho without it) we fall back to `ack()` per message.
        """
        if not ok:
            return
        # An ack for a message of an earlier connection would acknowledge the wrong packet
        # id on the new one; the broker re-sends those messages instead.
        gen = self._generation
        mids = [t.mid for t in tokens if t.qos == 1 and t.generation == gen]
        if not mids:
            return
        queue = getattr(self._client, "_packet_queue", None)
        if queue is None or len(mids) == 1:
            for mid in mids:
                self._client.ack(mid, 1)
            return
        packet = b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids])
        queue(0x40, packet, mids[-1], 1)
