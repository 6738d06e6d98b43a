"""Device kinds as data: `kinds.yaml` → typed field specs and payload validators.

The validators are pydantic v2 types generated from the YAML, so validation runs in
pydantic-core (Rust) and each rejection names the field and the rule it broke. Each kind
has them twice, with the same field rules: as models (for code that wants attributes) and
as TypedDicts (for ingest's hot path — validating to plain dicts holding only the fields
that were sent costs less than half as much as building model instances).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Required, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, create_model
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from citywatch.errors import ConfigError
from citywatch.topics import is_identifier

KINDS_FILE = Path(__file__).with_name("kinds.yaml")
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)
_STRICT_DICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
_Seq = Annotated[StrictInt, Field(ge=0)]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: Literal["float", "bool", "str"]
    unit: str = ""
    min: float | None = None
    max: float | None = None
    required: bool = False
    max_length: int | None = None

    def annotation(self) -> Any:  # a type expression for pydantic, built at run time: no static type fits
        if self.type == "bool":
            return StrictBool
        if self.type == "str":
            return Annotated[StrictStr, Field(min_length=0, max_length=self.max_length or 256)]
        # Integers are accepted for float fields (JSON has one number type); they are
        # stored as float so that InfluxDB never sees a type change.
        return Annotated[float, Field(ge=self.min, le=self.max, allow_inf_nan=False)]


@dataclass(frozen=True, slots=True)
class KindSpec:
    name: str
    description: str
    fields: dict[str, FieldSpec]
    events: dict[str, dict[str, FieldSpec]]
    # HJ 212 item codes of this kind's monitors beyond the standard's (vendor and
    # Tianjin-style names), keyed lower-case: code → canonical field.
    hj212_codes: dict[str, str] = field(default_factory=dict)


class TelemetryBase(BaseModel):
    model_config = _STRICT
    ts: StrictInt | StrictStr
    seq: _Seq | None = None


class EventBase(BaseModel):
    model_config = _STRICT
    ts: StrictInt | StrictStr


@dataclass(frozen=True, slots=True)
class KindValidators:
    """pydantic types for one kind: a single telemetry object, and one per event type.

    `telemetry` and `event` are models. `telemetry_dict` and `event_dict` apply the same
    rules with the same error messages, but validate to plain dicts in which an optional
    field that was not sent is absent (not None), in the kind's field order."""

    spec: KindSpec
    telemetry: type[TelemetryBase]
    event: Any  # TypeAdapter-able annotation: a discriminated union of event models
    telemetry_dict: Any  # TypedDict: {"ts", "seq"?, "values": {field: float | bool}}
    event_dict: Any  # TypeAdapter-able: a discriminated union of event TypedDicts, or None


def _field_specs(raw: dict[str, Any], where: str) -> dict[str, FieldSpec]:  # raw: parsed YAML, checked here
    out: dict[str, FieldSpec] = {}
    for name, body in (raw or {}).items():
        if not is_identifier(name):
            raise ConfigError(f"{where}: field name {name!r} is not an identifier")
        try:
            out[name] = FieldSpec(name=name, **(body or {}))
        except TypeError as exc:
            raise ConfigError(f"{where}.{name}: {exc}") from exc
        spec = out[name]
        if spec.type not in ("float", "bool", "str"):
            raise ConfigError(f"{where}.{name}: type must be float, bool or str")
    return out


def load_kinds(path: Path = KINDS_FILE) -> dict[str, KindSpec]:
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kinds file {path}: {exc}") from exc
    kinds: dict[str, KindSpec] = {}
    for name, body in (doc.get("kinds") or {}).items():
        if not is_identifier(name):
            raise ConfigError(f"{path}: kind {name!r} is not an identifier")
        fields = _field_specs(body.get("fields"), f"kinds.{name}.fields")
        for f in fields.values():
            if f.type == "str":
                raise ConfigError(f"kinds.{name}.fields.{f.name}: telemetry fields are float or bool")
        events = {
            etype: _field_specs(attrs, f"kinds.{name}.events.{etype}")
            for etype, attrs in (body.get("events") or {}).items()
        }
        codes = {}
        for code, target in (body.get("hj212_codes") or {}).items():
            if target not in fields or fields[target].type != "float":
                raise ConfigError(f"kinds.{name}.hj212_codes.{code}: {target!r} is not a numeric field of {name}")
            codes[str(code).lower()] = target
        kinds[name] = KindSpec(name, body.get("description", ""), fields, events, codes)
    return kinds


def _typed_dict(name: str, fields: dict[str, Any]) -> Any:
    """A TypedDict with our strict config; fields are optional unless marked `Required`."""
    # [misc]: mypy accepts only a literal dict of fields here; these come from kinds.yaml.
    cls = TypedDict(name, fields, total=False)  # type: ignore[misc]
    cls.__pydantic_config__ = _STRICT_DICT  # type: ignore[attr-defined]  # pydantic reads it off the class
    return cls


def _event_union(members: list[Any]) -> Any:
    if not members:
        return None
    if len(members) == 1:
        return members[0]
    return Annotated[Union[tuple(members)], Field(discriminator="type")]


def _build(spec: KindSpec) -> KindValidators:
    # Optional but never null: the default is not validated, an explicit null is rejected.
    value_fields = {n: (f.annotation(), None) for n, f in spec.fields.items()}
    # [call-overload]: create_model's overloads cannot see field definitions passed as **dict.
    values_model = create_model(
        f"{spec.name}_values", __config__=_STRICT, **value_fields)  # type: ignore[call-overload]
    telemetry = create_model(f"{spec.name}_telemetry", __base__=TelemetryBase, values=(values_model, ...))
    # The same rules as TypedDicts: a field not sent is absent, an explicit null is rejected.
    values_dict = _typed_dict(f"{spec.name}_values", {n: f.annotation() for n, f in spec.fields.items()})
    telemetry_dict = _typed_dict(f"{spec.name}_telemetry", {
        "ts": Required[StrictInt | StrictStr], "seq": NotRequired[_Seq | None], "values": Required[values_dict]})
    event_models, event_dicts = [], []
    for etype, attrs in spec.events.items():
        fields: dict[str, Any] = {"type": (Literal[etype], ...)}
        dict_fields: dict[str, Any] = {"ts": Required[StrictInt | StrictStr], "type": Required[Literal[etype]]}
        for n, f in attrs.items():
            fields[n] = (f.annotation(), ...) if f.required else (f.annotation(), None)
            dict_fields[n] = Required[f.annotation()] if f.required else f.annotation()
        event_models.append(create_model(f"{spec.name}_{etype}", __base__=EventBase, **fields))
        event_dicts.append(_typed_dict(f"{spec.name}_{etype}", dict_fields))
    return KindValidators(spec, telemetry, _event_union(event_models), telemetry_dict, _event_union(event_dicts))


@cache
def validators(path: Path = KINDS_FILE) -> dict[str, KindValidators]:
    return {name: _build(spec) for name, spec in load_kinds(path).items()}


def kinds(path: Path = KINDS_FILE) -> dict[str, KindSpec]:
    return {name: v.spec for name, v in validators(path).items()}
