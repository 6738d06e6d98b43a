"""The rule format: pydantic models of a rule (`Rule`, its conditions, thresholds,
texts), template validation and filling, and the duration and schedule syntax. Loading
files and the `rules check` CLI are alerts/rules.py, which re-exports these names.
"""

from __future__ import annotations

import re
import string
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_RULES_DIR = Path(__file__).with_name("rules")
RULE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

Severity = Literal["info", "warning", "major", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "major", "critical")
Agg = Literal["last", "mean", "max", "min", "median", "count", "rate", "energy_mean"]
Op = Literal["above", "below", "at_least", "at_most", "outside", "is"]
_OPS: tuple[str, ...] = ("above", "below", "at_least", "at_most", "outside", "is")
TEMPLATE_FIELDS = frozenset({"value", "unit", "limit", "threshold", "action", "site", "device", "field", "rule",
                             "count", "duration", "kind"})
# Fields that are numbers and may carry a format spec; the others are text, placed as is.
NUMBER_TEMPLATE_FIELDS = frozenset({"value", "limit", "threshold", "count"})
# A simple number format: optional align, sign, zero, width <= 2 digits, grouping,
# precision <= 1 digit, type. `{value:>100000000}` (a 100 MB string per alert) is refused.
NUMBER_FORMAT_SPEC = re.compile(r"[<>^=]?[+\- ]?0?(?P<width>[1-9][0-9]?)?[,_]?(?:\.(?P<precision>[0-9]))?[defgEFG%]?")
MAX_TEMPLATE_CHARS = 1000

_DUR = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?!s))?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


def parse_duration(value: Any) -> float:
    """`90`, `"30s"`, `"10m"`, `"1h30m"` → seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 10m, 1h, 30s")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DUR.match(value)
        if m and any(m.groups()):
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            return h * 3600 + mi * 60 + s
    raise ValueError(f"invalid duration {value!r}: use seconds or a string like 10m, 1h, 30s")


Duration = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_DURATION_KEYS = ("for", "keep_firing_for", "escalate_after", "repeat_interval", "window",
                  "default_interval", "resolve_after")


def _convert_durations(data: Any) -> Any:
    if isinstance(data, dict):
        data = dict(data)
        for n in _DURATION_KEYS:
            if data.get(n) is not None:
                data[n] = parse_duration(data[n])
    return data


class Text(_Strict):
    """A zh-CN / English pair of templates."""

    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)

    @field_validator("zh", "en")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        check_template(v)
        return v


def check_template(template: str) -> None:
    """Only `{name}` of TEMPLATE_FIELDS, and `{name:spec}` with a simple number format for
    the number fields; no conversions (`!r`), attributes, indexes or nested fields.
    ValueError says which placeholder is wrong and what is allowed."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"template is {len(template)} characters long; at most {MAX_TEMPLATE_CHARS}")
    short = template if len(template) <= 80 else template[:77] + "..."
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template {short!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"template {short!r}: unknown placeholder {shown[:60]}; "
                             f"use one of {{{'}, {'.join(sorted(TEMPLATE_FIELDS))}}}")
        if conversion:
            raise ValueError(f"template {short!r}: conversion !{conversion} in {shown[:60]} is not allowed")
        if not spec:
            continue
        if name not in NUMBER_TEMPLATE_FIELDS:
            raise ValueError(f"template {short!r}: {shown[:60]}: only the number fields "
                             f"{sorted(NUMBER_TEMPLATE_FIELDS)} take a format")
        if not NUMBER_FORMAT_SPEC.fullmatch(spec):
            raise ValueError(f"template {short!r}: format {spec[:40]!r} in {{{name}:...}} is not a simple number "
                             "format; use e.g. {value:.1f}, {value:g}, {count:d} (width up to 99, precision up to 9)")


class _Plain(str):
    """Formats as its text for any spec: a number field whose value is no number (a bool,
    a missing value) keeps its usual words instead of failing the alert."""

    def __format__(self, spec: str) -> str:
        return str(self)


class _Number:
    """A template number: its usual text (the rule's decimals) without a spec, and
    Python's number formatting with a (validated) spec."""

    __slots__ = ("number", "text")

    def __init__(self, number: float | int, text: str):
        self.number, self.text = number, text

    def __format__(self, spec: str) -> str:
        if not spec:
            return self.text
        if spec[-1:] == "d":
            return format(int(round(self.number)), spec)
        return format(self.number, spec)


def template_values(texts: dict[str, str], numbers: dict[str, Any]) -> dict[str, Any]:
    """The mapping for `template.format_map`: every field as its text, and the number
    fields as numbers when they are ints or floats (bools are not)."""
    out: dict[str, Any] = {k: _Plain(v) if k in NUMBER_TEMPLATE_FIELDS else v for k, v in texts.items()}
    for k, v in numbers.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k in texts:
            out[k] = _Number(v, texts[k])
    return out


class Baseline(_Strict):
    """The threshold is `factor` x an aggregate of the same field over a long window."""

    agg: Literal["mean", "median", "max", "min"] = "median"
    window: Duration
    factor: float = Field(gt=0)
    min_coverage: float = Field(default=0.5, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _dur(cls, data: Any) -> Any:
        return _convert_durations(data)


class Threshold(_Strict):
    """A literal number, or a registry parameter with a default, or a rolling baseline;
    `offset` is added at the end, `floor` bounds a baseline from below and `cap` bounds a
    parameter or baseline from above (DB13/2934 subtracts the county background only up to
    150 µg/m³, so a dust storm's background cannot lift the site's limit without bound)."""

    value: float | None = None
    param: str | None = None
    default: float | None = None
    offset: float = 0.0
    baseline: Baseline | None = None
    floor: float | None = None
    cap: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _number(cls, data: Any) -> Any:
        if isinstance(data, bool):
            raise ValueError("a threshold is a number or {param:, default:}, not a boolean")
        if isinstance(data, (int, float)):
            return {"value": data}
        return data

    @model_validator(mode="after")
    def _complete(self) -> "Threshold":
        if self.value is None and self.default is None and self.baseline is None:
            raise ValueError("a threshold needs a number, a default, or a baseline")
        if self.value is not None and (self.param or self.default is not None or self.baseline):
            raise ValueError("give either a literal threshold or param/default/baseline, not both")
        if self.cap is not None and self.value is not None:
            raise ValueError("cap bounds a parameter or baseline; a literal threshold needs none")
        if self.cap is not None and self.floor is not None and self.cap < self.floor:
            raise ValueError("cap is below floor")
        return self


class Cond(_Strict):
    """One comparison: `{field: pm10, agg: mean, window: 10m, above: 150}`.

    Write exactly one of `above`, `below`, `at_least`, `at_most`, `outside: [lo, hi]`,
    `is: true|false`. Event conditions name the attribute with `attr:`.
    """

    field: str
    agg: Agg = "last"
    window: Duration | None = None
    min_coverage: float = Field(default=0.75, gt=0, le=1)
    op: Op
    threshold: Threshold | None = None
    low: Threshold | None = None
    high: Threshold | None = None
    want: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("a condition is a mapping like {field: pm10, above: 150}")
        data = dict(data)
        if "attr" in data:
            if "field" in data:
                raise ValueError("give field or attr, not both")
            data["field"] = data.pop("attr")
        given = [op for op in _OPS if op in data]
        if "op" not in data:
            if len(given) != 1:
                raise ValueError(f"give exactly one of {', '.join(_OPS)} (got {given or 'none'})")
            op = given[0]
            arg = data.pop(op)
            data["op"] = op
            if op == "is":
                if not isinstance(arg, bool):
                    raise ValueError("is: needs true or false")
                data["want"] = arg
            elif op == "outside":
                if not isinstance(arg, (list, tuple)) or len(arg) != 2:
                    raise ValueError("outside: needs [low, high]")
                data["low"], data["high"] = arg
            else:
                data["threshold"] = arg
        if data.get("window") is not None:
            data["window"] = parse_duration(data["window"])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "Cond":
        if self.agg != "last" and not self.window:
            raise ValueError(f"agg {self.agg} needs a window (e.g. window: 10m)")
        if self.op == "is" and self.agg != "last":
            raise ValueError("is: compares the latest value; use agg: last")
        if self.op == "outside":
            if self.low is None or self.high is None:
                raise ValueError("outside: needs [low, high]")
            if self.low.value is not None and self.high.value is not None and self.low.value >= self.high.value:
                raise ValueError("outside: low must be below high")
        return self

    @property
    def max_window(self) -> float:
        w = self.window or 0.0
        for t in (self.threshold, self.low, self.high):
            if t is not None and t.baseline is not None:
                w = max(w, t.baseline.window)
        return w


Schedule = Literal["day", "night"] | str


def parse_schedule(value: str) -> tuple[dtime, dtime]:
    """`day` = 06:00-22:00, `night` = 22:00-06:00 (GB 12523), or `HH:MM-HH:MM` local time."""
    if value == "day":
        return dtime(6), dtime(22)
    if value == "night":
        return dtime(22), dtime(6)
    m = re.fullmatch(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})", value)
    if not m:
        raise ValueError(f"schedule {value!r}: use day, night or HH:MM-HH:MM (local time)")
    a, b, c, d = map(int, m.groups())
    try:
        start, end = dtime(a, b), dtime(c, d)
    except ValueError as exc:
        raise ValueError(f"schedule {value!r}: {exc}") from exc
    if start == end:
        raise ValueError(f"schedule {value!r}: start and end are the same")
    return start, end


class PerDay(_Strict):
    """The n-th firing episode of the rule on one device in a local day is escalated."""

    nth: int = Field(ge=2)
    severity: Severity
    message: Text | None = None
    action: Text | None = None


SIX100_ITEMS: tuple[str, ...] = ("hoarding", "cover", "wash", "hardened", "wet_operation", "muck_covered",
                                  "monitoring")


class Citation(_Strict):
    """Where a rule's value comes from: standard, clause and edition, and whether the value
    was confirmed against the published text (`verified: false` says it was not)."""

    standard: str = Field(min_length=2)          # e.g. "GB 3095-2012"
    clause: str = Field(min_length=1)            # e.g. "表1 序号5" or "unconfirmed"
    edition: str = Field(min_length=2)           # e.g. "2012 (现行)"
    verified: bool
    note: str = ""


class Six100Spec(_Strict):
    """The six-100 item this rule judges in the daily compliance report, so that the report
    and the alert read one set value and one tolerance (`for`)."""

    item: Literal["hoarding", "cover", "wash", "hardened", "wet_operation", "muck_covered", "monitoring"]
    pass_percent: float | None = Field(default=None, ge=0, le=100)  # monitoring: share of the day online


class RuleBase(_Strict):
    id: str
    type: str
    kind: str
    severity: Severity
    source: str = Field(min_length=3)
    message: Text
    action: Text
    description: str = ""
    enabled: bool = True
    unit: str | None = None
    decimals: int = Field(default=1, ge=0, le=6)
    escalate_after: Duration | None = None
    escalate_to: Severity | None = None
    repeat_interval: Duration | None = None
    citation: Citation | None = None
    six100: Six100Spec | None = None

    @model_validator(mode="before")
    @classmethod
    def _dur(cls, data: Any) -> Any:
        return _convert_durations(data)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not RULE_ID.fullmatch(v):
            raise ValueError("id must match [A-Za-z0-9_-]{1,64}")
        return v

    @property
    def primary_field(self) -> str | None:
        return None

    def fields(self) -> tuple[str, ...]:
        return ()

    def max_window(self) -> float:
        return 0.0


class ThresholdRule(RuleBase):
    type: Literal["threshold"] = "threshold"
    when: tuple[Cond, ...] = Field(min_length=1)
    clear: tuple[Cond, ...] | None = None
    hysteresis: float = Field(default=0.0, ge=0)
    for_: Duration = Field(default=0.0, alias="for")
    consecutive: int = Field(default=1, ge=1)
    keep_firing_for: Duration = 0.0
    schedule: str | None = None
    per_day: PerDay | None = None

    @field_validator("when", "clear", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        if v is not None:
            parse_schedule(v)
        return v

    @property
    def primary_field(self) -> str | None:
        return self.when[0].field

    def fields(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for c in (*self.when, *(self.clear or ())):
            seen[c.field] = None
        return tuple(seen)

    def max_window(self) -> float:
        return max(c.max_window for c in (*self.when, *(self.clear or ())))


class StuckRule(RuleBase):
    type: Literal["stuck"]
    field: str
    window: Duration = Field(gt=0)
    min_samples: int = Field(default=5, ge=2)
    tolerance: float = Field(default=0.0, ge=0)
    min_coverage: float = Field(default=0.9, gt=0, le=1)

    @property
    def primary_field(self) -> str | None:
        return self.field

    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def max_window(self) -> float:
        return self.window


class DeadmanRule(RuleBase):
    type: Literal["deadman"]
    factor: float = Field(default=3.0, gt=0)
    default_interval: Duration = Field(default=60.0, gt=0)


class EventRule(RuleBase):
    type: Literal["event"]
    event: str
    match: Literal["any", "all"] = "any"
    when: tuple[Cond, ...] = Field(min_length=1)
    resolve_after: Duration = Field(default=1800.0, gt=0)

    @field_validator("when", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @property
    def primary_field(self) -> str | None:
        return self.when[0].field


class DailyRatioRule(RuleBase):
    type: Literal["daily_ratio"]
    event: str
    numerator: tuple[Cond, ...] = Field(min_length=1)
    below: Threshold
    min_events: int = Field(default=1, ge=1)

    @field_validator("numerator", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @property
    def primary_field(self) -> str | None:
        return f"{self.event}_ratio"


Rule = ThresholdRule | StuckRule | DeadmanRule | EventRule | DailyRatioRule
RULE_TYPES: dict[str, type[Rule]] = {
    "threshold": ThresholdRule, "stuck": StuckRule, "deadman": DeadmanRule,
    "event": EventRule, "daily_ratio": DailyRatioRule,
}
