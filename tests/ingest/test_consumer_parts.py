"""The pieces of the MQTT input that can be tested without a broker: the read buffer
under paho's socket and the grouping of acknowledgements."""

from __future__ import annotations

import logging
import socket

from citywatch.model import RawMessage
from ingest.committer import _acknowledge
from ingest.paho_adapter import BufferedSocket
from ingest.types import Accepted
from tests.ingest.mqtt_packets import publish_packet


def test_buffered_socket_serves_small_reads_from_one_recv_and_reports_pending():
    a, b = socket.socketpair()
    try:
        a.sendall(b"\x30\x05hello\x30\x02hi")
        buf = BufferedSocket(b)
        assert buf.recv(1) == b"\x30"
        assert buf.pending() == 10  # the rest came with the first recv
        assert buf.recv(1) == b"\x05" and buf.recv(5) == b"hello"
        assert buf.recv(100) == b"\x30\x02hi"  # never more than what is buffered
        assert buf.pending() == 0
        b.setblocking(False)
        try:
            buf.recv(1)
            raise AssertionError("an empty non-blocking socket must raise for paho")
        except BlockingIOError:
            pass
        a.close()
        b.setblocking(True)
        assert buf.recv(1) == b""  # EOF is passed on
        assert buf.fileno() == b.fileno()  # everything else is the socket's
    finally:
        b.close()


class Group:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def ack_many(self, tokens, ok=True) -> None:
        self.calls.append([t.mid for t in tokens])


class Token:
    def __init__(self, group: Group, mid: int) -> None:
        self.ack_group, self.mid = group, mid


def test_acknowledgements_of_one_connection_go_out_together_in_order():
    group, other = Group(), Group()
    plain: list[bool] = []
    outcome = Accepted(RawMessage("t", b"", 0))
    items = [(outcome, Token(group, 1)), (outcome, plain.append), (outcome, Token(other, 7)),
             (outcome, Token(group, 2)), (outcome, None), (outcome, Token(group, 3))]
    _acknowledge(items)
    assert group.calls == [[1, 2, 3]] and other.calls == [[7]] and plain == [True]


def buffered(data: bytes) -> tuple[BufferedSocket, socket.socket]:
    a, b = socket.socketpair()
    a.sendall(data)
    a.close()
    buf = BufferedSocket(b)
    assert buf.read_more()
    return buf, b


def test_take_publishes_parses_qos0_and_qos1_with_properties_and_long_payloads():
    big = b"x" * 300  # a two-byte remaining length
    props = b"\x01\x01" + b"\x26\x00\x01k\x00\x01v"  # payload format + a user property
    data = (publish_packet(b"telemetry/dust/S1/D1", b'{"a":1}', mid=7) + publish_packet(b"t/q0", b"zero", qos=0)
            + publish_packet(b"telemetry/dust/S1/D2", big, mid=65535, props=props))
    buf, sock = buffered(data)
    try:
        out: list = []
        assert buf.take_publishes(out) is False  # stopped because the buffer is empty
        assert out == [(b"telemetry/dust/S1/D1", b'{"a":1}', 7, 1), (b"t/q0", b"zero", 0, 0),
                       (b"telemetry/dust/S1/D2", big, 65535, 1)]
        assert buf.pending() == 0
    finally:
        sock.close()


def test_take_publishes_stops_at_a_partial_packet_and_resumes_after_more_bytes():
    first, second = publish_packet(b"a/b", b"one", mid=1), publish_packet(b"a/c", b"two" * 100, mid=2)
    cut = len(first) + 5  # inside the second packet's topic
    a, b = socket.socketpair()
    try:
        a.sendall((first + second)[:cut])
        buf = BufferedSocket(b)
        assert buf.read_more()
        out: list = []
        assert buf.take_publishes(out) is True  # needs more bytes
        assert out == [(b"a/b", b"one", 1, 1)]
        # The 5 bytes are kept but not "pending": paho's loop must wait in select() for the
        # rest instead of calling loop_read again at once (see test_fuzz_inputs.py).
        assert buf.pending() == 0 and buf._buf[buf._pos:] == (first + second)[len(first):cut]
        a.sendall((first + second)[cut:])
        assert buf.read_more()
        assert buf.take_publishes(out) is False
        assert out[1] == (b"a/c", b"two" * 100, 2, 1)
    finally:
        a.close()
        b.close()


def test_take_publishes_leaves_other_packets_and_qos2_to_paho_untouched():
    pingresp, suback = b"\xd0\x00", b"\x90\x04\x00\x01\x00\x01"
    qos2 = publish_packet(b"a/b", b"exactly once", qos=2, mid=9)
    for head in (pingresp, suback, qos2):
        data = publish_packet(b"a/b", b"before", mid=3) + head + publish_packet(b"a/b", b"after", mid=4)
        buf, sock = buffered(data)
        try:
            out: list = []
            assert buf.take_publishes(out) is False
            assert out == [(b"a/b", b"before", 3, 1)]
            # paho reads the next packet byte by byte from exactly where the fast path stopped
            assert buf.recv(len(head)) == head
            assert buf.take_publishes(out) is False and out[-1] == (b"a/b", b"after", 4, 1)
        finally:
            sock.close()


def test_take_publishes_hands_malformed_lengths_to_paho():
    # A remaining length longer than four bytes, and a topic length past the packet end.
    for bad in (b"\x32\xff\xff\xff\xff\x01", b"\x32\x03\x00\x09a"):
        buf, sock = buffered(bad + b"\x00" * 16)
        try:
            out: list = []
            assert buf.take_publishes(out) is False and out == []
            assert buf.recv(1) == bad[:1]  # nothing was consumed
        finally:
            sock.close()


def test_paho_log_drops_only_the_not_connected_error_while_stopping(caplog):
    from ingest.paho_adapter import PahoLog

    stopping = False
    plog = PahoLog(lambda: stopping)
    line = "Client is not connected. Socket: None). Last known Connection State: MQTT_CS_DISCONNECTED"
    with caplog.at_level(logging.DEBUG, logger="citywatch.paho"):
        plog.log(logging.ERROR, line)  # not stopping: a real problem, kept
        stopping = True
        plog.log(logging.ERROR, line)  # the race at a clean stop: dropped
        plog.log(logging.WARNING, "failed to receive on socket: %s", "reset")  # anything else: kept
    kept = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "citywatch.paho"]
    assert kept == [(logging.ERROR, line), (logging.WARNING, "failed to receive on socket: reset")]
