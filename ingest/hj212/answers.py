"""Answers to the device: CN=9014 (data received) and CN=9011 with QnRtn (request refused).

Answers echo the request's QN, PW and MN, carry ST=91 (system interaction) and the
request's version bits without the A bit (Flag=4 for HJ 212-2017), and use the device's
CRC algorithm so a device that checks answers accepts them.
"""

from __future__ import annotations

import re

from ingest.hj212.codes import ST_SYSTEM, VERSION_SHIFT, Cn, QnRtn
from ingest.hj212.crc import CrcMode
from ingest.hj212.framing import encode_frame
from ingest.hj212.packet import Header

# Only echo what is well formed, so an answer can never carry injected separators.
_SAFE = re.compile(r"[\x21-\x7e]{1,24}")


def _answer(h: Header, cn: Cn, cp: str, crc: CrcMode) -> bytes:
    parts = []
    qn = h.qn
    if qn is not None and qn.isdigit() and len(qn) <= 20:
        parts.append(f"QN={qn}")
    parts += [f"ST={ST_SYSTEM}", f"CN={int(cn)}"]
    for key in ("PW", "MN"):
        value = h.get(key)
        if value is not None and _SAFE.fullmatch(value) and not set(value) & set(";&="):
            parts.append(f"{key}={value}")
    parts.append(f"Flag={h.version << VERSION_SHIFT & 0xFC}")
    return encode_frame(";".join(parts) + f";CP=&&{cp}&&", crc=crc)


def data_answer(h: Header, *, crc: CrcMode = "strict") -> bytes:
    """CN=9014: the upload with this QN was received (and is stored)."""
    return _answer(h, Cn.DATA_ANSWER, "", crc)


def request_answer(h: Header, rtn: QnRtn, *, crc: CrcMode = "strict") -> bytes:
    """CN=9011 with QnRtn: why the upload was refused (PW, MN, CRC, ...)."""
    return _answer(h, Cn.REQUEST_ANSWER, f"QnRtn={int(rtn)}", crc)
