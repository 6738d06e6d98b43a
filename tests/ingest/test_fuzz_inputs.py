"""Property-based tests of the MQTT-side parsers that see raw network bytes.

The project standard: bad input gets a clear, specific error and loses nothing; no input
may crash, stall or corrupt the pipeline. The table tests in test_decode.py and
test_consumer_parts.py pin known cases; these let hypothesis look for the unknown ones.

- `ingest.decode.Decoder.decode`: arbitrary topics and payload bytes, "nearly valid" JSON
  built from the kinds' real field names (checked against an independent oracle), and
  valid readings that must round-trip exactly through line protocol.
- `ingest.paho_adapter.BufferedSocket.take_publishes`: well-formed MQTT 5 streams cut and
  chunked anywhere (a model of `FastClient.loop_read` with paho as the fallback), and
  garbage compared with a reference parser written from the MQTT 5 spec.

`make test` runs them derandomized (the same examples every run; see
`tests.support.fuzz_settings`), `make fuzz` with new random examples. Hypothesis keeps no
example database (`database=None`); a failure prints its reproducer, and the bugs found
are pinned by explicit tests below.
"""

from __future__ import annotations

import json
import math
import re
import socket
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import paho.mqtt.client as mqtt
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from citywatch.model import RawMessage
from citywatch.registry import Device, Registry
from citywatch.schema import FieldSpec, kinds
from ingest.paho_adapter import BufferedSocket, FastClient
from ingest.decode import MAX_ITEMS, MIN_TS_MS, Decoder
from ingest.types import Accepted, Rejected
from tests.ingest.mqtt_packets import varint
from tests.support import fuzz_settings

FUZZ = fuzz_settings(250)  # derandomized in `make test`; `make fuzz` explores

NOW = 1_795_737_600_000  # 2026-11-27T00:00:00Z, the decoder's clock
MAX_FUTURE_MS = 300_000  # Decoder's default max_future_s
KINDS = kinds()
KIND_NAMES = sorted(KINDS)
# Kinds that report telemetry (a kind may have events only, e.g. the HJ 212 gateway's own).
TELEMETRY_KINDS = [k for k in KIND_NAMES if KINDS[k].fields]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)

# The stable codes listed in ingest/decode.py's module docstring.
REASON_CODES = frozenset({
    "payload_too_large", "bad_topic", "invalid_json", "invalid_utf8", "invalid_field", "unknown_field",
    "missing_field", "bad_timestamp", "future_timestamp", "unknown_kind", "unknown_device",
    "registry_mismatch", "empty_values", "unknown_event",
})

# One decoder for the whole module, so the topic, timestamp-text and float-text caches are
# exercised across examples as they are in production; a second one with a registry and a
# tiny payload limit for the registry and payload_too_large paths.
PLAIN = Decoder(clock=lambda: NOW)
REGISTRY = Registry({"D00001": Device(id="D00001", site="S0001", kind="dust"),
                     "H1": Device(id="H1", site="S0002", kind="heating")}, {})
STRICT = Decoder(clock=lambda: NOW, registry=REGISTRY, max_payload_bytes=96)


# -- a strict parser of the docs/contract.md §5 line layout ------------------------------

_ID = r"[A-Za-z0-9_-]{1,64}"
_READING_HEAD = re.compile(rf"({_ID}),device=({_ID}),site=({_ID}) ")
_EVENT_HEAD = re.compile(rf"events,device=({_ID}),kind=({_ID}),site=({_ID}),type=({_ID}) ")
_FIELD_KEY = re.compile(rf"({_ID})=")
# What `repr(float)` writes for a finite float, and the two booleans; never an integer
# field (`1i`), never inf/nan.
_SCALAR = re.compile(r"true|false|-?(?:\d+\.\d+(?:e[+-]\d+)?|\d+e[+-]\d+)")
_TIMESTAMP = re.compile(r" (-?\d+)")
_STRING_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}  # citywatch.lineproto.quote_string


def parse_fields(line: str, pos: int) -> tuple[dict[str, float | bool | str], int]:
    """The field set of a line starting at `pos`: keys, values, and the index after it."""
    fields: dict[str, float | bool | str] = {}
    while True:
        m = _FIELD_KEY.match(line, pos)
        assert m, f"bad field key at {pos}: {line!r}"
        key, pos = m.group(1), m.end()
        assert key not in fields, f"field {key} twice: {line!r}"
        if line.startswith('"', pos):
            pos += 1
            text = []
            while True:
                assert pos < len(line), f"unterminated string: {line!r}"
                c = line[pos]
                if c == "\\":
                    assert line[pos + 1:pos + 2] in _STRING_ESCAPES, f"bad escape: {line!r}"
                    text.append(_STRING_ESCAPES[line[pos + 1]])
                    pos += 2
                elif c == '"':
                    pos += 1
                    break
                else:
                    text.append(c)
                    pos += 1
            fields[key] = "".join(text)
        else:
            m = _SCALAR.match(line, pos)
            assert m, f"bad field value at {pos}: {line!r}"
            word, pos = m.group(), m.end()
            fields[key] = True if word == "true" else False if word == "false" else float(word)
        if line.startswith(",", pos):
            pos += 1
            continue
        return fields, pos


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, float | bool | str], int]:
    """(measurement, tags, fields, timestamp) of one line in CONTRACT layout, or AssertionError.
    Identifiers never need escaping, so any backslash, space or comma in a tag fails."""
    assert "\n" not in line, f"raw line break in {line!r}"  # a CR inside a quoted string is data
    m = _READING_HEAD.match(line)
    if line.startswith("events,"):
        m = _EVENT_HEAD.match(line)
        assert m, f"bad event series key: {line!r}"
        measurement, tags = "events", dict(zip(("device", "kind", "site", "type"), m.groups()))
    else:
        assert m, f"bad series key: {line!r}"
        measurement, tags = m.group(1), {"device": m.group(2), "site": m.group(3)}
    fields, pos = parse_fields(line, m.end())
    t = _TIMESTAMP.fullmatch(line, pos)
    assert t, f"bad timestamp part: {line[pos:]!r}"
    return measurement, tags, fields, int(t.group(1))


def same(a: object, b: object) -> bool:
    """Equal with the same type, and -0.0 is not 0.0."""
    return type(a) is type(b) and (repr(a) == repr(b) if isinstance(a, float) else a == b)


def check_outcome(raw: RawMessage, out: object) -> None:
    """What every outcome of `Decoder.decode` must satisfy, whatever the input."""
    assert type(out) in (Accepted, Rejected), out
    assert out.raw is raw  # the raw bytes travel with the outcome (dead letters lose nothing)
    if type(out) is Rejected:
        assert out.reasons, "a rejection without a reason"
        for reason in out.reasons:
            code, sep, detail = reason.partition(": ")
            assert sep and code in REASON_CODES and detail, reason
        return
    parts = raw.topic.split("/")
    assert len(parts) == 4 and parts[0] in ("telemetry", "events"), raw.topic
    _, kind, site, device = parts
    spec = KINDS[kind]
    assert len(out.lines) == len(out.readings) + len(out.events) >= 1
    for r, line in zip(out.readings, out.lines):
        assert (r.kind, r.site, r.device) == (kind, site, device)
        assert MIN_TS_MS <= r.ts_ms <= NOW + MAX_FUTURE_MS and type(r.ts_ms) is int
        assert r.values and list(r.values) == [n for n in spec.fields if n in r.values]  # the kind's order
        for name, value in r.values.items():
            f = spec.fields[name]
            if f.type == "bool":
                assert type(value) is bool
            else:
                assert type(value) is float and math.isfinite(value) and f.min <= value <= f.max, (name, value)
        measurement, tags, fields, ts = parse_line(line)
        assert measurement == kind and tags == {"device": device, "site": site} and ts == r.ts_ms
        assert list(fields) == list(r.values) and all(same(fields[k], v) for k, v in r.values.items()), line
    for e, line in zip(out.events, out.lines[len(out.readings):]):
        assert (e.kind, e.site, e.device) == (kind, site, device) and e.type in spec.events
        assert MIN_TS_MS <= e.ts_ms <= NOW + MAX_FUTURE_MS
        measurement, tags, fields, ts = parse_line(line)
        assert measurement == "events" and ts == e.ts_ms
        assert tags == {"device": device, "kind": kind, "site": site, "type": e.type}
        expected = dict(e.attributes) or {"count": 1.0}
        assert list(fields) == list(expected) and all(same(fields[k], v) for k, v in expected.items()), line


# -- strategies -----------------------------------------------------------------------------

IDENT = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=64)
NASTY = st.text(st.sampled_from(list("aZ09_-/ ,=\\\n\r\t\"'#+$\x00é中")) | st.characters(), max_size=70)
TOPIC_PART = st.one_of(IDENT, NASTY, st.sampled_from(["D00001", "S0001", "H1", "S0002", "", "+", "#"]))
VALID_TOPICS = st.builds(lambda c, k, s, d: f"{c}/{k}/{s}/{d}", st.sampled_from(["telemetry", "events"]),
                         st.sampled_from(KIND_NAMES), st.sampled_from(["S0001", "S0002"]) | IDENT,
                         st.sampled_from(["D00001", "H1"]) | IDENT)
OTHER_TOPICS = st.one_of(
    st.text(max_size=200),
    st.builds(lambda c, k, s, d: f"{c}/{k}/{s}/{d}", st.sampled_from(["telemetry", "events"]) | NASTY,
              st.sampled_from(KIND_NAMES) | TOPIC_PART, TOPIC_PART, TOPIC_PART),
    st.lists(TOPIC_PART, min_size=1, max_size=6).map("/".join),
)
TOPICS = st.booleans().flatmap(lambda other: OTHER_TOPICS if other else VALID_TOPICS)  # half and half

# Numbers and strings that sit on some edge: JSON/float/int64 limits, NaN-like text.
EDGE_INTS = st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**308,
                             10**309, -(10**309), 10**4000, -(10**4000), MIN_TS_MS - 1, MIN_TS_MS,
                             NOW + MAX_FUTURE_MS, NOW + MAX_FUTURE_MS + 1, 1_795_737_600])
EDGE_FLOATS = st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                               -1.7976931348623157e308, -1e-300, 0.1, 1e16, 1.5e-7, math.inf, -math.inf,
                               math.nan, float(MIN_TS_MS), 1.5e12])
NAN_TEXT = st.sampled_from(["NaN", "nan", "-nan", "Infinity", "-Infinity", "inf", "1e999", "", " 1", "0x10",
                            "1_000", "true", "null", "86", "-0", "１２"])
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), EDGE_INTS, st.floats(),
                         EDGE_FLOATS, st.text(max_size=20), NAN_TEXT)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def _datetime_text(dt: datetime, spec: str, z: bool) -> str:
    text = dt.isoformat(timespec=spec)
    return text[:-6] + "Z" if z and text.endswith("+00:00") else text


ZONES = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30)),
                         timezone(timedelta(hours=23, minutes=59))])
TS_TEXT = st.builds(
    _datetime_text,
    st.datetimes(min_value=datetime(1999, 12, 31), max_value=datetime(2026, 11, 28),
                 timezones=ZONES | st.none()),
    st.sampled_from(["seconds", "milliseconds", "microseconds", "minutes"]),
    st.booleans())
TS_VALUES = st.one_of(
    st.integers(MIN_TS_MS, NOW + MAX_FUTURE_MS), EDGE_INTS, TS_TEXT, NAN_TEXT, st.text(max_size=30),
    st.booleans(), st.none(), st.floats(), st.integers(-(2**70), 2**70), st.integers(-(10**600), 10**600))
MOSTLY_VALID_TS = st.integers(0, 4).flatmap(
    lambda n: st.integers(MIN_TS_MS, NOW + MAX_FUTURE_MS) if n < 2 else TS_TEXT if n == 2 else
    EDGE_INTS | st.integers(-(10**600), 10**600) if n == 3 else TS_VALUES)


def in_range(f: FieldSpec) -> st.SearchStrategy:
    """A valid JSON value for one telemetry field, edges included."""
    if f.type == "bool":
        return st.booleans()
    lo, hi = f.min, f.max
    return st.one_of(st.floats(lo, hi), st.integers(math.ceil(lo), math.floor(hi)), st.sampled_from([lo, hi]),
                     st.sampled_from([float(lo), float(hi), math.nextafter(lo, hi), math.nextafter(hi, lo)]))


def out_of_range(f: FieldSpec) -> st.SearchStrategy:
    if f.type == "bool":
        return st.sampled_from([0, 1, "true", None, 1.0])
    return st.sampled_from([math.nextafter(f.min, -math.inf), math.nextafter(f.max, math.inf), f.min - 1, f.max + 1,
                            str(f.max), None, True])


@st.composite
def nearly_valid_item(draw, kind: str) -> dict:
    """A telemetry object with the kind's real field names; values valid, off by one ulp,
    of the wrong JSON type, huge, NaN-like or nested; keys sometimes missing or extra."""
    spec = KINDS[kind]
    # About one in n+1 (hypothesis favours the ends of an integer range, so not those).
    def now_and_then(n: int) -> bool:
        return draw(st.integers(0, n)) == n // 2

    names = draw(st.lists(st.sampled_from(list(spec.fields)), unique=True, min_size=0 if now_and_then(19) else 1))
    values = {name: draw(in_range(spec.fields[name])) for name in names}
    if names and now_and_then(2):  # spoil one or two of them
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=2)):
            values[name] = draw(st.one_of(out_of_range(spec.fields[name]), JSON_VALUES))
    if now_and_then(9):
        values[draw(st.sampled_from(["ozone", "PM10", "pm10 ", "", "values"]))] = 1
    obj: dict = {}
    if not now_and_then(19):
        obj["ts"] = draw(MOSTLY_VALID_TS)
    if draw(st.booleans()):
        obj["seq"] = draw(st.integers(0, 2**70) if not now_and_then(3) else st.one_of(
            st.none(), st.integers(-5, -1), st.booleans(), st.floats(), st.text(max_size=3)))
    if not now_and_then(19):
        obj["values"] = draw(JSON_VALUES) if now_and_then(19) else values
    if now_and_then(19):
        obj[draw(st.sampled_from(["extra", "Ts", "value", "type"]))] = draw(JSON_SCALARS)
    return obj


_INVALID = object()


def expect_value(f: FieldSpec, v: object) -> object:
    """What the decoder must store for value `v` of field `f`, or _INVALID."""
    if f.type == "bool":
        return v if type(v) is bool else _INVALID
    if type(v) not in (int, float):
        return _INVALID
    try:
        x = float(v)
    except OverflowError:
        return _INVALID
    if not math.isfinite(x) or not f.min <= x <= f.max:
        return _INVALID
    return x


def expect_ts(ts: object) -> object:
    """Epoch ms of a valid `ts` (exact, from the instant itself), or _INVALID."""
    if type(ts) is int:
        ms = ts
    elif type(ts) is str:
        try:
            dt = datetime.fromisoformat(ts)
        except ValueError:
            return _INVALID
        if dt.tzinfo is None:
            return _INVALID
        ms = (dt - EPOCH) // ONE_MS
    else:
        return _INVALID
    return ms if MIN_TS_MS <= ms <= NOW + MAX_FUTURE_MS else _INVALID


def expect_reading(kind: str, obj: object) -> object:
    """The (ts_ms, values, seq) a valid telemetry object must become, or _INVALID: an
    oracle written from kinds.yaml and the module docstring, not from the decoder."""
    spec = KINDS[kind]
    if type(obj) is not dict or set(obj) - {"ts", "seq", "values"} or not {"ts", "values"} <= set(obj):
        return _INVALID
    seq = obj.get("seq")
    if seq is not None and not (type(seq) is int and seq >= 0):
        return _INVALID
    ts_ms = expect_ts(obj["ts"])
    values = obj["values"]
    if ts_ms is _INVALID or type(values) is not dict or not values or set(values) - set(spec.fields):
        return _INVALID
    stored = {name: expect_value(spec.fields[name], values[name]) for name in spec.fields if name in values}
    if _INVALID in stored.values():
        return _INVALID
    return ts_ms, stored, seq


def decode(decoder: Decoder, topic: str, payload: bytes) -> tuple[RawMessage, object]:
    raw = RawMessage(topic, payload, NOW)
    return raw, decoder.decode(raw)


# -- Decoder.decode ----------------------------------------------------------------------------

@FUZZ
@given(decoder=st.sampled_from([PLAIN, STRICT]), topic=TOPICS,
       payload=st.one_of(st.binary(max_size=300), JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                         st.text(max_size=100).map(str.encode)))
def test_decode_never_raises_on_arbitrary_topics_and_bytes(decoder, topic, payload):
    """Any topic text and any payload bytes: `decode` returns exactly one Accepted or
    Rejected carrying the raw message; every rejection has at least one reason, each with
    a stable code; anything accepted is CONTRACT line protocol."""
    raw, out = decode(decoder, topic, payload)
    check_outcome(raw, out)
    event("accepted" if type(out) is Accepted else out.reasons[0].partition(":")[0])


@FUZZ
@given(data=st.data(), kind=st.sampled_from(TELEMETRY_KINDS), batch=st.integers(0, 3), site=IDENT, device=IDENT)
def test_decode_nearly_valid_telemetry_matches_the_oracle(data, kind, batch, site, device):
    """Telemetry built from the kind's real field names with values of every JSON type:
    decode never raises, its outcome satisfies the invariants, and it accepts exactly the
    payloads the oracle (kinds.yaml ranges, strict types, ts rules) calls valid, storing
    exactly the values and timestamp that were sent. `batch` > 0 sends a JSON array."""
    items = [data.draw(nearly_valid_item(kind)) for _ in range(max(batch, 1))]
    payload = json.dumps(items if batch else items[0]).encode()
    topic = f"telemetry/{kind}/{site}/{device}"
    raw, out = decode(PLAIN, topic, payload)
    check_outcome(raw, out)
    event("accepted" if type(out) is Accepted else out.reasons[0].partition(":")[0])
    expected = [expect_reading(kind, item) for item in items]
    if _INVALID in expected or len(items) > MAX_ITEMS:
        assert type(out) is Rejected, (items, out)
        return
    assert type(out) is Accepted, (items, out.reasons)
    got = [(r.ts_ms, r.values, r.seq) for r in out.readings]
    assert len(got) == len(expected)
    for (ts_ms, values, seq), (e_ts, e_values, e_seq) in zip(got, expected):
        assert ts_ms == e_ts and seq == e_seq
        assert list(values) == list(e_values) and all(same(values[k], v) for k, v in e_values.items())


@st.composite
def valid_reading(draw, kind: str) -> tuple[dict, int, dict]:
    """A valid telemetry object of `kind`, its exact epoch ms and the stored values."""
    spec = KINDS[kind]
    names = draw(st.lists(st.sampled_from(list(spec.fields)), unique=True, min_size=1))
    values = {n: draw(in_range(spec.fields[n])) for n in names}
    # Half of them in 2000-2004 (where a float conversion lost a millisecond of some instants),
    # and half uniform, since hypothesis's integers cluster at the ends of their range.
    end = draw(st.sampled_from([NOW + MAX_FUTURE_MS, 1_100_000_000_000]))
    ts_ms = draw(st.integers(MIN_TS_MS, end) | st.randoms(use_true_random=True).map(
        lambda r: r.randint(MIN_TS_MS, end)))
    form = draw(st.sampled_from(["int", "ms", "ms", "s", "us"]))
    if form == "int":
        ts: int | str = ts_ms
    else:
        zone = draw(ZONES)
        dt = (EPOCH + ts_ms * ONE_MS).astimezone(zone)
        if form == "s":
            dt = dt.replace(microsecond=0)
        elif form == "us":
            dt = dt.replace(microsecond=dt.microsecond + draw(st.integers(0, 999)))
        ts = _datetime_text(dt, {"s": "seconds", "ms": "milliseconds", "us": "microseconds"}[form], draw(st.booleans()))
        ts_ms = (dt - EPOCH) // ONE_MS
    obj = {"ts": ts, "values": values}
    if draw(st.booleans()):
        obj["seq"] = draw(st.integers(0, 2**64))
    return obj, ts_ms, {n: v if type(v) is bool else float(v) for n, v in values.items()}


@FUZZ
@given(data=st.data(), kind=st.sampled_from(TELEMETRY_KINDS))
def test_valid_readings_are_accepted_and_round_trip_exactly(data, kind):
    """A reading with in-range values for any subset of the kind's fields (edges included)
    and ts as epoch ms or RFC 3339 text (any offset, s/ms/µs precision) is Accepted, and its
    line protocol reads back as exactly the values and the instant (in ms) that were sent."""
    obj, ts_ms, values = data.draw(valid_reading(kind))
    raw, out = decode(PLAIN, f"telemetry/{kind}/S0001/D00001", json.dumps(obj).encode())
    assert type(out) is Accepted, (obj, out.reasons)
    check_outcome(raw, out)
    (r,) = out.readings
    assert r.ts_ms == ts_ms, (obj["ts"], r.ts_ms, ts_ms)
    assert r.values == values and list(r.values) == [n for n in KINDS[kind].fields if n in values]
    _, _, fields, ts = parse_line(out.lines[0])
    assert ts == ts_ms and all(same(fields[k], v) for k, v in r.values.items())


@FUZZ
@given(rng=st.randoms(use_true_random=True), zone=ZONES, precision=st.sampled_from(["milliseconds", "microseconds"]),
       z=st.booleans())
def test_rfc3339_timestamps_in_a_batch_decode_to_the_exact_millisecond(rng, zone, precision, z):
    """A batch of 50 readings, each at a uniformly random instant from 2000 to now written as
    RFC 3339 text (ms or µs, any offset, 'Z' or not): every reading's ts_ms is exactly that
    instant, floored to the millisecond. (Uniform, because a float conversion was off by
    one for only a few percent of the instants of 2000-2004.)"""
    instants_us = [rng.randint(MIN_TS_MS, NOW) * 1000 + (rng.randint(0, 999) if precision == "microseconds" else 0)
                   for _ in range(50)]
    texts = [_datetime_text((EPOCH + us * timedelta(microseconds=1)).astimezone(zone), precision, z)
             for us in instants_us]
    payload = json.dumps([{"ts": t, "values": {"pm10": 1}} for t in texts]).encode()
    _, out = decode(PLAIN, "telemetry/dust/S0001/D00001", payload)
    assert type(out) is Accepted, out.reasons
    wrong = [(t, r.ts_ms) for t, us, r in zip(texts, instants_us, out.readings) if r.ts_ms != us // 1000]
    assert not wrong, wrong


@pytest.mark.parametrize("ts,ts_ms", [
    ("2004-04-11T13:35:08.347+00:00", 1_081_690_508_347),  # float timestamp() * 1000 gave ...346
    ("2004-05-22T22:07:35.998+08:00", 1_085_234_855_998),
    ("2026-11-27T08:00:00.123456+08:00", NOW + 123),  # sub-ms digits are cut, not rounded
])
def test_rfc3339_milliseconds_are_exact(ts, ts_ms):
    """Regression: an RFC 3339 ts with milliseconds was converted through a float and came
    out one millisecond early for about 1 in 25 timestamps of 2000-2004."""
    _, out = decode(Decoder(clock=lambda: NOW), "telemetry/dust/S1/D1",
                    json.dumps({"ts": ts, "values": {"pm10": 1}}).encode())
    assert type(out) is Accepted and out.readings[0].ts_ms == ts_ms
    assert out.lines[0].endswith(f" {ts_ms}")


@pytest.mark.parametrize("channel,body", [
    ("telemetry", {"values": {"pm10": 1}}),
    ("events", {"type": "vehicle_exit", "washed": True, "covered": True}),
])
def test_a_ts_too_large_for_a_float_is_a_future_timestamp_not_a_crash(channel, body):
    """Regression: `{"ts": 10**400}` (valid JSON, a valid StrictInt) raised OverflowError
    while the reason was formatted; the consumer caught it as `internal_error`, and replay
    of that dead letter crashed."""
    _, out = decode(Decoder(clock=lambda: NOW), f"{channel}/dust/S1/D1",
                    json.dumps({"ts": 10**400, **body}).encode())
    ahead_s = str((10**400 - NOW + 500) // 1000)  # to the nearest second: 397 digits, shown briefly
    assert type(out) is Rejected
    assert out.reasons == (f"future_timestamp: ts is {ahead_s[:12]}… (397 digits) s ahead of the server clock "
                           "(limit 300 s)",)
    _, out = decode(Decoder(clock=lambda: NOW), f"{channel}/dust/S1/D1",
                    json.dumps({"ts": -10**400, **body}).encode())
    assert type(out) is Rejected
    assert out.reasons == ("bad_timestamp: ts -10000000000… (401 digits) is before 2000-01-01",)


@st.composite
def nearly_valid_event(draw, kind: str) -> dict:
    """An event object with a real (or wrong) type and the real attribute names."""
    spec = KINDS[kind]
    etype = draw(st.sampled_from([*spec.events, "teleport", ""]) if spec.events else st.just("x"))
    obj: dict = {"type": etype}
    if draw(st.integers(0, 9)) != 5:
        obj["ts"] = draw(MOSTLY_VALID_TS)
    for name, f in spec.events.get(etype, {}).items():
        if f.required or draw(st.booleans()):
            spoil = draw(st.integers(0, 4)) == 2
            if f.type == "str":
                v = draw(JSON_SCALARS if spoil else st.text(max_size=f.max_length or 256)
                         | st.text(st.sampled_from(list('a "\\\n\r,= é')), max_size=16))
            else:
                v = draw(st.one_of(out_of_range(f), JSON_SCALARS) if spoil else in_range(f))
            obj[name] = v
    return obj


@FUZZ
@given(data=st.data(), kind=st.sampled_from(KIND_NAMES), batch=st.integers(0, 2))
def test_decode_nearly_valid_events_never_crash_and_store_what_was_sent(data, kind, batch):
    """Events with real types and attribute names, values of any JSON type (strings with
    quotes, backslashes, newlines, commas): decode never raises; an accepted event's line
    reads back as exactly its attributes (strings escaped, not broken out of the quotes)."""
    items = [data.draw(nearly_valid_event(kind)) for _ in range(max(batch, 1))]
    raw, out = decode(PLAIN, f"events/{kind}/S0001/D00001", json.dumps(items if batch else items[0]).encode())
    check_outcome(raw, out)
    event("accepted" if type(out) is Accepted else "rejected")
    if type(out) is Accepted:
        assert len(out.events) == len(items)
        for e, item in zip(out.events, items):
            sent = {k: (float(v) if type(v) is int else v) for k, v in item.items() if k not in ("ts", "type")}
            assert e.type == item["type"] and e.attributes == sent
            assert all(same(e.attributes[k], v) for k, v in sent.items())


# -- BufferedSocket.take_publishes ------------------------------------------------------------

@dataclass(frozen=True)
class Packet:
    raw: bytes
    handed: tuple[bytes, bytes, int, int] | None  # what the fast path must hand over, or None: paho's


PROPERTIES = st.sampled_from([
    b"",
    b"\x01\x01",  # payload format indicator
    b"\x02\x00\x00\x0e\x10",  # message expiry interval
    b"\x03\x00\x10application/json",  # content type
    b"\x26\x00\x01k\x00\x01v",  # a user property
    b"\x26\x00\x80" + b"k" * 128 + b"\x00\x01v",  # a property block longer than 127 bytes
    b"\x0b\x81\x01",  # subscription identifier (itself a varint)
])


@st.composite
def payloads(draw) -> bytes:
    """Empty, small, or long enough that the remaining length needs 2 or 3 bytes."""
    size = draw(st.one_of(st.integers(0, 40), st.integers(100, 140), st.integers(16_370, 16_400)))
    pattern = draw(st.binary(min_size=1, max_size=8))
    return (pattern * (size // len(pattern) + 1))[:size]


@st.composite
def packets(draw) -> Packet:
    """One well-formed MQTT 5 packet as a broker sends it to a subscriber."""
    what = draw(st.sampled_from(["q0", "q1", "q1", "q2", "other"]))
    if what == "other":
        raw = draw(st.sampled_from([
            b"\xd0\x00",  # PINGRESP
            b"\x90\x04\x00\x01\x00\x01",  # SUBACK
            b"\x62\x02\x00\x07",  # PUBREL
            b"\x40\x02\x00\x05",  # PUBACK (as if echoed)
            b"\x20\x03\x00\x00\x00",  # CONNACK
            b"\xe0\x00",  # DISCONNECT
            b"\xe0\x82\x01\x8e\x7f\x1f\x00\x7c" + b"r" * 124,  # DISCONNECT, reason string, 2-byte length
        ]))
        return Packet(raw, None)
    qos = {"q0": 0, "q1": 1, "q2": 2}[what]
    topic = draw(st.one_of(st.text(max_size=40), st.text(max_size=200),
                           st.sampled_from(["telemetry/dust/S0001/D00001", "温度/传感器", ""]))).encode()
    payload, props = draw(payloads()), draw(PROPERTIES)
    mid = draw(st.integers(1, 65535))
    flags = draw(st.sampled_from([0, 1, 8, 9])) if qos else draw(st.sampled_from([0, 1]))  # DUP, RETAIN
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    body += varint(len(props)) + props + payload
    raw = bytes([0x30 | flags | qos << 1]) + varint(len(body)) + body
    return Packet(raw, (topic, payload, mid if qos else 0, qos) if qos < 2 else None)


class ChunkSocket:
    """A non-blocking socket whose `recv` returns the given chunks, then BlockingIOError."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = [c for c in chunks if c]

    def recv(self, n: int) -> bytes:
        if not self._chunks:
            raise BlockingIOError
        chunk = self._chunks.pop(0)
        if len(chunk) > n:
            chunk, rest = chunk[:n], chunk[n:]
            self._chunks.insert(0, rest)
        return chunk


def unread(buf: BufferedSocket) -> bytes:
    """Everything paho can still read from the buffer (the socket has no more)."""
    try:
        return buf.recv(1 << 20)
    except BlockingIOError:
        return b""


def loaded(data: bytes) -> BufferedSocket:
    buf = BufferedSocket(ChunkSocket([data]))
    if data:
        assert buf.read_more()
    return buf


def expected_head(stream: list[Packet], available: int) -> tuple[list, int, bool]:
    """What take_publishes must do on the first `available` bytes of `stream`: the packets
    it hands over, the bytes they take, and whether it stops for more bytes."""
    handed, pos = [], 0
    for p in stream:
        if pos == available:
            return handed, pos, False
        if p.handed is None:
            return handed, pos, False
        if pos + len(p.raw) > available:
            return handed, pos, True  # a QoS 0/1 PUBLISH that is not all here yet
        handed.append(p.handed)
        pos += len(p.raw)
    return handed, pos, False


@FUZZ
@given(stream=st.lists(packets(), max_size=6), data=st.data())
def test_take_publishes_hands_over_exactly_the_complete_qos01_head(stream, data):
    """Well-formed packets, cut at any byte: take_publishes hands over exactly the complete
    QoS 0/1 PUBLISH packets at the head, in order, with topic, payload, packet id and QoS;
    it consumes exactly their bytes and leaves the rest (QoS 2, other types, a partial
    packet) byte for byte to paho; True only when a QoS 0/1 PUBLISH is incomplete."""
    whole = b"".join(p.raw for p in stream)
    cut = data.draw(st.integers(0, len(whole)), label="cut")
    buf = loaded(whole[:cut])
    out: list = []
    more = buf.take_publishes(out)
    handed, used, need_more = expected_head(stream, cut)
    assert out == handed and more is need_more
    assert unread(buf) == whole[used:cut]  # untouched: paho reads exactly the rest


def paho_reads(buf: BufferedSocket, n: int) -> bytes:
    """paho reading one packet of `n` bytes: fixed header byte by byte, then the body,
    until the socket has nothing more."""
    got = b""
    try:
        while len(got) < n:
            piece = buf.recv(1 if len(got) < 5 else n - len(got))
            if not piece:
                break
            got += piece
    except BlockingIOError:
        pass
    return got


@FUZZ
@given(stream=st.lists(packets(), max_size=8), data=st.data())
def test_loop_over_chunked_stream_delivers_every_packet_once_in_order(stream, data):
    """A model of `FastClient.loop_read`: the stream arrives in random chunks (and may end
    anywhere); the fast path hands over every complete QoS 0/1 PUBLISH and paho reads every
    other packet, each exactly once and in stream order. Whenever the fast path stops for
    more bytes, `pending()` is 0, so paho's select() waits for the socket instead of
    calling loop_read again at once (which spun a CPU while a packet was incomplete)."""
    whole = b"".join(p.raw for p in stream)
    end = data.draw(st.integers(0, len(whole)) | st.just(len(whole)), label="end")
    cuts = sorted(data.draw(st.lists(st.integers(0, end), max_size=12), label="cuts"))
    chunks = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, end])]
    buf = BufferedSocket(ChunkSocket(chunks))
    k = 0  # the next packet of the stream
    while True:
        batch: list = []
        need_more = buf.take_publishes(batch)
        for item in batch:
            assert k < len(stream) and stream[k].handed == item, (k, item[2:])
            k += 1
        if need_more:
            assert buf.pending() == 0, "an incomplete packet must not look processable to paho"
        if need_more or buf.pending() == 0:
            try:
                if not buf.read_more():
                    break
            except BlockingIOError:
                break
            continue
        assert k < len(stream) and stream[k].handed is None, "paho was handed a packet of the fast path"
        got = paho_reads(buf, len(stream[k].raw))
        assert got == stream[k].raw[:len(got)]
        if len(got) < len(stream[k].raw):
            break  # the stream ended inside this packet
        k += 1
    complete = 0
    for p in stream:
        if sum(len(q.raw) for q in stream[:complete + 1]) > end:
            break
        complete += 1
    assert k == complete


def reference_take(data: bytes) -> tuple[list, int, bool]:
    """take_publishes written from the MQTT 5 spec (§2.1, §3.3), independently: the valid
    QoS 0/1 PUBLISH packets at the head, the bytes they take, and 'need more bytes'."""
    out, pos = [], 0
    while pos < len(data):
        first = data[pos]
        qos = first >> 1 & 3
        if first >> 4 != 3 or qos > 1:
            return out, pos, False
        length, multiplier, k = 0, 1, pos + 1
        for _ in range(4):
            if k >= len(data):
                return out, pos, True
            length += (data[k] & 127) * multiplier
            multiplier *= 128
            k += 1
            if data[k - 1] < 128:
                break
        else:
            return out, pos, False  # a fifth length byte: malformed
        if k + length > len(data):
            return out, pos, True
        body = data[k:k + length]
        if len(body) < 2 or 2 + (tlen := int.from_bytes(body[:2], "big")) > len(body):
            return out, pos, False
        topic, rest = body[2:2 + tlen], body[2 + tlen:]
        mid = 0
        if qos:
            if len(rest) < 2:
                return out, pos, False
            mid, rest = int.from_bytes(rest[:2], "big"), rest[2:]
        plen, multiplier, i = 0, 1, 0
        while True:  # the property length, within the packet
            if i >= len(rest) or i == 4:
                return out, pos, False
            plen += (rest[i] & 127) * multiplier
            multiplier *= 128
            i += 1
            if rest[i - 1] < 128:
                break
        if i + plen > len(rest):
            return out, pos, False
        out.append((topic, rest[i + plen:], mid, qos))
        pos = k + length
    return out, pos, False


@st.composite
def garbage(draw) -> bytes:
    """Random bytes, or a well-formed stream with bytes replaced, inserted or removed."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200) | st.lists(st.sampled_from(
            [b"\x30", b"\x32", b"\x34", b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"a/b", b"\x00\x03"]),
            max_size=40).map(b"".join))
    stream = bytearray(b"".join(p.raw for p in draw(st.lists(packets(), min_size=1, max_size=4))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(stream)))
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        if op == "set" and at < len(stream):
            stream[at] = draw(st.integers(0, 255))
        elif op == "insert":
            stream[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del stream[at:at + draw(st.integers(1, 4))]
    return bytes(stream)


@FUZZ
@given(data=garbage())
@example(data=b"\x32\xff\xff\xff\xff\x01")  # five length bytes
@example(data=b"\x32\x03\x00\x09a" + b"\x00" * 16)  # topic length past the packet end
@example(data=b"\x30\x02\x00\x00\x30")  # MQTT 3.1.1-style QoS 0 (no property length): reads the next byte
@example(data=b"\x30\x03\x00\x00\x80")  # property length cut by the packet end
def test_take_publishes_on_garbage_never_raises_and_matches_the_reference(data):
    """Arbitrary bytes: take_publishes never raises; it hands over exactly what a parser
    written from the spec accepts (never a packet whose claimed length runs past the
    buffer or whose parts overrun the packet), consumes only those bytes, and says 'need
    more' only for a QoS 0/1 PUBLISH whose length says it is not all here."""
    buf = loaded(data)
    out: list = []
    more = buf.take_publishes(out)
    handed, used, need_more = reference_take(data)
    event(f"handed {min(len(handed), 2)}+, need_more={need_more}")
    assert (out, more) == (handed, need_more)
    assert unread(buf) == data[used:]


def test_an_incomplete_publish_makes_paho_wait_in_select_not_spin():
    """Regression: with part of a QoS 1 PUBLISH in the buffer, `pending()` said bytes were
    waiting, so paho's loop called select() with timeout 0 and loop_read again at once —
    tens of thousands of empty rounds a second until the rest of the packet arrived."""
    client = FastClient(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzz", protocol=mqtt.MQTTv5, manual_ack=True)
    got: list = []
    client.on_publishes = got.extend
    a, b = socket.socketpair()
    try:
        b.setblocking(False)
        client._sock = BufferedSocket(b)
        client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
        packet = (bytes([0x32]) + varint(2 + 3 + 2 + 1 + 300) + b"\x00\x03a/b\x00\x07\x00" + b"x" * 300)
        a.sendall(packet[:50])
        t0 = time.monotonic()
        client._loop(timeout=0.3)  # reads the 50 bytes: not a whole packet
        client._loop(timeout=0.3)  # nothing new arrives: must wait the whole timeout
        assert time.monotonic() - t0 >= 0.25 and got == []
        assert client._sock.pending() == 0
        a.sendall(packet[50:])
        client._loop(timeout=0.3)
        assert got == [(b"a/b", b"x" * 300, 7, 1)] and client._sock.pending() == 0
    finally:
        a.close()
        b.close()
