"""The HJ 212 data segment: `QN=..;ST=..;CN=..;PW=..;MN=..;Flag=..;[PNUM=..;PNO=..;][RF=1;]CP=&&...&&`.

Dialects (README "Dialects"): HJ/T 212-2005 headers without QN and Flag (no answer is
then wanted), 2- or 3-digit ST, PNO before PNUM and zero-padded, MN up to 24 characters
with `-`/`_`, DataTime with 14 or 17 digits (ms), stray spaces around CP item keys.

Two steps, because the CRC mode and the password depend on the device: `read_header`
splits the segment leniently (it never fails, so even a corrupted frame yields the MN and
QN to answer with), then `check_header` and `parse_cp` say everything that is wrong.
Nothing here knows about the registry or the sink.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ingest.hj212.codes import DATA_CNS, FLAG_A, VERSION_2017, VERSION_SHIFT, QnRtn

_CP_OPEN = "CP=&&"
_QN = re.compile(r"\d{14,20}")  # 17 per the standard (ms precision); some vendors send 14
_ST = re.compile(r"\d{2,3}")  # 21/22/23/31/32/39/91 and vendors' 3-digit system codes
_CN = re.compile(r"\d{4}")
_MN = re.compile(r"[0-9A-Za-z_-]{1,24}")  # 2025: exactly 24 hex characters, 2017: up to 24 (vendors use - and _)
# HJ 212-2017 gives PW 9 characters, 2005 six; platforms issue longer ones (24 seen in the
# field). Empty is syntactically fine: whether it matches is the registry's call.
_PW = re.compile(r"[\x21-\x7e]{0,32}")
_FLAG = re.compile(r"\d{1,3}")
_PN = re.compile(r"\d{1,4}")
_DATA_TIME = re.compile(r"\d{14}(?:\d{3})?")  # 17 digits: with milliseconds (2005-era monitors)
_HEADER_KEYS = frozenset({"QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO", "RF"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a packet, and the QnRtn an answer would carry for it."""

    reason: str
    rtn: QnRtn = QnRtn.UNKNOWN


@dataclass(frozen=True, slots=True)
class Header:
    """Header fields as received (strings, None when absent) and the raw CP text."""

    fields: dict[str, str]
    cp: str | None  # between the opening and closing `&&`; None when CP is missing/malformed
    problems: tuple[Problem, ...] = ()

    def get(self, key: str) -> str | None:
        return self.fields.get(key)

    @property
    def qn(self) -> str | None:
        return self.fields.get("QN")

    @property
    def mn(self) -> str | None:
        mn = self.fields.get("MN")
        return mn if mn is not None and _MN.fullmatch(mn) else None

    @property
    def flag(self) -> int | None:
        flag = self.fields.get("Flag")
        return int(flag) if flag is not None and _FLAG.fullmatch(flag) and int(flag) <= 255 else None

    @property
    def wants_answer(self) -> bool:
        return self.flag is not None and bool(self.flag & FLAG_A)

    @property
    def split(self) -> tuple[int, int] | None:
        """(PNO, PNUM) of a packet that is one part of a split upload (PNUM > 1), else None."""
        pnum, pno = self.fields.get("PNUM"), self.fields.get("PNO")
        if pnum is None or pno is None or not _PN.fullmatch(pnum) or not _PN.fullmatch(pno):
            return None
        total, part = int(pnum), int(pno)
        return (part, total) if 1 <= part <= total and total > 1 else None

    @property
    def version(self) -> int:
        return (self.flag >> VERSION_SHIFT) if self.flag is not None else VERSION_2017


def read_header(data: bytes) -> Header:
    """Split a data segment into header fields and CP; problems are recorded, not raised."""
    problems: list[Problem] = []
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = data.decode("ascii", errors="replace")
        problems.append(Problem("bad_encoding: data segment is not ASCII"))
    at = text.find(_CP_OPEN)
    if at < 0 or (at > 0 and text[at - 1] != ";"):
        problems.append(Problem("bad_cp: no CP=&&...&& section"))
        head, cp = text, None
    else:
        head, body = text[: max(at - 1, 0)], text[at + len(_CP_OPEN):]
        if body.endswith("&&"):
            cp = body[:-2]
        else:
            # HJ 212-2025 may encrypt CP (SM4); that arrives without the closing && and is not supported.
            problems.append(Problem("bad_cp: CP does not end with && (encrypted CP is not supported)"))
            cp = None
    fields: dict[str, str] = {}
    for part in head.split(";") if head else ():
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            problems.append(Problem(f"bad_header: {part[:40]!r} is not key=value"))
        elif key in fields:
            problems.append(Problem(f"bad_header: {key} appears twice"))
        elif key in _HEADER_KEYS:
            fields[key] = value
        # Unknown header keys are ignored: later revisions add keys before CP.
    return Header(fields, cp, tuple(problems))


def check_header(h: Header) -> list[Problem]:
    """Everything wrong with the header besides PW/MN identity (which needs the registry)."""
    out = list(h.problems)
    qn, st, cn, flag = h.get("QN"), h.get("ST"), h.get("CN"), h.get("Flag")
    if flag is None:
        pass  # HJ/T 212-2005 monitors send no Flag: no answer wanted, one packet
    elif h.flag is None:
        out.append(Problem(f"bad_flag: Flag {flag[:8]!r} is not 0..255", QnRtn.FLAG_ERROR))
    if qn is None:
        if h.wants_answer:  # an answer must echo the QN
            out.append(Problem("bad_qn: QN is missing but an answer is requested", QnRtn.QN_ERROR))
    elif not _QN.fullmatch(qn) and h.wants_answer:
        # QN only matters to echo it in an answer; monitors that want none send odd ones.
        out.append(Problem(f"bad_qn: QN {qn[:24]!r} is not YYYYMMDDhhmmsszzz", QnRtn.QN_ERROR))
    if st is None or not _ST.fullmatch(st):
        out.append(Problem(f"bad_st: ST {(st or '')[:8]!r} is not two or three digits", QnRtn.ST_ERROR))
    if cn is None or not _CN.fullmatch(cn):
        out.append(Problem(f"bad_cn: CN {(cn or '')[:8]!r} is not four digits", QnRtn.CN_ERROR))
    elif int(cn) not in DATA_CNS:
        out.append(Problem(f"unsupported_cn: CN={cn} is not an upload of real-time/minute/hourly/daily data",
                           QnRtn.CN_ERROR))
    mn = h.get("MN")
    if mn is None or h.mn is None:
        out.append(Problem(f"bad_mn: MN {(mn or '')[:30]!r} is not 1-24 letters, digits, - or _", QnRtn.MN_ERROR))
    pw = h.get("PW")
    if pw is None or not _PW.fullmatch(pw):
        out.append(Problem("bad_pw: PW is missing or malformed", QnRtn.PW_ERROR))  # never echo a secret
    pnum, pno = h.get("PNUM"), h.get("PNO")
    if pnum is not None or pno is not None:
        # Present (with or without the D bit, 2005 has no Flag): they must agree. The D bit
        # without PNUM/PNO is common firmware and means one packet.
        if pnum is None or pno is None or not _PN.fullmatch(pnum) or not _PN.fullmatch(pno) \
                or not 1 <= int(pno) <= int(pnum):
            out.append(Problem("bad_pnum: PNUM/PNO are missing, not numbers or inconsistent", QnRtn.FLAG_ERROR))
    rf = h.get("RF")
    if rf is not None and rf not in ("0", "1"):
        out.append(Problem(f"bad_rf: RF {rf[:8]!r} is not 0 or 1"))
    return out


@dataclass(frozen=True, slots=True)
class CpData:
    """The CP section: DataTime and, per pollutant code, its suffixed values (Rtd, Avg, Flag, ...)."""

    data_time: str | None
    items: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()  # about single items: those are dead-lettered, the rest stored
    time_problems: tuple[Problem, ...] = ()  # about DataTime: the whole packet is refused


def parse_cp(cp: str) -> CpData:
    data_time: str | None = None
    items: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    time_problems: list[Problem] = []
    for group in cp.split(";"):
        if not group:
            continue  # a trailing ';' is common
        for pair in group.split(","):
            key, sep, value = pair.partition("=")
            key, value = key.strip(), value.strip()  # "; LA-Rtd=50.1": a stray space before a code
            if not key and not value:
                continue  # ",," or a trailing ","
            if not sep or not key:
                problems.append(Problem(f"bad_cp: item {pair[:40]!r} is not key=value"))
                continue
            if key == "DataTime":
                if data_time is not None:
                    time_problems.append(Problem("bad_cp: DataTime appears twice"))
                data_time = value
                continue
            code, dash, suffix = key.rpartition("-")
            if not dash:
                continue  # other plain keys (SampleTime, ...) carry nothing we store
            slot = items.setdefault(code, {})
            if suffix in slot:
                problems.append(Problem(f"bad_cp: {key} appears twice"))
            slot[suffix] = value
    return CpData(data_time, items, tuple(problems), tuple(time_problems))


def parse_data_time(text: str | None, tz: ZoneInfo) -> int:
    """`YYYYMMDDhhmmss[zzz]` in local time `tz` → UTC epoch ms; ValueError with a reason otherwise."""
    if text is None:
        raise ValueError("bad_datatime: CP has no DataTime")
    if not _DATA_TIME.fullmatch(text):
        raise ValueError(f"bad_datatime: DataTime {text[:20]!r} is not YYYYMMDDhhmmss[zzz]")
    try:
        local = datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=tz)
    except ValueError:
        raise ValueError(f"bad_datatime: DataTime {text!r} is not a valid date and time") from None
    return int(local.timestamp()) * 1000 + (int(text[14:]) if len(text) == 17 else 0)
