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

from citywatch.lineproto import escape_measurement, escape_tag, event_line, flag_fields, format_value, reading_line
from citywatch.model import Event, RawMessage, Reading
from citywatch.registry import Device, Registry
from citywatch.schema import FieldSpec, KindSpec, kinds
from ingest.hj212.answers import data_answer, request_answer
from ingest.hj212.codes import FAULT_FLAGS, PERIODS, Cn, QnRtn
from ingest.hj212.crc import crc_hex, crc_ok
from ingest.hj212.framing import Frame, FrameDecoder, FramingError
from ingest.hj212.packet import Header, Problem, check_header, parse_cp, parse_data_time, read_header
from ingest.decode import MIN_TS_MS
from ingest.hj212.readings import Values, cp_values
from ingest.hj212.reassembly import Part, Reassembler
from ingest.types import Accepted, Outcome, Rejected

SOURCE = "hj212"
OPEN_SITE = "hj212"  # the site of every monitor when no device registry is configured

AGG_SUFFIX = "_agg"  # minute/hour/day data: measurement `<kind>_agg`, tag `period` (README "Aggregates")


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


def decode_frame(frame: Frame, ctx: DecodeContext, *, received_ms: int, peer: str,
                 reassembler: Reassembler | None = None) -> Decoded:
    """One frame → its outcome and answer. A part of a split upload (PNUM > 1) is held in
    `reassembler` (a fresh one when None) and stored as a `split_part` dead letter until
    the last part completes the upload into one reading."""
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

    cp = h.cp or ""
    if h.split is not None:
        pno, pnum = h.split
        key = (device.id, h.qn or "", h.get("CN") or "", pnum)
        try:
            parts = (reassembler or Reassembler()).add(key, pno, Part(cp, frame.raw))
        except ValueError as exc:
            return Decoded(Rejected(raw, (str(exc),)), data_answer(h, crc=crc_mode) if h.wants_answer else None)
        if parts is None:
            held = Rejected(raw, (f"split_part: part {pno} of {pnum} of upload QN {h.qn or '-'}, held until "
                                  f"all parts arrive (the upload is then stored as one reading)",))
            return Decoded(held, data_answer(h, crc=crc_mode) if h.wants_answer else None)
        cp = ";".join(p.cp.strip(";") for p in parts)
        raw = RawMessage(raw.topic, b"".join(p.raw for p in parts), received_ms, SOURCE)
    outcome = _decode_cp(h, cp, device, ctx, raw)
    # Received and durably stored (as readings or as a replayable dead letter): a 9014
    # stops the monitor from re-sending a packet that would be rejected again.
    return Decoded(outcome, data_answer(h, crc=crc_mode) if h.wants_answer else None)


def decode_raw(raw: RawMessage, ctx: DecodeContext) -> Outcome:
    """Re-decode a stored frame (dead-letter replay), or the frames of a reassembled split
    upload; framing errors stay rejections."""
    decoder = FrameDecoder(max_data=9999)
    items = [*decoder.feed(raw.payload), *decoder.flush()]
    peer = raw.topic.partition("/")[2]
    if not items or not all(isinstance(i, Frame) for i in items):
        reasons = tuple(i.reason for i in items if isinstance(i, FramingError)) or ("bad_frame: not one frame",)
        return Rejected(raw, reasons)
    reassembler = Reassembler()
    outcome: Outcome | None = None
    for item in items:
        assert isinstance(item, Frame)
        outcome = decode_frame(item, ctx, received_ms=raw.received_ms, peer=peer, reassembler=reassembler).outcome
        if len(items) > 1 and not (isinstance(outcome, Rejected) and outcome.reasons[0].startswith("split_part")):
            break  # several frames are only one message as the parts of one split upload
    assert outcome is not None
    if len(items) > 1 and reassembler.pending:
        return Rejected(raw, ("bad_frame: several frames that are not one complete split upload",))
    return replace(outcome, raw=raw)


def _device(h: Header, registry: Registry) -> Device | None:
    mn = h.mn
    if mn is None:
        return None
    if registry.enabled:
        return registry.by_mn.get(mn)
    # No registry (docs/contract.md §2: every well-formed id accepted): the MN is the device id.
    return Device(id=mn, site=OPEN_SITE, kind="dust")


def _decode_cp(h: Header, cp_text: str, device: Device, ctx: DecodeContext, raw: RawMessage) -> Outcome:
    cn = Cn(int(h.get("CN") or 0))  # check_header guarantees a supported data CN
    spec = ctx.kind(device.kind)
    if spec is None:
        return Rejected(raw, (f"registry_mismatch: device {device.id!r} has unknown kind {device.kind!r}",))
    cp = parse_cp(cp_text)
    problems: list[Problem] = list(cp.time_problems)
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
    if problems or (not vals.values and not vals.extra):
        # Nothing about the packet as a whole can be trusted (its time), or nothing in it
        # can be stored: the whole packet is a dead letter, with every reason.
        return Rejected(raw, tuple(p.reason for p in problems) + tuple(p.reason for p in vals.problems))
    partial = tuple(p.reason for p in vals.problems)  # the items not stored: dead-lettered beside
    events = _fault_events(device, ts_ms, vals, spec.events)
    event_lines = tuple(event_line(e) for e in events)
    period = PERIODS.get(cn)
    if period is None:
        reading = Reading(kind=device.kind, site=device.site, device=device.id, ts_ms=ts_ms,
                          values=dict(vals.values), quality=dict(vals.flags))
        return Accepted(raw, readings=(reading,), events=events, lines=(reading_line(reading), *event_lines),
                        partial=partial)
    # Minute/hour/day data: `<kind>_agg` with a `period` tag. The alert engine computes its
    # own windows from real-time data and must not count these twice, so it gets a Reading
    # without values: the device is alive (no-data rules), with nothing to judge.
    alive = Reading(kind=device.kind, site=device.site, device=device.id, ts_ms=ts_ms, values={})
    return Accepted(raw, readings=(alive,), events=events,
                    lines=(_agg_line(device, period, ts_ms, vals), *event_lines), partial=partial)


def _agg_line(device: Device, period: str, ts_ms: int, vals: Values) -> str:
    parts = [f"{escape_tag(k)}={format_value(v)}" for k, v in (*vals.values.items(), *vals.extra.items())]
    if vals.flags:
        parts.append(flag_fields(vals.flags))
    return (f"{escape_measurement(device.kind + AGG_SUFFIX)},device={escape_tag(device.id)},"
            f"period={period},site={escape_tag(device.site)} {','.join(parts)} {ts_ms}")


def _fault_events(device: Device, ts_ms: int, vals: Values, events: dict[str, dict[str, FieldSpec]]
                  ) -> tuple[Event, ...]:
    """One `sensor_fault` event for a packet that flags any field D (fault) or F (stopped),
    when the kind declares that event (kinds.yaml): a rule turns it into a device-fault
    alert. One per packet, not per field: two events of one device at one instant would be
    one InfluxDB point."""
    faulty = {f: flag for f, flag in vals.flags.items() if flag in FAULT_FLAGS}
    if not faulty or "sensor_fault" not in events:
        return ()
    flags = sorted(set(faulty.values()))
    return (Event(kind=device.kind, site=device.site, device=device.id, ts_ms=ts_ms, type="sensor_fault",
                  attributes={"field": ",".join(faulty)[:64], "flag": flags[0], "fault": True}),)
