"""citywatch.schema: the TypedDict validators (ingest's hot path) apply the same rules as
the models, and leave out what was not sent."""

from __future__ import annotations

import json

import pytest
from pydantic import TypeAdapter, ValidationError

from citywatch.schema import validators

NOW = 1_795_737_600_000


def errors(annotation, payload: bytes) -> list[tuple] | None:
    try:
        TypeAdapter(annotation).validate_json(payload)
    except ValidationError as exc:
        return [(e["type"].replace("dict_type", "model_type"), e["loc"], e["msg"]) for e in exc.errors()]
    return None


@pytest.mark.parametrize("doc", [
    {"ts": NOW, "values": {"pm10": 1}}, {"ts": "2026-11-27T08:00:00+08:00", "seq": 3, "values": {"spray_on": True}},
    {"ts": NOW, "seq": None, "values": {"pm10": 1}}, {"ts": NOW, "values": {}}, {"ts": NOW, "values": {"pm10": None}},
    {"ts": NOW, "values": {"pm10": -1, "colour": 1, "spray_on": 1}}, {"values": {"pm10": "1"}}, {"ts": 1.5},
    {"ts": True, "seq": -1, "values": []}, {"ts": NOW, "values": {"pm10": 1}, "extra": 1}, [], 1, None, "x",
])
def test_typed_dict_errors_are_the_models_errors(doc):
    kind = validators()["dust"]
    payload = json.dumps(doc).encode()
    # Both say "Input should be an object" for a non-object; only the error type's name differs.
    assert errors(kind.telemetry_dict, payload) == errors(kind.telemetry, payload)


def test_typed_dict_keeps_only_what_was_sent_in_the_kinds_field_order():
    kind = validators()["dust"]
    doc = TypeAdapter(kind.telemetry_dict).validate_json(
        b'{"values": {"spray_on": false, "humidity": 40, "pm10": 86}, "ts": 1}')
    assert doc == {"ts": 1, "values": {"pm10": 86.0, "humidity": 40.0, "spray_on": False}}
    assert list(doc["values"]) == ["pm10", "humidity", "spray_on"] and "seq" not in doc


@pytest.mark.parametrize("doc", [
    {"ts": NOW, "type": "vehicle_exit", "washed": True, "covered": False},
    {"ts": NOW, "type": "vehicle_exit", "washed": True, "covered": False, "plate": "x" * 17, "wash_seconds": -1},
    {"ts": NOW, "type": "vehicle_exit", "washed": None}, {"ts": NOW, "type": "teleport"}, {"ts": NOW},
    {"ts": NOW, "type": "vehicle_exit", "washed": True, "covered": True, "bogus": 1}, [], None,
])
def test_event_typed_dicts_give_the_models_errors(doc):
    kind = validators()["dust"]
    payload = json.dumps(doc).encode()
    assert errors(kind.event_dict, payload) == errors(kind.event, payload)


def test_a_discriminated_union_of_event_typed_dicts_gives_the_models_errors(tmp_path):
    kinds_file = tmp_path / "kinds.yaml"
    kinds_file.write_text("""
kinds:
  pump:
    fields: {flow: {type: float, min: 0, max: 10}}
    events:
      trip: {pump: {type: str, max_length: 4, required: true}}
      start: {after_s: {type: float, min: 0, max: 60}}
""")
    kind = validators(kinds_file)["pump"]
    for doc in [{"ts": NOW, "type": "trip", "pump": "P1"}, {"ts": NOW, "type": "trip"},
                {"ts": NOW, "type": "start", "after_s": 61, "x": 1}, {"ts": NOW, "type": "stop"}, {"ts": NOW},
                {"ts": NOW, "type": "trip", "pump": "P12345"}, [1], "x"]:
        payload = json.dumps(doc).encode()
        assert errors(kind.event_dict, payload) == errors(kind.event, payload), doc
    assert TypeAdapter(kind.event_dict).validate_json(b'{"type": "start", "ts": 1}') == {"ts": 1, "type": "start"}


def test_hj212_codes_are_data_checked_at_load(tmp_path):
    """kinds.yaml `hj212_codes`: vendor/Tianjin item names per kind, keyed lower-case, and
    each must name a numeric field of its kind."""
    from citywatch.errors import ConfigError
    from citywatch.schema import kinds, load_kinds

    dust = kinds()["dust"]
    assert dust.hj212_codes["pm25"] == "pm25" and dust.hj212_codes["voice"] == "noise"
    bad = tmp_path / "kinds.yaml"
    bad.write_text("kinds:\n  k:\n    fields:\n      a: {type: float}\n      b: {type: bool}\n"
                   "    hj212_codes:\n      X1: b\n")
    with pytest.raises(ConfigError, match="hj212_codes.X1"):
        load_kinds(bad)
