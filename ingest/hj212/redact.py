"""Hide the monitor password in stored HJ 212 frames before they are shown to people.

Raw frames are kept verbatim (replay must re-check the PW), but the dead-letter API and
logs must never show a secret (docs/contract.md §2).
"""

from __future__ import annotations

import re

_PW = re.compile(rb"(^|[;#\d])PW=[^;&]*")


def redact_pw(payload: bytes) -> bytes:
    """`...;PW=123456;...` → `...;PW=***;...`; other bytes unchanged (the CRC no longer matches)."""
    return _PW.sub(rb"\1PW=***", payload)
