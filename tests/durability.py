"""A recorder of the events the durability promise is about, in the order they happened.

The promise (docs/invariants.md): an acknowledgement — an MQTT PUBACK or an HJ 212 answer —
leaves only after its reading was written to the spool *and* that write was fsynced; the
writer moves the spool checkpoint only after InfluxDB accepted the lines before it.

Nothing in the code under test is replaced. The recorder wraps the system calls it goes
through — `os.writev`/`os.write` on spool segment files, `os.fsync`, `os.replace` of the
checkpoint, and `send`/`recv` of every `socket.socket` — and appends one event per call to
one list. The list's order is the order the calls happened in (each event is recorded
under one lock, a send *before* the bytes leave, an fsync only *after* it returned), so
"the ack came after the fsync" can be checked for every single message afterwards.

`fsync_delay_s` makes the disk slow (a sleep before the real fsync): with a slow disk an
acknowledgement sent too early has all the time it needs to reach the socket first, so
an ordering bug shows on every run instead of now and then. `fail_fsyncs` makes the next
N fsyncs of spool segments fail with EIO (a failing disk), after their write.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _socket


@dataclass(slots=True)
class Event:
    index: int
    kind: str  # write | fsync | fsync_failed | checkpoint | send | recv
    fd: int = -1
    data: bytes = b""
    local_port: int = 0
    peer_port: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class Recorder:
    def __init__(self, spool_dir: Path, *, fsync_delay_s: float = 0.0) -> None:
        self.spool_dir = str(Path(spool_dir).resolve())
        self.fsync_delay_s = fsync_delay_s
        self.fail_fsyncs = 0
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._real = {"writev": os.writev, "write": os.write, "fsync": os.fsync, "replace": os.replace}

    # -- recording ---------------------------------------------------------------------
    def record(self, kind: str, **kw: Any) -> Event:
        with self._lock:
            event = Event(len(self.events), kind, **kw)
            self.events.append(event)
            return event

    def _is_segment(self, fd: int) -> bool:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return False
        return target.startswith(self.spool_dir) and target.endswith(".seg")

    def install(self, monkeypatch) -> "Recorder":
        real = self._real

        def writev(fd: int, buffers) -> int:
            if not self._is_segment(fd):
                return real["writev"](fd, buffers)
            data = b"".join(bytes(b) for b in buffers)
            n = real["writev"](fd, buffers)
            self.record("write", fd=fd, data=data[:n])
            return n

        def write(fd: int, data) -> int:
            if not self._is_segment(fd):
                return real["write"](fd, data)
            n = real["write"](fd, data)
            self.record("write", fd=fd, data=bytes(data)[:n])
            return n

        def fsync(fd) -> None:
            fd = fd if isinstance(fd, int) else fd.fileno()
            if not self._is_segment(fd):
                return real["fsync"](fd)
            if self.fsync_delay_s:
                time.sleep(self.fsync_delay_s)
            with self._lock:
                failing = self.fail_fsyncs > 0
                if failing:
                    self.fail_fsyncs -= 1
            if failing:
                self.record("fsync_failed", fd=fd)
                raise OSError(errno.EIO, "injected fsync failure")
            real["fsync"](fd)
            self.record("fsync", fd=fd)

        def replace(src, dst, **kw) -> None:
            if Path(dst).name == "checkpoint" and str(Path(dst).resolve().parent) == self.spool_dir:
                doc = json.loads(Path(src).read_text())
                # Recorded before the rename: from here on a crash may find the new checkpoint.
                self.record("checkpoint", info={"segment": int(doc["segment"]), "offset": int(doc["offset"])})
            return real["replace"](src, dst, **kw)

        def ports(sock) -> tuple[int, int]:
            try:
                local = sock.getsockname()[1]
                peer = sock.getpeername()[1]
            except (OSError, IndexError, TypeError):
                return 0, 0
            return local, peer

        def send(sock, data, *flags) -> int:
            local, peer = ports(sock)
            self.record("send", data=bytes(data), local_port=local, peer_port=peer)
            return _socket.socket.send(sock, data, *flags)

        def sendall(sock, data, *flags) -> None:
            local, peer = ports(sock)
            self.record("send", data=bytes(data), local_port=local, peer_port=peer)
            return _socket.socket.sendall(sock, data, *flags)

        def recv(sock, n, *flags) -> bytes:
            data = _socket.socket.recv(sock, n, *flags)
            local, peer = ports(sock)
            self.record("recv", data=data, local_port=local, peer_port=peer)
            return data

        monkeypatch.setattr(os, "writev", writev)
        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(socket.socket, "send", send)
        monkeypatch.setattr(socket.socket, "sendall", sendall)
        monkeypatch.setattr(socket.socket, "recv", recv)
        return self

    # -- reading the record ------------------------------------------------------------
    def snapshot(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def durable_lines(self, events: list[Event]) -> dict[bytes, int]:
        """Each spooled line -> index of the first successful fsync that covered it (a
        write followed by an fsync of the same file). A write whose fsync failed covers
        nothing: the spool cuts it off, and the committer must write it again."""
        durable: dict[bytes, int] = {}
        unsynced: dict[int, list[bytes]] = {}
        for e in events:
            if e.kind == "write":
                unsynced.setdefault(e.fd, []).extend(spool_record_lines(e.data))
            elif e.kind == "fsync":
                for line in unsynced.pop(e.fd, []):
                    durable.setdefault(line, e.index)
            elif e.kind == "fsync_failed":
                unsynced.pop(e.fd, None)
        return durable


def spool_record_lines(data: bytes) -> list[bytes]:
    """The line-protocol lines inside spool records (`<u32 len><u32 crc>` + payload)."""
    lines: list[bytes] = []
    i = 0
    while i + 8 <= len(data):
        length = int.from_bytes(data[i:i + 4], "little")
        payload = data[i + 8:i + 8 + length]
        lines += [line for line in payload.split(b"\n") if line]
        i += 8 + length
    return lines


def line_key(line: bytes) -> tuple[str, int]:
    """(device, timestamp ms) of one line of line protocol: which reading it is."""
    head, _, ts = line.rpartition(b" ")
    tags = head.split(b" ", 1)[0].split(b",")[1:]
    device = next(t.split(b"=", 1)[1] for t in tags if t.startswith(b"device="))
    return device.decode(), int(ts)


# -- MQTT on the wire -----------------------------------------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int] | None:
    value = shift = 0
    while i < len(buf):
        byte = buf[i]
        i += 1
        value |= (byte & 127) << shift
        if byte < 128:
            return value, i
        shift += 7
    return None


@dataclass(slots=True)
class Packet:
    event: int  # index of the recv/send event that completed the packet
    type: int
    flags: int
    body: bytes

    @property
    def mid(self) -> int:
        """The packet id of a PUBLISH (QoS 1/2) or PUBACK."""
        if self.type == 4:
            return int.from_bytes(self.body[:2], "big")
        tlen = int.from_bytes(self.body[:2], "big")
        return int.from_bytes(self.body[2 + tlen:4 + tlen], "big")

    def publish(self) -> tuple[str, bytes]:
        """(topic, payload) of an MQTT 5 PUBLISH."""
        tlen = int.from_bytes(self.body[:2], "big")
        topic = self.body[2:2 + tlen].decode()
        j = 2 + tlen + (2 if (self.flags >> 1) & 3 else 0)
        plen, j = _varint(self.body, j)  # type: ignore[misc]
        return topic, self.body[j + plen:]


def mqtt_packets(events: list[Event], *, kind: str, local_port: int) -> list[Packet]:
    """The MQTT packets one socket sent (`kind="send"`) or received (`"recv"`)."""
    buf = b""
    out: list[Packet] = []
    for e in events:
        if e.kind != kind or e.local_port != local_port:
            continue
        buf += e.data
        while len(buf) >= 2:
            parsed = _varint(buf, 1)
            if parsed is None:
                break
            length, start = parsed
            if start + length > len(buf):
                break
            out.append(Packet(e.index, buf[0] >> 4, buf[0] & 15, buf[start:start + length]))
            buf = buf[start + length:]
    return out
