"""Device kinds as data: `kinds.yaml` → typed field specs and payload validators.

The validators are pydantic v2 models generated from the YAML, so validation runs in
pydantic-core (Rust) and each rejection names the field and the rule it broke.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, create_model

from citywatch.errors import ConfigError
from citywatch.topics import is_identifier

KINDS_FILE = Path(__file__).with_name("kinds.yaml")
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: Literal["float", "bool", "str"]
    unit: str = ""
    min: float | None = None
    max: float | None = None
    required: bool = False
    max_length: int | None = None

    def annotation(self) -> Any:
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


class TelemetryBase(BaseModel):
    model_config = _STRICT
    ts: StrictInt | StrictStr
    seq: Annotated[StrictInt, Field(ge=0)] | None = None


class EventBase(BaseModel):
    model_config = _STRICT
    ts: StrictInt | StrictStr


@dataclass(frozen=True, slots=True)
class KindValidators:
    """pydantic models for one kind: a single telemetry object, and one per event type."""

    spec: KindSpec
    telemetry: type[TelemetryBase]
    event: Any  # TypeAdapter-able annotation: a discriminated union of event models


def _field_specs(raw: dict[str, Any], where: str) -> dict[str, FieldSpec]:
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
        kinds[name] = KindSpec(name, body.get("description", ""), fields, events)
    return kinds


def _build(spec: KindSpec) -> KindValidators:
    # Optional but never null: the default is not validated, an explicit null is rejected.
    value_fields = {n: (f.annotation(), None) for n, f in spec.fields.items()}
    values_model = create_model(f"{spec.name}_values", __config__=_STRICT, **value_fields)  # type: ignore[call-overload]
    telemetry = create_model(f"{spec.name}_telemetry", __base__=TelemetryBase, values=(values_model, ...))
    event_models = []
    for etype, attrs in spec.events.items():
        fields: dict[str, Any] = {"type": (Literal[etype], ...)}  # type: ignore[valid-type]
        for n, f in attrs.items():
            fields[n] = (f.annotation(), ...) if f.required else (f.annotation(), None)
        event_models.append(create_model(f"{spec.name}_{etype}", __base__=EventBase, **fields))
    if not event_models:
        event: Any = None
    elif len(event_models) == 1:
        event = event_models[0]
    else:
        event = Annotated[Union[tuple(event_models)], Field(discriminator="type")]  # type: ignore[arg-type]
    return KindValidators(spec, telemetry, event)


@cache
def validators(path: Path = KINDS_FILE) -> dict[str, KindValidators]:
    return {name: _build(spec) for name, spec in load_kinds(path).items()}


def kinds(path: Path = KINDS_FILE) -> dict[str, KindSpec]:
    return {name: v.spec for name, v in validators(path).items()}
