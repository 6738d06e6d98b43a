"""Property-based tests of the HJ 212 parsers that see raw TCP bytes.

- `FrameDecoder`: arbitrary byte streams in arbitrary chunks never raise, every byte ends
  up in exactly one item, the buffer stays within its documented bound; valid frames in
  random garbage, split anywhere, come out whole, in order, exactly once.
- `decode_frame` / `decode_raw`: any data segment (random bytes, or headers and CP built
  from the real keys and codes with random values) gives a documented outcome: a
  rejection with coded reasons, or readings and CONTRACT line protocol; the answer is a
  well-formed frame exactly when the packet asked for one.

`make test` runs them derandomized (the same examples every run; see
`tests.support.fuzz_settings`), `make fuzz` with new random examples. Hypothesis keeps no
example database (`database=None`); a failure prints its reproducer.
"""

from __future__ import annotations

import re
import string
from datetime import datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import event, given
from hypothesis import strategies as st

from citywatch.lineproto import reading_line
from citywatch.model import RawMessage
from citywatch.registry import Device, Registry
from citywatch.schema import kinds
from ingest.hj212 import CODES, FIELD_CODES, DecodeContext, decode_frame, decode_framing_error, decode_raw
from ingest.hj212.codes import DATA_CNS, VALID_FLAGS, Cn
from ingest.hj212.crc import crc_hex, crc_ok
from ingest.hj212.framing import MAX_DATA_FIELD, Frame, FrameDecoder, FramingError, encode_frame
from ingest.hj212.packet import read_header
from ingest.hj212.testing import encode_packet
from ingest.types import Accepted, Rejected
from tests.hj212.conftest import make_registry
from tests.hj212.samples import MINUTE, MN, NOW_MS, PW, REALTIME

from tests.support import fuzz_settings

FUZZ = fuzz_settings(200)  # derandomized in `make test`; `make fuzz` explores

TZ = ZoneInfo("Asia/Shanghai")
PEER = "10.0.0.7:40000"
DUST = kinds()["dust"]
_OVERHEAD = 12  # ## + 4-digit length + 4 hex CRC + CR LF

FRAMING_CODES = frozenset({"garbage", "bad_length", "oversize", "truncated", "length_mismatch",
                           "bad_terminator", "bad_crc_field", "bad_frame"})
# Every code decode.py, packet.py and readings.py put in front of a reason.
DECODE_CODES = frozenset({
    "bad_crc", "unknown_mn", "wrong_pw", "bad_encoding", "bad_cp", "bad_header", "bad_flag", "bad_qn", "bad_st",
    "bad_cn", "unsupported_cn", "bad_mn", "bad_pw", "bad_pnum", "bad_rf", "bad_datatime", "future_timestamp",
    "duplicate_field", "bad_value", "out_of_range", "bad_alias", "bad_flag_value", "missing_value", "no_values",
    "registry_mismatch", "unknown_code", "split_part", "split_limit",
})
# The identity and header checks that refuse with CN=9011; content problems answer 9014.
REFUSAL_CODES = frozenset({"bad_crc", "unknown_mn", "wrong_pw", "bad_encoding", "bad_cp", "bad_header", "bad_flag",
                           "bad_qn", "bad_st", "bad_cn", "unsupported_cn", "bad_mn", "bad_pw", "bad_pnum", "bad_rf"})
_ANSWER = re.compile(rb"(?:QN=(\d{1,20});)?ST=91;CN=(9011|9014);(?:PW=([^;&=]+);)?(?:MN=([^;&=]+);)?Flag=(\d+);"
                     rb"CP=&&(?:QnRtn=(\d+))?&&")


def codes_of(reasons: tuple[str, ...], allowed: frozenset[str]) -> list[str]:
    """The code of each reason; fails unless each is `code: detail` with a known code."""
    out = []
    for reason in reasons:
        code, sep, detail = reason.partition(": ")
        assert sep and detail and code in allowed, reason
        out.append(code)
    return out


# -- framing -----------------------------------------------------------------------------------

# Bytes that matter to the framer, so random streams hit its branches: '#' runs, CR/LF,
# digit runs that read as lengths, hex, and pieces of real frames.
PIECES = [b"#", b"##", b"###", b"\r\n", b"\r", b"\n", b"0", b"9", b"0005", b"0012", b"0219", b"0372", b"9999",
          b"ABCD", b"84C1", b"zz", b"x", b";", b"&&", b"\x00", b"\xff", REALTIME[:30], REALTIME[-12:], MINUTE[6:40],
          MINUTE[-6:], REALTIME, MINUTE, REALTIME[:-6] + b"84CZ\r\n", MINUTE[:-2] + b"\n\r", b"##0001xABCD\r\n",
          b"##0001x12g4\r\n", b"##0000FFFF\r\n", encode_frame(b"QN=1"), encode_frame(b"#")]
SOUP = st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(PIECES), max_size=50).map(b"".join))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in pairwise(points)]


def feed_checked(decoder: FrameDecoder, chunks: list[bytes], max_data: int, max_raw: int
                 ) -> list[tuple[int, Frame | FramingError]]:
    """Feed the chunks, then flush; check the invariants after every call. Returns the items
    with the stream offset each starts at."""
    stream = b"".join(chunks)
    fed, at, items, eaten = 0, 0, [], 0
    for chunk in [*chunks, None]:
        if chunk is None:
            got = decoder.flush()
        else:
            got = decoder.feed(chunk)
            fed += len(chunk)
        # A CR/LF after a frame that ended without one is eaten at the start of a feed,
        # before any item that feed returns.
        assert stream[at:at + decoder.eaten - eaten].strip(b"\r\n") == b""
        at += decoder.eaten - eaten
        eaten = decoder.eaten
        for item in got:
            if isinstance(item, Frame):
                size = len(item.raw)
                assert item.raw == stream[at:at + size]
                standard = b"##%04d" % len(item.data) + item.data + item.crc.encode() + b"\r\n"
                if item.raw != standard:
                    # A field dialect (length counting CRC/CR LF, no CR LF): the CRC proved it.
                    assert item.raw[:2] == b"##" and item.raw[2:6].isdigit()
                    assert item.raw[6:].rstrip(b"\r\n") == item.data + item.crc.encode()
                    assert item.data.endswith(b"&&") and item.crc.upper() in (crc_hex(item.data),
                                                                              crc_hex(item.data, "modbus"))
                assert len(item.data) <= max_data and re.fullmatch(r"[0-9A-Fa-f]{4}", item.crc)
            else:
                size = item.discarded
                codes_of((item.reason,), FRAMING_CODES)
                assert 0 < size and item.raw == stream[at:at + len(item.raw)] and len(item.raw) <= size
                assert len(item.raw) <= max(max_raw, max_data + _OVERHEAD), "a dead letter larger than its cap"
            items.append((at, item))
            at += size
        # Bounded: between feeds the buffer holds at most one frame; kept garbage is capped.
        assert len(decoder._buf) <= max_data + _OVERHEAD and len(decoder._skip_raw) <= max_raw
        assert decoder.pending == fed - at, "bytes neither returned nor held"
    assert at == len(stream) and decoder.pending == 0
    return items


@FUZZ
@given(data=SOUP, cuts=st.lists(st.integers(0, 10_000), max_size=20),
       max_data=st.sampled_from([1, 5, 16, 64, 372, 4096, MAX_DATA_FIELD]) | st.integers(1, MAX_DATA_FIELD),
       max_raw=st.none() | st.integers(0, 64))
def test_framer_on_arbitrary_bytes_never_raises_and_accounts_for_every_byte(data, cuts, max_data, max_raw):
    """Any bytes in any chunks: feed/flush never raise; every byte is in exactly one item,
    in order (a frame, or an error whose raw is a prefix of what it discarded, at most
    max_raw or one frame long); between feeds the buffer holds at most max_data + 12 bytes
    and `pending` is exactly what was fed and not yet returned. Each framing error becomes a
    rejection with its coded reason and no answer."""
    decoder = FrameDecoder(max_data=max_data, max_raw=max_raw)
    items = feed_checked(decoder, split(data, cuts), max_data, decoder._max_raw)
    for _, item in items:
        event("frame" if isinstance(item, Frame) else item.reason.partition(":")[0])
    for _, item in items:
        if isinstance(item, FramingError):
            d = decode_framing_error(item, received_ms=NOW_MS, peer=PEER)
            assert type(d.outcome) is Rejected and d.answer is None and d.outcome.reasons == (item.reason,)
            assert d.outcome.raw.payload == item.raw and d.outcome.raw.topic == f"hj212/{PEER}"


def test_framer_buffer_stays_bounded_under_one_huge_chunk_of_near_frames():
    """One 120 KB chunk of '##9999' headers (each oversize for max_data=64): the buffer is
    empty afterwards and each error keeps at most max_raw bytes."""
    decoder = FrameDecoder(max_data=64)
    items = feed_checked(decoder, [b"##9999" * 20_000], 64, decoder._max_raw)
    assert all(isinstance(i, FramingError) for _, i in items)


SAFE_DATA = st.text(string.ascii_letters + string.digits + "=;,&-.# ", max_size=300).map(str.encode).filter(
    lambda b: b"##" not in b)  # a data segment never holds ## or CR LF (framing.py's premise)


@st.composite
def valid_frames(draw) -> bytes:
    """A well-formed frame: a real upload from the project's encoder, or any safe segment."""
    if draw(st.booleans()):
        when = draw(st.datetimes(datetime(2001, 1, 1), datetime(2030, 1, 1)))
        values = draw(st.dictionaries(st.sampled_from(sorted(CODES)), st.floats(-1e6, 1e6), max_size=9))
        return encode_packet(mn=draw(st.sampled_from([MN, "X1"])), pw=PW, data_time=when, values=values,
                             cn=draw(st.sampled_from(sorted(DATA_CNS))), crc=draw(st.sampled_from(["strict", "modbus"])))
    return encode_frame(draw(SAFE_DATA), crc=draw(st.sampled_from(["strict", "modbus"])))


@FUZZ
@given(parts=st.lists(st.tuples(SOUP, valid_frames()), min_size=1, max_size=4), tail=SOUP,
       cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_valid_frames_in_garbage_come_out_whole_in_order_exactly_once(parts, tail, cuts):
    """Valid frames with random garbage before, between and after them (including '#'
    runs, CR LF, digits and pieces of other frames), the stream split at random points:
    each frame comes out as one Frame, byte for byte, at its own offset, in order, once."""
    stream, offsets = b"", []
    for garbage, frame in parts:
        stream += garbage
        offsets.append((len(stream), frame))
        stream += frame
    stream += tail
    items = feed_checked(FrameDecoder(), split(stream, cuts), 4096, 4096 + _OVERHEAD)
    at_offset = {at: item for at, item in items}
    for at, frame in offsets:
        item = at_offset.get(at)
        assert isinstance(item, Frame) and item.raw == frame, (at, item)


# -- decoding a frame ------------------------------------------------------------------------

OPEN_DEVICE = Device(id="D1", site="S1", kind="dust", hj212_mn=MN, hj212_crc="off")  # no CRC, no PW check
CTXS = {
    "strict": DecodeContext(registry=make_registry(), tz=TZ),
    "modbus": DecodeContext(registry=make_registry(hj212_crc="modbus", hj212_scale=0.001,
                                                   hj212_aliases={"a34005": "pm25", "X9": "spray_on"}), tz=TZ),
    "off": DecodeContext(registry=Registry({"D1": OPEN_DEVICE}, {MN: OPEN_DEVICE}), tz=TZ),
    "open": DecodeContext(registry=Registry.empty(), tz=TZ),
}


def mostly(valid: st.SearchStrategy, spoilt: st.SearchStrategy, one_in: int = 8) -> st.SearchStrategy:
    """`valid`, and `spoilt` about once in `one_in` draws. (Hypothesis favours the
    smallest and the largest integer of a range, so neither picks the spoilt branch.)"""
    return st.integers(1, one_in).flatmap(lambda n: spoilt if n == 2 else valid)


VALUE_TEXT = mostly(
    st.floats(50, 60).map(lambda v: format(v, ".6g")) | st.integers(50, 60).map(str),  # in every dust range
    st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr), st.integers(-(10**6), 10**6).map(str),
              st.sampled_from(["", "1e999", "-1e999", "nan", "inf", "-0", ".5", "5.", "+1", "1e5", "0x10", "1_0",
                               "N", "20000", "20000.0000001", "-50", "150", "1" * 400]),
              st.text(max_size=8)), 10)
FLAG_TEXT = mostly(st.sampled_from(["N", "S"]),
                   st.sampled_from(["n", "F", "M", "D", "C", "T", "B", "Z", "", "NN", "1", "é"]), 4)
DATA_TIME = mostly(
    st.datetimes(datetime(2024, 5, 1), datetime(2024, 6, 1)).map(lambda d: d.strftime("%Y%m%d%H%M%S")),
    st.one_of(st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)).map(
        lambda d: f"{d.year:04d}{d:%m%d%H%M%S}"), st.text("0123456789", min_size=13, max_size=15),
              st.text(max_size=14)), 8)
HEADER_VALUES = {
    "QN": mostly(st.text("0123456789", min_size=14, max_size=20),
                 st.text("0123456789", max_size=22) | st.text(max_size=20), 16),
    "ST": mostly(st.sampled_from(["39", "22"]), st.sampled_from(["91", "3", "ab", "", "٣٩"]), 16),
    "CN": mostly(st.sampled_from(["2011", "2051", "2061", "2031"]),
                 st.sampled_from(["9014", "2072", "201", "20111", "abcd", ""]), 16),
    "PW": mostly(st.just(PW), st.sampled_from(["654321", "", "x" * 17, "p w", "a;b", "é"]), 16),
    "MN": mostly(st.just(MN), st.sampled_from([MN.lower(), "X1", "", "A" * 25, "4A43-0"]), 16),
    "Flag": mostly(st.sampled_from(["5", "4"]), st.sampled_from(["7", "6", "0", "1", "255", "256", "-1", "", "x"]), 16),
    "PNUM": mostly(st.just("2"), st.sampled_from(["1", "0", "10000", "x"]), 16),
    "PNO": mostly(st.just("1"), st.sampled_from(["2", "0", "3", ""]), 16),
    "RF": mostly(st.sampled_from(["1", "0"]), st.sampled_from(["2", "", "x"]), 16),
    "Other": st.text(max_size=6),
}


@st.composite
def cp_sections(draw) -> str:
    """A CP section from the real codes and suffixes: usually a DataTime and a few values."""
    groups = [] if draw(st.integers(0, 9)) == 5 else [f"DataTime={draw(DATA_TIME)}"]
    for _ in range(draw(st.integers(1, 4))):
        code = draw(mostly(st.sampled_from(sorted(CODES)), st.sampled_from(["a34005", "X9", "a99999", "", "a34002-x"])))
        suffixes = draw(mostly(st.sampled_from([["Rtd", "Flag"], ["Avg", "Flag"], ["Min", "Avg", "Max", "Flag"]]),
                               st.lists(st.sampled_from(["Rtd", "Avg", "Min", "Max", "Flag", "Cou"]), max_size=4)))
        items = [f"{code}-{suffix}={draw(FLAG_TEXT if suffix == 'Flag' else VALUE_TEXT)}" for suffix in suffixes]
        groups.append(",".join(items) or draw(st.sampled_from(["", "x", "=1", "DataTime=20240601120000"])))
    if draw(st.integers(0, 5)) == 2:
        draw(st.randoms()).shuffle(groups)
    return ";".join(groups)


@st.composite
def data_segments(draw) -> bytes:
    """A data segment: a header from the real keys (now and then missing, repeated,
    reordered or spoilt) and a CP from real codes; or random bytes; or a verified packet
    with a few bytes replaced."""
    choice = draw(st.integers(0, 7))
    if choice == 3:
        return draw(st.binary(max_size=300))
    if choice == 4:
        data = bytearray(draw(st.sampled_from([REALTIME, MINUTE]))[6:-6])
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data) - 1))
            data[at:at + draw(st.integers(0, 3))] = draw(st.binary(max_size=3))
        return bytes(data)
    keys = ["QN", "ST", "CN", "PW", "MN", "Flag"]
    if draw(st.integers(0, 5)) == 2:
        keys += draw(st.lists(st.sampled_from(["PNUM", "PNO", "RF", "Other", "QN"]), max_size=3))
    keys = [k for k in keys if draw(st.integers(0, 29)) != 7]  # now and then one is missing
    header = ";".join(f"{k}={draw(HEADER_VALUES[k])}" for k in keys)
    cp = draw(cp_sections())
    tail = draw(mostly(st.just("&&"), st.sampled_from(["", "&", "&&;"])))
    return f"{header};CP=&&{cp}{tail}".encode("utf-8", "surrogatepass")


def frame_for(data: bytes, crc: str) -> Frame:
    return Frame(data=data, crc=crc, raw=b"##%04d" % len(data) + data + crc.encode() + b"\r\n")


@FUZZ
@given(data=data_segments(), ctx_name=st.sampled_from(sorted(CTXS)), crc=mostly(st.just("right"), st.just("hex"), 6),
       random_crc=st.text("0123456789ABCDEFabcdef", min_size=4, max_size=4),
       received=st.integers(NOW_MS - 86_400_000, NOW_MS + 86_400_000))
def test_decode_frame_never_raises_and_always_gives_a_documented_outcome(data, ctx_name, crc, random_crc, received):
    """Any data segment, right or wrong CRC, with or without a registry: decode_frame never
    raises; it keeps the raw frame; a rejection has coded reasons (identity and header
    problems answer CN=9011 with a QnRtn, content problems CN=9014); an acceptance has
    in-range readings and CONTRACT line protocol at DataTime; an answer is sent exactly
    when Flag has the A bit, and it is one well-formed frame in the device's CRC mode that
    echoes only well-formed QN/PW/MN."""
    ctx = CTXS[ctx_name]
    h = read_header(data)
    device = (ctx.registry.by_mn.get(h.mn) if ctx.registry.enabled else None) if h.mn else None
    mode = device.hj212_crc if device is not None else "strict"
    frame = frame_for(data, crc_hex(data, mode) if crc == "right" else random_crc)
    d = decode_frame(frame, ctx, received_ms=received, peer=PEER)

    out = d.outcome
    assert type(out) in (Accepted, Rejected)
    event("accepted" if type(out) is Accepted else out.reasons[0].partition(":")[0])
    event(f"answer: {h.wants_answer}")
    assert out.raw.payload == frame.raw and out.raw.source == "hj212" and out.raw.received_ms == received
    assert out.raw.topic == f"hj212/{h.mn or PEER}"
    if type(out) is Rejected:
        assert out.reasons
        codes = codes_of(out.reasons, DECODE_CODES)
        # bad_cp is a header problem when CP=&&...&& itself is missing or unclosed, and a
        # content problem (answered 9014) for a bad item inside it.
        header_cp = out.reasons[0].startswith(("bad_cp: no CP", "bad_cp: CP does not end"))
        cn = b"9011" if (codes[0] in REFUSAL_CODES and codes[0] != "bad_cp") or header_cp else b"9014"
    else:
        cn = b"9014"
        assert data.endswith(b"&&") and b";CP=&&" in data, "a packet without a closed CP=&&...&& was accepted"
        check_accepted(out, h, received, device or Device(id=h.mn, site="hj212", kind="dust"))

    if not h.wants_answer:
        assert d.answer is None
        return
    assert d.answer is not None
    [answer] = FrameDecoder().feed(d.answer)
    assert isinstance(answer, Frame) and answer.raw == d.answer
    answer_mode = "strict" if mode == "off" else mode
    assert crc_ok(answer.data, answer.crc, answer_mode)
    m = _ANSWER.fullmatch(answer.data)
    assert m, answer.data
    qn, answer_cn, pw, mn, _, rtn = m.groups()
    assert answer_cn == cn and (rtn is not None) == (cn == b"9011")
    assert qn is None or qn.decode() == h.qn
    assert mn is None or mn.decode() == h.get("MN")
    assert pw is None or pw.decode() == h.get("PW")


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def cp_items(cp: str) -> tuple[str | None, dict[str, dict[str, str]]]:
    """DataTime and code -> {suffix: text} of a CP section (HJ 212-2017 §6.3.3)."""
    data_time, items = None, {}
    for pair in (p for group in cp.split(";") for p in group.split(",") if p):
        key, _, value = pair.partition("=")
        key, value = key.strip(), value.strip()  # a stray space before a code is tolerated
        if key == "DataTime":
            data_time = value
        elif "-" in key:
            code, _, suffix = key.rpartition("-")
            items.setdefault(code, {})[suffix] = value
    return data_time, items


def check_accepted(out: Accepted, h, received: int, dev: Device) -> None:
    """An accepted packet: a line in CONTRACT layout at DataTime (local time in TZ) — `dust`
    for real-time data, `dust_agg` with its `period` for minute/hour/day data — every value
    in range and taken from a number sent for a code of that field (scaled), every stored
    value with its one-letter flag; items not stored are named in `partial` with a code;
    an extra line only for a sensor_fault event."""
    cn = Cn(int(h.get("CN")))
    line, *event_lines = out.lines
    m = re.fullmatch(r"(dust|dust_agg),device=([A-Za-z0-9_-]+),(?:period=(minute|hour|day),)?site=([A-Za-z0-9_-]+) "
                     r"(\S+) (-?\d+)", line)
    assert m, line
    measurement, device, period, site, fields, ts = m.groups()
    assert (measurement, period) == {Cn.REALTIME: ("dust", None), Cn.MINUTE: ("dust_agg", "minute"),
                                     Cn.HOURLY: ("dust_agg", "hour"), Cn.DAILY: ("dust_agg", "day")}[cn]
    assert int(ts) <= received + 300_000
    data_time, items = cp_items(h.cp)
    assert int(ts) == int(datetime.strptime(data_time, "%Y%m%d%H%M%S").replace(tzinfo=TZ).timestamp()) * 1000
    suffixes = [("", "Rtd")] if cn == Cn.REALTIME else [("", "Avg"), ("_min", "Min"), ("_max", "Max"), ("_cou", "Cou")]
    sent: dict[str, list[float]] = {}
    for code, slot in items.items():
        field = dev.hj212_aliases.get(code) or DUST.hj212_codes.get(code.lower()) or CODES.get(code)
        if field not in DUST.fields or DUST.fields[field].type != "float":
            continue
        for stored, suffix in suffixes:
            if suffix in slot and _NUMBER.fullmatch(slot[suffix]):
                scale = dev.hj212_scale if field in ("tsp", "pm10", "pm25") else 1.0
                sent.setdefault(field + stored, []).append(float(slot[suffix]) * scale)
    values, flags = {}, {}
    for item in fields.split(","):
        key, _, text = item.partition("=")
        if key.endswith("_flag"):
            assert re.fullmatch(r'"[A-Z]"', text) and key[:-5] in DUST.fields, item
            flags[key[:-5]] = text[1]
            continue
        base = re.sub(r"_(min|max|cou)$", "", key) if measurement == "dust_agg" else key
        assert base in DUST.fields and key not in values and re.fullmatch(r"-?\d+\.\d+(e[+-]\d+)?|-?\d+e[+-]\d+", text)
        f = DUST.fields[base]
        values[key] = float(text)
        assert f.type == "float" and (key.endswith("_cou") or f.min <= values[key] <= f.max), (key, text)
        assert values[key] in sent.get(key, ()), (key, values[key], sent.get(key))
    stored_fields = {re.sub(r"_(min|max|cou)$", "", k) if measurement == "dust_agg" else k for k in values}
    assert stored_fields <= set(flags), "a stored value without its flag"
    assert values, "an accepted packet stores at least one value"
    for reason in out.partial:
        codes_of((reason,), DECODE_CODES)
    for ev in event_lines:
        assert ev.startswith(f"events,device={device},kind=dust,site={site},type=sensor_fault ")
    assert bool(event_lines) == any(flag in "DF" for flag in flags.values())
    if cn == Cn.REALTIME:
        [r] = out.readings
        assert (r.device, r.site, r.ts_ms) == (device, site, int(ts)) and r.values == values
        assert line == reading_line(r) and r.quality == flags
    else:  # aggregates: a value-less reading (the device is alive), never values for the windows
        [r] = out.readings
        assert (r.device, r.site, r.ts_ms, r.values, r.quality) == (device, site, int(ts), {}, {})


@FUZZ
@given(payload=st.one_of(SOUP, valid_frames(), data_segments().map(lambda b: encode_frame(b[:9999]))),
       source_topic=st.sampled_from([f"hj212/{MN}", "hj212/10.0.0.7:1", "hj212", ""]))
def test_decode_raw_for_replay_never_raises(payload, source_topic):
    """Replay re-decodes whatever the dead-letter store holds: any payload gives one
    outcome carrying the same raw message; rejections have coded reasons."""
    raw = RawMessage(source_topic, payload, NOW_MS, "hj212")
    out = decode_raw(raw, CTXS["strict"])
    assert type(out) in (Accepted, Rejected) and out.raw is raw
    if type(out) is Rejected:
        assert out.reasons
        codes_of(out.reasons, DECODE_CODES | FRAMING_CODES)


@st.composite
def realtime_packets(draw) -> tuple[bytes, int, int, dict[str, float]]:
    """A valid real-time upload of in-range values for any subset of the
    standard codes, with its cn, DataTime as epoch ms, and the values it must store."""
    cn = Cn.REALTIME
    fields = draw(st.lists(st.sampled_from(sorted(FIELD_CODES)), unique=True, min_size=1))
    values = {f: draw(st.floats(DUST.fields[f].min, DUST.fields[f].max)) for f in fields}
    when = draw(st.datetimes(datetime(2000, 1, 1, 8, 0), datetime(2024, 6, 2, 11, 0)))  # local; 08:00 = the 2000 floor
    packet = encode_packet(mn=MN, pw=PW, data_time=when, cn=cn, values={FIELD_CODES[f]: v for f, v in values.items()},
                           flag=draw(st.sampled_from([4, 5])))
    ts_ms = int(when.replace(microsecond=0, tzinfo=TZ).timestamp()) * 1000
    return packet, cn, ts_ms, {f: float(format(v, ".10g")) for f, v in values.items()}


@FUZZ
@given(packet=realtime_packets(), cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_valid_packets_split_anywhere_are_accepted_with_the_values_sent(packet, cuts):
    """A valid real-time upload of in-range values, split at random points: one frame,
    Accepted, one reading at DataTime whose values (and line) are exactly those sent, each
    with its flag N."""
    raw, _, ts_ms, values = packet
    items = feed_checked(FrameDecoder(), split(raw, cuts), 4096, 4096 + _OVERHEAD)
    [(_, frame)] = items
    assert isinstance(frame, Frame)
    d = decode_frame(frame, CTXS["strict"], received_ms=NOW_MS, peer=PEER)
    assert type(d.outcome) is Accepted, d.outcome
    [r] = d.outcome.readings
    assert r.ts_ms == ts_ms and r.values == {f: values[f] for f in r.values} and set(r.values) == set(values)
    assert d.outcome.lines == (reading_line(r),) and r.quality == {f: "N" for f in values}


@FUZZ
@given(packet=realtime_packets(), data=st.data())
def test_a_packet_with_one_value_that_is_not_a_number_is_rejected_naming_it(packet, data):
    """A valid upload with one value replaced by text that is not a finite decimal number
    (empty, NaN, inf, hex, a unit, two points, ...): that value is never stored (as some
    other number or at all), a bad_value reason names its code (dead-lettered), the other
    values are stored, and the packet is answered 9014 when asked."""
    raw = packet[0]
    body = raw[6:-6].decode()
    values = re.findall(r"([A-Za-z0-9]+-(?:Rtd|Avg))=([^,;&]*)", body)
    key, text = data.draw(st.sampled_from(values), label="value")
    junk = data.draw(st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e999", "0x10", "1.2.3", "12mg", "--1", "1e",
                                      ".", "+", "1_000", "N", "١٢"]) | st.text("abcxyz ._+-eE", min_size=1, max_size=6)
                     .filter(lambda t: not _NUMBER.fullmatch(t)), label="junk")
    spoilt = body.replace(f"{key}={text}", f"{key}={junk}", 1).encode("utf-8")
    d = decode_frame(frame_for(spoilt, crc_hex(spoilt)), CTXS["strict"], received_ms=NOW_MS, peer=PEER)
    if not junk.isascii():
        assert type(d.outcome) is Rejected and d.outcome.reasons[0].startswith("bad_encoding: ")
        return
    # Partial acceptance: the other values are stored, the spoilt one is named (never
    # stored as some other number); alone, it rejects the packet.
    out = d.outcome
    reasons = out.partial if type(out) is Accepted else out.reasons
    assert any(r.startswith(f"bad_value: {key} ") for r in reasons), reasons
    assert (type(out) is Accepted) == (len(values) > 1), (key, junk)
    if type(out) is Accepted:
        [r] = out.readings
        spoilt_field = DUST.hj212_codes.get(key.split("-")[0].lower()) or CODES[key.split("-")[0]]
        assert spoilt_field not in r.values and len(r.values) == len(values) - 1
    assert (d.answer is not None) == read_header(spoilt).wants_answer
    assert d.answer is None or b";CN=9014;" in d.answer
