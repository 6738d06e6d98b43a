from __future__ import annotations

import pytest

from ingest.hj212.crc import crc_hex, crc_ok, hj212_crc, modbus_crc
from tests.hj212.samples import MINUTE, REALTIME


def _reference_hj212(data: bytes) -> int:
    # docs/domain.md §4 pseudo-code, literally, to pin the table-driven version to it.
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ byte
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


@pytest.mark.parametrize("frame, expected", [(REALTIME, "84C1"), (MINUTE, "4C80")])
def test_verified_packets(frame: bytes, expected: str) -> None:
    data = frame[6:-6]
    assert len(data) == int(frame[2:6])
    assert crc_hex(data) == expected
    assert crc_ok(data, expected.lower())
    assert not crc_ok(data, expected, "modbus")  # the HJ 212 CRC is not CRC-16/MODBUS


def test_matches_domain_pseudocode() -> None:
    for n in range(300):
        data = bytes((i * 37 + n) & 0xFF for i in range(n))
        assert hj212_crc(data) == _reference_hj212(data)


def test_modbus_check_value() -> None:
    assert modbus_crc(b"123456789") == 0x4B37  # the CRC-16/MODBUS catalogue check value
    assert crc_ok(b"123456789", "4B37", "modbus")


def test_off_accepts_anything() -> None:
    assert crc_ok(b"abc", "0000", "off")
