"""The HJ 212 decode stage: a frame (or framing error) → an `Outcome` and the answer to send.

Pure: no I/O, no clock (the caller passes `received_ms`). The gateway submits the
outcome to the sink and writes `answer` only after the sink reports it durable.

Check order matters: the CRC first (with the device's mode, so the MN is read leniently
before it is trusted), then MN, then PW, then the rest of the header, then CP. Identity
failures stop there, so nothing from an unauthenticated packet is parsed into readings.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from citywatch.lineproto import reading_line
from citywatch.model import RawMessage, Reading
from citywatch.registry import Device, Registry
from citywatch.schema import KindSpec, kinds
from ingest.hj212.answers import data_answer, request_answer
from ingest.hj212.codes import Cn, QnRtn
from ingest.hj212.crc import crc_hex, crc_ok
from ingest.hj212.framing import Frame, FrameDecoder, FramingError
from ingest.hj212.packet import Header, Problem, check_header, parse_cp, parse_data_time, read_header
from ingest.decode import MIN_TS_MS
from ingest.hj212.readings import cp_values
from ingest.types import Accepted, Outcome, Rejected

SOURCE = "hj212"
OPEN_SITE = "hj212"  # the site of every monitor when no device registry is configured

# Interval aggregates are stored beside, not inside, the real-time series (README "Storage").
_MEASUREMENT = {Cn.REALTIME: None, Cn.MINUTE: None, Cn.HOURLY: "_hourly", Cn.DAILY: "_daily"}


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What decoding needs besides the bytes; built once per gateway."""

    registry: Registry
    tz: ZoneInfo
    max_future_s: float = 300.0
    kinds: dict[str, KindSpec] | None = None  # None = citywatch/kinds.yaml

    def kind(self, name: str) -> KindSpec | None:
        return (self.kinds if self.kinds is not None else kinds()).get(name)


@dataclass(frozen=True, slots=True)
class Decoded:
    outcome: Outcome
    answer: bytes | None = None  # written only after the outcome is durable


def topic_for(mn: str | None, peer: str) -> str:
    return f"{SOURCE}/{mn or peer}"


def decode_framing_error(err: FramingError, *, received_ms: int, peer: str) -> Decoded:
    """Bytes that are not a frame: dead letter, no answer (nothing in them can be trusted)."""
    return Decoded(Rejected(RawMessage(topic_for(None, peer), err.raw, received_ms, SOURCE), (err.reason,)))


def decode_frame(frame: Frame, ctx: DecodeContext, *, received_ms: int, peer: str) -> Decoded:
    h = read_header(frame.data)
    raw = RawMessage(topic_for(h.mn, peer), frame.raw, received_ms, SOURCE)
    device = _device(h, ctx.registry)
    crc_mode = device.hj212_crc if device is not None else "strict"

    def refuse(reasons: list[str], rtn: QnRtn) -> Decoded:
        answer = request_answer(h, rtn, crc=crc_mode) if h.wants_answer else None
        return Decoded(Rejected(raw, tuple(reasons)), answer)

    if not crc_ok(frame.data, frame.crc, crc_mode):
        return refuse([f"bad_crc: frame carries {frame.crc}, data segment gives {crc_hex(frame.data, crc_mode)} "
                       f"({crc_mode})"], QnRtn.CRC_ERROR)
    if device is None:
        return refuse([f"unknown_mn: MN {(h.mn or h.get('MN') or '')[:30]!r} is not in the device registry"],
                      QnRtn.MN_ERROR)
    if device.hj212_pw is not None and not hmac.compare_digest(
            (h.get("PW") or "").encode(), device.hj212_pw.encode()):
        # Never name either password: reasons end up in the dead-letter API.
        return refuse([f"wrong_pw: PW does not match the registry for MN {h.mn}"], QnRtn.PW_ERROR)
    problems = check_header(h)
    if problems:
        specific = [p.rtn for p in problems if p.rtn != QnRtn.UNKNOWN]
        return refuse([p.reason for p in problems], specific[0] if specific else QnRtn.UNKNOWN)

    outcome = _decode_cp(h, device, ctx, raw)
    # Received and durably stored (as readings or as a replayable dead letter): a 9014
    # stops the monitor from re-sending a packet that would be rejected again.
    return Decoded(outcome, data_answer(h, crc=crc_mode) if h.wants_answer else None)


def decode_raw(raw: RawMessage, ctx: DecodeContext) -> Outcome:
    """Re-decode a stored frame (dead-letter replay); framing errors stay rejections."""
    items = FrameDecoder(max_data=9999).feed(raw.payload)
    peer = raw.topic.partition("/")[2]
    if len(items) != 1 or not isinstance(items[0], Frame):
        reasons = tuple(i.reason for i in items if isinstance(i, FramingError)) or ("bad_frame: not one frame",)
        return Rejected(raw, reasons)
    return replace(decode_frame(items[0], ctx, received_ms=raw.received_ms, peer=peer).outcome, raw=raw)


def _device(h: Header, registry: Registry) -> Device | None:
    mn = h.mn
    if mn is None:
        return None
    if registry.enabled:
        return registry.by_mn.get(mn)
    # No registry (docs/contract.md §2: every well-formed id accepted): the MN is the device id.
    return Device(id=mn, site=OPEN_SITE, kind="dust")


def _decode_cp(h: Header, device: Device, ctx: DecodeContext, raw: RawMessage) -> Outcome:
    cn = Cn(int(h.get("CN") or 0))  # check_header guarantees a supported data CN
    spec = ctx.kind(device.kind)
    if spec is None:
        return Rejected(raw, (f"registry_mismatch: device {device.id!r} has unknown kind {device.kind!r}",))
    cp = parse_cp(h.cp or "")
    problems: list[Problem] = []
    ts_ms = 0
    try:
        ts_ms = parse_data_time(cp.data_time, ctx.tz)
    except ValueError as exc:
        problems.append(Problem(str(exc)))
    else:
        if ts_ms < MIN_TS_MS:  # the same floor as MQTT readings: a monitor whose clock was never set
            problems.append(Problem(f"bad_datatime: DataTime {cp.data_time} is before 2000-01-01"))
        elif ts_ms > raw.received_ms + ctx.max_future_s * 1000:
            problems.append(Problem(f"future_timestamp: DataTime {cp.data_time} is more than "
                                    f"{ctx.max_future_s:g} s ahead of the gateway clock"))
    vals = cp_values(cp, cn, device, spec)
    problems += vals.problems
    if problems:
        return Rejected(raw, tuple(p.reason for p in problems))
    reading = Reading(kind=device.kind, site=device.site, device=device.id, ts_ms=ts_ms,
                      values=dict(vals.values), quality=dict(vals.quality))
    suffix = _MEASUREMENT[cn]
    if suffix is None:
        return Accepted(raw, readings=(reading,), lines=(reading_line(reading),))
    # Hourly/daily aggregates: stored in `<kind>_hourly` / `<kind>_daily`, not shown to the
    # alert engine, which computes its own windows from the real-time series.
    return Accepted(raw, lines=(reading_line(replace(reading, kind=device.kind + suffix)),))
