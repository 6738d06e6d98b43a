"""ingest.decode: every kind of bad input gets a specific reason; good input becomes
readings and line protocol. Table-driven; one comment per case."""

from __future__ import annotations

import json

import pytest

from citywatch.model import RawMessage
from citywatch.registry import Device, Registry
from ingest.decode import Decoder
from ingest.types import Accepted, Rejected

NOW = 1_795_737_600_000  # 2026-11-27T00:00:00Z
T = "telemetry/dust/S0001/D00001"


def decode(topic: str, payload: bytes | dict | list, **kw) -> Accepted | Rejected:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Decoder(clock=lambda: NOW, **kw).decode(RawMessage(topic, body, NOW))


@pytest.mark.parametrize("topic,payload,code", [
    (T, b"not json", "invalid_json"),                                         # not JSON at all
    (T, b"\xff\xfe\x00", "invalid_json"),                                     # not UTF-8
    (T, {"ts": NOW, "values": {"pm10": "86"}}, "invalid_field"),              # number as a string
    (T, {"ts": NOW, "values": {"pm10": True}}, "invalid_field"),              # bool for a number
    (T, {"ts": NOW, "values": {"spray_on": 1}}, "invalid_field"),             # number for a bool
    (T, b'{"ts": 1795737600000, "values": {"pm10": NaN}}', "invalid_field"),  # NaN
    (T, b'{"ts": 1795737600000, "values": {"pm10": -Infinity}}', "invalid_field"),  # -Infinity
    (T, {"values": {"pm10": 1}}, "missing_field"),                           # no ts
    (T, {"ts": NOW}, "missing_field"),                                        # no values
    (T, {"ts": NOW, "values": {}}, "empty_values"),                           # nothing measured
    (T, {"ts": NOW, "values": {"pm10": -1}}, "invalid_field"),                # below the physical range
    (T, {"ts": NOW, "values": {"humidity": 101}}, "invalid_field"),           # above the physical range
    (T, {"ts": NOW, "values": {"pm10": None}}, "invalid_field"),              # null is not a reading
    (T, {"ts": NOW + 3_600_000, "values": {"pm10": 1}}, "future_timestamp"),  # an hour ahead
    (T, {"ts": 1_795_737_600, "values": {"pm10": 1}}, "bad_timestamp"),       # epoch seconds, not ms
    (T, {"ts": "2026-11-27 08:00", "values": {"pm10": 1}}, "bad_timestamp"),  # no offset
    (T, {"ts": "yesterday", "values": {"pm10": 1}}, "bad_timestamp"),         # not RFC 3339
    (T, {"ts": 1.5e12, "values": {"pm10": 1}}, "invalid_field"),              # ts as float
    (T, {"ts": NOW, "values": {"pm10": 1, "ozone": 3}}, "unknown_field"),     # field not of this kind
    (T, {"ts": NOW, "values": {"pm10": 1}, "extra": 1}, "unknown_field"),     # unknown top-level key
    (T, {"ts": NOW, "seq": -1, "values": {"pm10": 1}}, "invalid_field"),      # negative seq
    (T, [], "empty_values"),                                                  # empty batch
    (T, [{"ts": NOW, "values": {"pm10": 1}}, {"ts": NOW}], "missing_field"),  # one bad item sinks the batch
    ("telemetry/gas/S0001/D00001", {"ts": NOW, "values": {"x": 1}}, "unknown_kind"),  # kind not in kinds.yaml
    ("telemetry/dust/S0001", {"ts": NOW, "values": {"pm10": 1}}, "bad_topic"),        # too few levels
    ("telemetry/dust/S0001/D1/x", {"ts": NOW, "values": {"pm10": 1}}, "bad_topic"),   # too many levels
    ("telemetry/dust/S 1/D1", {"ts": NOW, "values": {"pm10": 1}}, "bad_topic"),       # space in site
    ("telemetry/dust/S1/D,1", {"ts": NOW, "values": {"pm10": 1}}, "bad_topic"),       # comma in device
    ("telemetry/dust/S1/D=1", {"ts": NOW, "values": {"pm10": 1}}, "bad_topic"),       # '=' in device
    ("telemetry/dust/S1/D\n1", {"ts": NOW, "values": {"pm10": 1}}, "bad_topic"),      # newline in device
    ("telemetry/dust/S1/" + "D" * 65, {"ts": NOW, "values": {"pm10": 1}}, "bad_topic"),  # id too long
    ("events/dust/S0001/D00001", {"ts": NOW, "type": "vehicle_exit", "washed": True}, "missing_field"),  # covered?
    ("events/dust/S0001/D00001", {"ts": NOW, "type": "teleport"}, "invalid_field"),    # unknown event type
    ("events/water/S0001/D00001", {"ts": NOW, "type": "x"}, "unknown_event"),          # kind without events
])
def test_rejections_name_the_problem(topic, payload, code):
    out = decode(topic, payload)
    assert isinstance(out, Rejected), out
    assert any(r.startswith(code + ":") for r in out.reasons), out.reasons


def test_every_reason_is_reported_not_just_the_first():
    out = decode(T, {"values": {"pm10": -5, "colour": 1}})
    assert isinstance(out, Rejected)
    codes = {r.split(":")[0] for r in out.reasons}
    assert codes == {"missing_field", "invalid_field", "unknown_field"}


def test_oversized_payload_is_rejected_before_parsing():
    out = decode(T, b"{" + b" " * 300_000 + b"}", max_payload_bytes=256 * 1024)
    assert isinstance(out, Rejected) and out.reasons[0].startswith("payload_too_large:")


def test_valid_reading_becomes_float_fields_and_ms_line():
    out = decode(T, {"ts": "2026-11-27T08:00:00+08:00", "seq": 7, "values": {"pm10": 86, "spray_on": True}})
    assert isinstance(out, Accepted)
    (r,) = out.readings
    assert (r.kind, r.site, r.device, r.ts_ms, r.seq) == ("dust", "S0001", "D00001", NOW, 7)
    assert r.values == {"pm10": 86.0, "spray_on": True} and isinstance(r.values["pm10"], float)
    assert out.lines == ("dust,device=D00001,site=S0001 pm10=86.0,spray_on=true 1795737600000",)


def test_batch_array_gives_one_reading_per_item():
    out = decode(T, [{"ts": NOW - 2000, "values": {"pm10": 1}}, {"ts": NOW - 1000, "values": {"pm10": 2}}])
    assert isinstance(out, Accepted) and [r.ts_ms for r in out.readings] == [NOW - 2000, NOW - 1000]


def test_event_line_escapes_string_attributes():
    out = decode("events/dust/S0001/D00001", {"ts": NOW, "type": "vehicle_exit", "plate": 'E1"2\\3',
                                              "washed": False, "wash_seconds": 30, "covered": True})
    assert isinstance(out, Accepted)
    (e,) = out.events
    assert e.attributes["washed"] is False and e.attributes["wash_seconds"] == 30.0
    assert out.lines[0].startswith("events,device=D00001,kind=dust,site=S0001,type=vehicle_exit ")
    assert 'plate="E1\\"2\\\\3"' in out.lines[0]


def test_registry_rejects_unknown_devices_and_mismatched_topics():
    reg = Registry({"D00001": Device(id="D00001", site="S0001", kind="dust")}, {})
    ok = decode(T, {"ts": NOW, "values": {"pm10": 1}}, registry=reg)
    unknown = decode("telemetry/dust/S0001/D00002", {"ts": NOW, "values": {"pm10": 1}}, registry=reg)
    moved = decode("telemetry/dust/S0009/D00001", {"ts": NOW, "values": {"pm10": 1}}, registry=reg)
    assert isinstance(ok, Accepted)
    assert isinstance(unknown, Rejected) and unknown.reasons[0].startswith("unknown_device:")
    assert isinstance(moved, Rejected) and moved.reasons[0].startswith("registry_mismatch:")


@pytest.mark.parametrize("payload,reasons", [
    ({"ts": NOW, "values": {"pm10": -1}},
     ("invalid_field: values.pm10: Input should be greater than or equal to 0 (allowed 0..20000 µg/m³); got '-1'",)),
    ({"ts": NOW, "values": {"pm10": 1, "ozone": 3}}, ("unknown_field: values.ozone is not a field of this kind",)),
    ({"values": {"pm10": 1}}, ("missing_field: ts is required",)),
    (b'{"ts": 1795737600000, "values": {"pm10": NaN}}',
     ("invalid_field: values.pm10: Input should be a finite number (allowed 0..20000 µg/m³); got 'nan'",)),
    ({"ts": NOW, "values": []}, ("invalid_field: values: Input should be an object",)),
    (b"[1]", ("invalid_field: [0]: Input should be an object; got '1'",)),
    (b"{", ("invalid_json: Invalid JSON: EOF while parsing an object at line 1 column 1",)),
    ({"ts": 1.5, "values": {"pm10": 1}},
     ("invalid_field: ts.int: Input should be a valid integer; got '1.5'",
      "invalid_field: ts.str: Input should be a valid string; got '1.5'")),
    ([{"ts": NOW, "values": {}}, {"ts": "2026-11-27 08:00", "values": {"pm10": 1}},
      {"ts": NOW + 3_600_000, "values": {"x": 1}}],
     ("unknown_field: [2].values.x is not a field of this kind",)),
    ([{"ts": NOW, "values": {}}, {"ts": "2026-11-27 08:00", "values": {"pm10": 1}},
      {"ts": NOW + 3_600_000, "values": {"pm10": 1}}],
     ("empty_values: [0].values has no fields", "bad_timestamp: [1].ts '2026-11-27 08:00' has no UTC offset",
      "future_timestamp: [2].ts is 3600 s ahead of the server clock (limit 300 s)")),
    ({"ts": "soon", "values": {}}, ("bad_timestamp: ts 'soon' is not RFC 3339", "empty_values: values has no fields")),
])
def test_reasons_are_exactly_these(payload, reasons):
    out = decode(T, payload)
    assert isinstance(out, Rejected) and out.reasons == reasons


def test_registry_reasons_come_first_and_validation_still_runs():
    reg = Registry({"D00001": Device(id="D00001", site="S0001", kind="dust")}, {})
    out = decode("telemetry/dust/S0001/D00009", {"ts": NOW, "values": {"pm10": -1}}, registry=reg)
    assert isinstance(out, Rejected) and [r.split(":")[0] for r in out.reasons] == ["unknown_device", "invalid_field"]


def test_a_remembered_timestamp_text_gives_the_same_time_and_a_bad_one_is_rejected_every_time():
    decoder = Decoder(clock=lambda: NOW)
    for _ in range(2):
        ok = decoder.decode(RawMessage(T, b'{"ts": "2026-11-27T08:00:00+08:00", "values": {"pm10": 1}}', NOW))
        bad = decoder.decode(RawMessage(T, b'{"ts": "2026-11-27T08:00:00", "values": {"pm10": 1}}', NOW))
        assert isinstance(ok, Accepted) and ok.readings[0].ts_ms == NOW
        assert isinstance(bad, Rejected) and bad.reasons[0].startswith("bad_timestamp:")


def test_readings_are_what_the_kind_models_validate():
    """The decoder validates to plain dicts; a reading must hold exactly what the kind's model
    accepts (fields sent, in the kind's order, numbers as float), for simulated traffic."""
    from pydantic import TypeAdapter

    from citywatch.lineproto import reading_line
    from citywatch.schema import validators
    from simulators import generate

    messages = list(generate("faults", sites=6, seed=3, duration_s=1800))
    now = max(m.sim_ts_ms for m in messages) + 1000
    decoder = Decoder(clock=lambda: now)
    models = {name: TypeAdapter(v.telemetry) for name, v in validators().items()}
    accepted = 0
    for m in messages:
        if not m.topic.startswith("telemetry/"):
            continue
        out = decoder.decode(RawMessage(m.topic, m.payload, m.sim_ts_ms))
        try:
            model = models[m.kind].validate_json(m.payload)
        except ValueError:
            assert isinstance(out, Rejected), m.payload
            continue
        if isinstance(out, Rejected):
            assert not out.reasons[0].startswith(("invalid_", "unknown_field", "missing_field")), out.reasons
            continue
        accepted += 1
        (r,) = out.readings
        expected = {k: v for k, v in model.values.__dict__.items() if v is not None}
        assert list(r.values.items()) == list(expected.items()) and r.seq == model.seq
        assert [type(v) for v in r.values.values()] == [type(v) for v in expected.values()]
        assert out.lines == (reading_line(r),)
    assert accepted > 100
