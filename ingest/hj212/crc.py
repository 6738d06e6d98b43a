"""HJ 212 checksums (docs/domain.md §4).

The HJ 212 CRC is *not* CRC-16/MODBUS: it shifts the register right by 8 and XORs the
byte into the low half, so only the low byte of the register carries the input and just
256 distinct checksums exist. Some vendors ship MODBUS CRC by mistake, so the algorithm is
a per-device setting (`hj212_crc = strict | modbus | off`).
"""

from __future__ import annotations

from typing import Literal

CrcMode = Literal["strict", "modbus", "off"]


def _poly_a001(crc: int) -> int:
    for _ in range(8):
        lsb = crc & 1
        crc >>= 1
        if lsb:
            crc ^= 0xA001
    return crc


# Both algorithms are table-driven: the per-byte 8-step shift depends only on the low
# byte of the register, which is what the tables hold.
_TABLE = tuple(_poly_a001(i) for i in range(256))


def hj212_crc(data: bytes) -> int:
    """The HJ 212-2017 checksum over the data segment (between the length and the CRC)."""
    # (crc >> 8) ^ byte fits in one byte, so its own ">> 8" is 0 and the second step of the
    # published algorithm reduces to one table lookup.
    crc = 0xFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc >> 8) ^ byte]
    return crc


def modbus_crc(data: bytes) -> int:
    """CRC-16/MODBUS, for devices configured `hj212_crc = "modbus"`."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        crc = (crc >> 8) ^ _TABLE[crc & 0xFF]
    return crc


def crc_hex(data: bytes, mode: CrcMode = "strict") -> str:
    """The four upper-case hex digits a frame carries; `off` still emits the HJ 212 CRC."""
    value = modbus_crc(data) if mode == "modbus" else hj212_crc(data)
    return f"{value:04X}"


def crc_ok(data: bytes, received: str, mode: CrcMode = "strict") -> bool:
    """True when `received` (4 hex digits, either case) matches `data` under `mode`."""
    if mode == "off":
        return True
    return received.upper() == crc_hex(data, mode)
