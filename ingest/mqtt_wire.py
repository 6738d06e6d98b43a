"""MQTT 5 on the wire, sans I/O: the PUBLISH packets a subscriber receives and the PUBACKs
it sends back, as bytes in and bytes out. No sockets, no paho.

`take_publishes` is the subscriber's hot path (see `ingest/paho_adapter.py`): it parses
the complete QoS 0/1 PUBLISH packets at the head of a read buffer and stops, leaving the
rest for paho, at anything else — another packet type, QoS 2, an incomplete packet, or
lengths that do not add up (paho then reports the protocol error as it always did).
"""

from __future__ import annotations

import struct

# A PUBLISH as this module hands it over: topic bytes, payload bytes, packet id (0 for
# QoS 0), QoS.
Publish = tuple[bytes, bytes, int, int]

_PUBACK = struct.Struct("!BBH")  # fixed header 0x40, remaining length 2, packet id (MQTT 5: success)
PUBACK_COMMAND = 0x40


def varint(buf: bytes, i: int) -> tuple[int, int]:
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


def take_publishes(buf: bytes, pos: int, out: list[Publish]) -> tuple[int, bool]:
    """Append the complete QoS 0/1 PUBLISH packets of `buf[pos:]` to `out`.

    Returns (position after the last packet taken, short): `short` is True when parsing
    stopped at an incomplete packet (more bytes are needed), False when the buffer is used
    up or the next packet is not one for this parser (another type, QoS 2, a malformed
    length)."""
    end = len(buf)
    append = out.append
    try:
        while pos < end:
            first = buf[pos]
            qos = (first >> 1) & 3
            if first >> 4 != 3 or qos > 1:
                return pos, False
            try:
                length, i = varint(buf, pos + 1)  # the remaining length
            except IndexError:
                return pos, True  # the fixed header is not all here yet
            stop = i + length
            if stop > end:
                return pos, True
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
            plen, j = varint(buf, j)
            j += plen
            if j > stop or len(topic) != tlen:
                return pos, False  # inconsistent lengths: leave it to paho's checks
            append((topic, buf[j:stop], mid, qos))
            pos = stop
        return pos, False
    except (IndexError, ValueError):  # a malformed length: paho reports the protocol error
        return pos, False


def pubacks(mids: list[int]) -> bytes:
    """The PUBACK packets (reason: success) for `mids`, in order, as one write."""
    return b"".join([_PUBACK.pack(PUBACK_COMMAND, 2, mid) for mid in mids])
