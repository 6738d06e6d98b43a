"""MQTT 5 packets as a broker sends them, for the tests of the bulk PUBLISH parser."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (the remaining length, the property length)."""
    out = bytearray()
    while True:
        byte, n = n & 127, n >> 7
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: bytes, payload: bytes, *, qos: int = 1, mid: int = 1, props: bytes = b"") -> bytes:
    """An MQTT 5 PUBLISH as a broker sends it."""
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    body += varint(len(props)) + props + payload
    return bytes([0x30 | (qos << 1)]) + varint(len(body)) + body
