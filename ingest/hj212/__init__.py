"""HJ 212-2017 (and 2025-ready) TCP ingest for dust monitors; see README.md.

Public surface: the gateway, the pure decode stage, framing and CRC. Test doubles and the
fleet client live in `ingest.hj212.testing`.
"""

from ingest.hj212.answers import data_answer, request_answer
from ingest.hj212.codes import CODES, FIELD_CODES, Cn, QnRtn
from ingest.hj212.crc import CrcMode, crc_hex, crc_ok, hj212_crc, modbus_crc
from ingest.hj212.decode import DecodeContext, Decoded, decode_frame, decode_framing_error, decode_raw
from ingest.hj212.framing import Frame, FrameDecoder, FramingError, encode_frame
from ingest.hj212.gateway import Hj212Gateway
from ingest.hj212.packet import Header, read_header
from ingest.hj212.redact import redact_pw

__all__ = [
    "CODES", "FIELD_CODES", "Cn", "CrcMode", "DecodeContext", "Decoded", "Frame", "FrameDecoder",
    "FramingError", "Header", "Hj212Gateway", "QnRtn", "crc_hex", "crc_ok", "data_answer",
    "decode_frame", "decode_framing_error", "decode_raw", "encode_frame", "hj212_crc", "modbus_crc",
    "read_header", "redact_pw", "request_answer",
]
