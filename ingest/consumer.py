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
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from citywatch.model import RawMessage
from citywatch.settings import Settings
from ingest import paho_adapter
from ingest.decode import Decoder
from ingest.metrics import IngestMetrics
from ingest.types import BatchSink, DurableCallback, Outcome, internal_error

log = logging.getLogger("citywatch.ingest.mqtt")

SUBSCRIPTIONS = ("telemetry/#", "events/#")
# With several ingest workers, one shared subscription: the broker splits the stream
# between the workers' sessions. One worker subscribes plainly, because mosquitto 2.0
# restores plain subscriptions from persistence after a restart but not shared ones.
SHARE_GROUP = "citywatch"
SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our queue for a week of downtime


class AckToken:
    """The `on_durable` callback of one MQTT message. The committer hands a whole group
    commit's tokens to `MqttConsumer.ack_many` (one socket write for all PUBACKs);
    calling a token alone acknowledges just its message."""

    __slots__ = ("ack_group", "mid", "qos", "generation")

    def __init__(self, consumer: "MqttConsumer", mid: int, qos: int, generation: int) -> None:
        self.ack_group, self.mid, self.qos, self.generation = consumer, mid, qos, generation

    def __call__(self, ok: bool) -> None:
        self.ack_group.ack_many([self], ok)


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
        # paho's internals are used only through ingest/paho_adapter.py, which falls back to
        # plain paho (with a warning) when the installed version lacks one of them.
        c = paho_adapter.new_client(self._client_id, on_publishes=self._on_publishes)
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
        c.on_message = self._on_message  # what paho itself still delivers (QoS 2, or all on plain paho)
        c.enable_logger(paho_adapter.PahoLog(lambda: self._draining))  # type: ignore[arg-type]  # paho only calls .log
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
    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        """The broker cannot be reached: one WARNING with its address and the retry delay,
        then one a minute while it stays so (paho retries every 1..30 s)."""
        self._connect_failures += 1
        now = time.monotonic()
        if self._last_connect_warning is None or now - self._last_connect_warning >= 60:
            self._last_connect_warning = now
            delay = paho_adapter.next_reconnect_delay(client, max_delay=30)
            log.warning("MQTT broker %r unreachable (%d failed attempt(s) so far); retrying in %d s, then up to "
                        "every 30 s; devices' messages wait in the broker", self._address, self._connect_failures,
                        delay)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
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
        paho_adapter.buffer_socket(client)  # TLS too: the bulk PUBLISH parse is most of the gain
        # Subscribing again is harmless with a present session and needed without one.
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self._filters])
        self.connected.set()
        self._metrics.mqtt_connected.set(1)
        log.info("connected to broker (session present: %s)", flags.session_present)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        self._generation += 1
        self.connected.clear()
        self._metrics.mqtt_connected.set(0)
        if not self._draining:
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._draining:
            return  # not acknowledged: the broker delivers it again next session
        topic = paho_adapter.message_topic(msg)
        # bytes() is the same object for paho's bytes payload; typed bytes | bytearray by paho.
        outcome = self._outcome(RawMessage(topic, bytes(msg.payload), time.time_ns() // 1_000_000))
        self._sink.submit(outcome, AckToken(self, msg.mid, msg.qos, self._generation))

    def _outcome(self, raw: RawMessage) -> Outcome:
        try:
            return self._decoder.decode(raw)
        except Exception as exc:  # a decoder bug must not stall the stream: keep the message
            log.exception("decoder failed on %s", raw.topic[:200])
            return internal_error(raw, exc)

    def _on_publishes(self, batch: list[tuple[bytes, bytes, int, int]]) -> None:
        """The fast path's messages (`paho_adapter.FastClient`), one read's worth at a time."""
        if self._draining:
            return
        now_ms = time.time_ns() // 1_000_000
        gen = self._generation
        outcome = self._outcome
        items: list[tuple[Outcome, DurableCallback | None]] = []
        for topic_bytes, payload, mid, qos in batch:
            try:
                topic = topic_bytes.decode()
            except UnicodeDecodeError:
                topic = topic_bytes.decode("utf-8", "backslashreplace")
            items.append((outcome(RawMessage(topic, payload, now_ms)), AckToken(self, mid, qos, gen)))
        self._sink.submit_many(items)

    def ack_many(self, tokens: list[AckToken], ok: bool = True) -> None:
        """Send the PUBACKs of `tokens` in receive order (MQTT requires that order), all
        of one group commit as one write (`paho_adapter.send_pubacks`)."""
        if not ok:
            return
        # An ack for a message of an earlier connection would acknowledge the wrong packet
        # id on the new one; the broker re-sends those messages instead.
        gen = self._generation
        mids = [t.mid for t in tokens if t.qos == 1 and t.generation == gen]
        if not mids:
            return
        paho_adapter.send_pubacks(self._client, mids)
