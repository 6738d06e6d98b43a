"""The pieces of the MQTT input that can be tested without a broker: the read buffer
under paho's socket and the grouping of acknowledgements."""

from __future__ import annotations

import socket

from citywatch.model import RawMessage
from ingest.committer import _acknowledge
from ingest.consumer import _BufferedSocket
from ingest.types import Accepted


def test_buffered_socket_serves_small_reads_from_one_recv_and_reports_pending():
    a, b = socket.socketpair()
    try:
        a.sendall(b"\x30\x05hello\x30\x02hi")
        buf = _BufferedSocket(b)
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
