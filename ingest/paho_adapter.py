"""The one module that touches paho-mqtt's private parts, and the check that they are there.

The MQTT input's fast path (docs/scaling.md) leans on paho internals no public API offers:

| private part | what we do with it |
|---|---|
| `Client._sock` | read it, and replace the TCP (or TLS) socket by a `BufferedSocket` after CONNACK |
| paho's loop asking `self._sock.pending()` (`hasattr(self._sock, 'pending')`) | `BufferedSocket.pending()` tells it bytes are already read |
| paho reading through `self._sock.recv(n)` | `BufferedSocket.recv` serves those reads from its buffer |
| `Client._in_packet["command"]` | 0 when paho is not in the middle of a packet: only then may we parse |
| `Client._last_bytes_received`, `paho.mqtt.client.time_func` | keepalive bookkeeping for the packets we parse ourselves |
| `Client._packet_queue(command, packet, mid, qos)` | queue a whole group commit's PUBACKs as one write |
| `MQTTMessage._topic` | the raw topic bytes of a message whose topic is not UTF-8 |
| `Client._reconnect_delay` | the delay before the next reconnect, for the "broker unreachable" warning |
| the log text `"Client is not connected"` (with the state `MQTT_CS_CONNECTING`) | dropped while we stop; DEBUG while (re)connecting (`PahoLog`) |

`paho_internals_problems()` checks every one of them on the installed paho. `new_client()`
runs that check once: when all are present it returns the fast client; when one is
missing or has changed shape it logs a warning naming it and returns plain paho
(`mqtt.Client`, public API only: one `ack()` per message, paho's own packet parsing).
Slower, never wrong. `tests/ingest/test_paho_adapter.py` fails loudly on a paho whose
internals differ, and `pyproject.toml` pins the paho minor version this was verified on.
"""

from __future__ import annotations

import functools
import inspect
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt import __version__ as PAHO_VERSION
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ingest.mqtt_wire import PUBACK_COMMAND, Publish, pubacks, take_publishes

log = logging.getLogger("citywatch.ingest.mqtt")

VERIFIED_PAHO = "2.2"  # the minor version these internals were checked on (pyproject pins it)
_READ_BYTES = 262144
_NOT_CONNECTED = "Client is not connected"
_CONNECTING = "MQTT_CS_CONNECTING"


class BufferedSocket:
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
    (`ingest.mqtt_wire.take_publishes`); everything else still goes through paho.
    """

    __slots__ = ("_sock", "_buf", "_pos", "_short", "_tls")

    def __init__(self, sock: Any) -> None:  # a socket.socket, an ssl.SSLSocket, or a test double with recv
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
        return mine + int(self._sock.pending()) if self._tls else mine

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

    def take_publishes(self, out: list[Publish]) -> bool:
        """Move the complete QoS 0/1 PUBLISH packets at the head of the buffer into `out`
        as (topic bytes, payload bytes, packet id, qos). Returns True when it stopped at
        an incomplete packet (more bytes needed), False when the buffer is empty or the
        next packet is for paho (another type, QoS 2, a malformed length)."""
        self._pos, self._short = take_publishes(self._buf, self._pos, out)
        return self._short

    def __getattr__(self, name: str) -> Any:  # a proxy: whatever the wrapped socket has
        return getattr(self._sock, name)


class FastClient(mqtt.Client):
    """paho's client with the hot path of a subscriber done in bulk.

    paho handles every packet with several Python calls, a `Properties` object, an
    `MQTTMessage` and a topic-to-callback match — about 35 µs of the ~100 µs a reading
    costs the whole service. When the socket is a `BufferedSocket` and `on_publishes`
    is set, complete QoS 0/1 PUBLISH packets are parsed straight from the read buffer and
    handed over as one list per read; paho keeps doing everything else (CONNACK, SUBACK,
    PINGRESP, QoS 2, DISCONNECT, partial packets, keepalive, reconnects, writes).
    """

    on_publishes: Callable[[list[Publish]], None] | None = None

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        on_publishes = self.on_publishes
        if on_publishes is None or not isinstance(self._sock, BufferedSocket):
            return self._loop_read_paho(max_packets)
        sock: BufferedSocket = self._sock
        ok = MQTTErrorCode.MQTT_ERR_SUCCESS
        batch: list[Publish] = []
        try:
            while self._sock is sock:
                if self._in_packet["command"] == 0:  # paho is not in the middle of a packet
                    need_more = sock.take_publishes(batch)
                    if batch:
                        self._last_bytes_received = mqtt.time_func()
                        on_publishes(batch)
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
                on_publishes(batch)

    def _loop_read_paho(self, max_packets: int) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        sock = self._sock
        if not isinstance(sock, BufferedSocket):
            return rc
        pending = sock.pending
        # Parse everything already read into user space before the next select().
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and pending() > 0 and self._sock is sock:
            rc = super().loop_read(1)
        return rc


def paho_internals_problems() -> list[str]:
    """Each private part of paho this module relies on that the installed paho lacks or
    has in another shape, as one line each; empty when all are as verified."""
    problems: list[str] = []
    if not callable(getattr(mqtt, "time_func", None)):
        problems.append("paho.mqtt.client.time_func is missing")
    try:
        probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cw-probe", protocol=mqtt.MQTTv5,
                            manual_ack=True)
        message = mqtt.MQTTMessage(topic=b"t")
    except Exception as exc:  # a paho this different cannot even be probed
        return [*problems, f"paho's Client or MQTTMessage cannot be built as verified: {exc!r}"]
    if not hasattr(probe, "_sock"):
        problems.append("Client._sock is missing")
    in_packet = getattr(probe, "_in_packet", None)
    if not isinstance(in_packet, dict) or in_packet.get("command") != 0:
        problems.append('Client._in_packet is not a dict with "command" 0 when idle')
    if not isinstance(getattr(probe, "_last_bytes_received", None), float):
        problems.append("Client._last_bytes_received is not a float")
    queue = getattr(probe, "_packet_queue", None)
    try:
        params = list(inspect.signature(queue).parameters)[:4] if callable(queue) else []
    except (TypeError, ValueError):
        params = []
    if params != ["command", "packet", "mid", "qos"]:
        problems.append(f"Client._packet_queue(command, packet, mid, qos) has changed: {params or 'missing'}")
    if not isinstance(getattr(message, "_topic", None), bytes):
        problems.append("MQTTMessage._topic is not the raw topic bytes")
    if not hasattr(probe, "_reconnect_delay"):
        problems.append("Client._reconnect_delay is missing")
    try:
        source = inspect.getsource(mqtt.Client)
    except (OSError, TypeError):
        source = ""
    if "hasattr(self._sock, 'pending')" not in source:
        problems.append("paho's loop no longer asks its socket for pending()")
    if "self._sock.recv(" not in source:
        problems.append("paho no longer reads through self._sock.recv()")
    if "self._in_packet[\"command\"]" not in source and "self._in_packet['command']" not in source:
        problems.append('paho no longer keeps the packet in progress in self._in_packet["command"]')
    if _NOT_CONNECTED not in source or "Last known Connection State" not in source \
            or not hasattr(getattr(mqtt, "_ConnectionState", None), _CONNECTING):
        problems.append(f"paho no longer logs {_NOT_CONNECTED!r} with its {_CONNECTING} state "
                        "(PahoLog's filter would do nothing)")
    return problems


@functools.cache
def fast_path_available() -> bool:
    """Checked once per process; a missing part is named in one warning."""
    problems = paho_internals_problems()
    if problems:
        log.warning("paho-mqtt %s differs from the %s.x the MQTT fast path was verified on; using plain "
                    "paho (slower, same guarantees): %s", PAHO_VERSION, VERIFIED_PAHO,
                    "; ".join(problems))
    return not problems


def new_client(client_id: str, *, on_publishes: Callable[[list[Publish]], None],
               fast: bool | None = None) -> mqtt.Client:
    """An MQTT 5 client with manual acks: the fast one when paho's internals are as
    verified (`fast=None`, the default, asks `fast_path_available()`), else plain paho."""
    if fast is None:
        fast = fast_path_available()
    if not fast:
        return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                           manual_ack=True)
    client = FastClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                        manual_ack=True)
    client.on_publishes = on_publishes
    return client


def is_fast(client: mqtt.Client) -> bool:
    return isinstance(client, FastClient)


def buffer_socket(client: mqtt.Client) -> None:
    """After CONNACK: serve a fast client's reads of its TCP or TLS socket from a buffer, so
    that the bulk PUBLISH parse applies (plain paho keeps its socket)."""
    sock = getattr(client, "_sock", None) if is_fast(client) else None
    if sock is not None and type(sock).__name__ in ("socket", "SSLSocket"):
        client._sock = BufferedSocket(sock)


def next_reconnect_delay(client: mqtt.Client, *, max_delay: int) -> int:
    """Seconds until paho's next reconnect attempt, as far as it can be known (paho doubles
    its private delay before each try); 1 when this paho does not say."""
    current = getattr(client, "_reconnect_delay", None)
    return 1 if not isinstance(current, int) else min(current * 2, max_delay)


def send_pubacks(client: mqtt.Client, mids: list[int]) -> None:
    """Queue the PUBACKs of `mids` in this order (MQTT requires receive order).

    paho's public `ack(mid)` queues one packet and wakes its network thread per message;
    at tens of thousands of messages a second that wake-up dominates. The fast client
    queues all PUBACKs of a group commit as one write; plain paho acks one by one."""
    if not is_fast(client) or len(mids) == 1:
        for mid in mids:
            client.ack(mid, 1)
        return
    client._packet_queue(PUBACK_COMMAND, pubacks(mids), mids[-1], 1)


def message_topic(msg: mqtt.MQTTMessage) -> str:
    """The topic of a message paho delivered itself; a topic that is not UTF-8 keeps its
    bytes visible (backslash escapes) so that the dead letter shows what was sent."""
    try:
        return msg.topic
    except UnicodeDecodeError:
        raw = getattr(msg, "_topic", None)
        if isinstance(raw, bytes):
            return raw.decode("utf-8", "backslashreplace")
        return "(topic is not UTF-8)"


if TYPE_CHECKING:
    _LoggerAdapter = logging.LoggerAdapter[logging.Logger]
else:
    _LoggerAdapter = logging.LoggerAdapter


class PahoLog(_LoggerAdapter):
    """paho's own log lines, less one: after our DISCONNECT has closed the socket, paho's
    network thread can look at it once more and log "Client is not connected" as an ERROR
    — at a clean stop, now and then. That line is dropped while we are stopping. While the
    broker cannot be reached paho logs it at every retry; then it goes to DEBUG, and
    `MqttConsumer._on_connect_fail` says it once a minute with the address and the delay."""

    def __init__(self, stopping: Callable[[], bool]) -> None:
        super().__init__(logging.getLogger("citywatch.paho"), {})
        self._stopping = stopping

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:  # as LoggerAdapter.log
        if self._stopping() and isinstance(msg, str) and msg.startswith(_NOT_CONNECTED):
            return
        if isinstance(msg, str) and msg.startswith(_NOT_CONNECTED) and _CONNECTING in msg:
            level = logging.DEBUG  # a failed (re)connect: MqttConsumer reports it, rate-limited, with the address
        super().log(level, msg, *args, **kwargs)
