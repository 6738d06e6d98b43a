"""Pins the public surface of ingest.hj212 (changing it is a deliberate act)."""

import ingest.hj212


def test_public_names() -> None:
    assert sorted(ingest.hj212.__all__) == sorted([
        "CODES", "FIELD_CODES", "Cn", "CrcMode", "DecodeContext", "Decoded", "Frame", "FrameDecoder",
        "FramingError", "Header", "Hj212Gateway", "QnRtn", "crc_hex", "crc_ok", "data_answer",
        "decode_frame", "decode_framing_error", "decode_raw", "encode_frame", "hj212_crc", "modbus_crc",
        "read_header", "redact_pw", "request_answer",
    ])
    for name in ingest.hj212.__all__:
        assert hasattr(ingest.hj212, name)


def test_redact_pw() -> None:
    from ingest.hj212 import redact_pw
    assert redact_pw(b"##0010QN=1;PW=123456;MN=X") == b"##0010QN=1;PW=***;MN=X"
