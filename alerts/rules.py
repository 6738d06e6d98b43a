"""Alert rules as data: `alerts/rules/*.yaml` → validated pydantic models.

A rule file holds `rules: [ ... ]`. Every rule has an `id`, a device `kind`, a `severity`,
a `source:` citing its standard or notice, and zh-CN + English `message` / `action`
templates. The rule `type` selects how it is evaluated:

- `threshold` (default): `when:` one condition or a list (all must hold) on a field's
  instantaneous value (`agg: last`) or a window aggregate; `for`, `consecutive`,
  `keep_firing_for`, `hysteresis` / `clear`, `schedule`, `per_day` escalation.
- `stuck`: a field that stays flat (max - min <= tolerance) for a whole window.
- `deadman`: no data from a device for `factor` x its expected interval (timer driven).
- `event`: a device event (e.g. `vehicle_exit`) whose attributes break a condition.
- `daily_ratio`: the share of today's events meeting `numerator` falls below a limit.

Loading validates the whole set first (file, rule id, what is wrong) and only then is it
used; `CW_RULES_DIR` adds rules and replaces shipped ones with the same id.
"""

from __future__ import annotations

import argparse
import re
import string
from collections.abc import Iterable, Sequence
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from citywatch.errors import ConfigError
from citywatch.schema import kinds as load_kinds

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
    `offset` is added at the end and `floor` bounds a baseline from below."""

    value: float | None = None
    param: str | None = None
    default: float | None = None
    offset: float = 0.0
    baseline: Baseline | None = None
    floor: float | None = None

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
_MODELS: dict[str, type[BaseModel]] = {
    "threshold": ThresholdRule, "stuck": StuckRule, "deadman": DeadmanRule,
    "event": EventRule, "daily_ratio": DailyRatioRule,
}


def _fmt_error(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "rule"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_rule(doc: Any, where: str = "rule") -> Rule:
    """Validate one rule mapping (from YAML or the API); raises ConfigError with details."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a rule is a mapping, got {type(doc).__name__}")
    rid = doc.get("id", "?")
    rtype = doc.get("type", "threshold")
    model = _MODELS.get(rtype) if isinstance(rtype, str) else None
    if model is None:
        raise ConfigError(f"{where}: rule {rid}: type: must be one of {sorted(_MODELS)}, got {rtype!r}")
    try:
        rule = model.model_validate({**doc, "type": rtype})
    except ValidationError as exc:
        raise ConfigError(f"{where}: rule {rid}: {_fmt_error(exc)}") from None
    _check_schema(rule, where)
    return rule  # type: ignore[return-value]


def _check_schema(rule: Rule, where: str) -> None:
    """Kinds, fields, event types and attributes must exist in citywatch/kinds.yaml."""
    specs = load_kinds()
    bad = f"{where}: rule {rule.id}"
    spec = specs.get(rule.kind)
    if spec is None:
        raise ConfigError(f"{bad}: kind: unknown kind {rule.kind!r} (known: {sorted(specs)})")
    if isinstance(rule, (ThresholdRule, StuckRule)):
        for f in rule.fields():
            fs = spec.fields.get(f)
            if fs is None:
                raise ConfigError(f"{bad}: field {f!r} is not a field of kind {rule.kind}")
        conds = (*rule.when, *(rule.clear or ())) if isinstance(rule, ThresholdRule) else ()
        for c in conds:
            is_bool = spec.fields[c.field].type == "bool"
            if is_bool and c.op != "is":
                raise ConfigError(f"{bad}: field {c.field} is boolean; compare it with is: true|false")
            if not is_bool and c.op == "is":
                raise ConfigError(f"{bad}: field {c.field} is numeric; is: works on boolean fields only")
        if isinstance(rule, StuckRule) and spec.fields[rule.field].type == "bool":
            raise ConfigError(f"{bad}: stuck rules need a numeric field")
    if isinstance(rule, (EventRule, DailyRatioRule)):
        attrs = spec.events.get(rule.event)
        if attrs is None:
            raise ConfigError(f"{bad}: event {rule.event!r} is not an event of kind {rule.kind}")
        conds = rule.when if isinstance(rule, EventRule) else rule.numerator
        for c in conds:
            a = attrs.get(c.field)
            if a is None:
                raise ConfigError(f"{bad}: attribute {c.field!r} is not an attribute of {rule.event}")
            if c.agg != "last":
                raise ConfigError(f"{bad}: event conditions compare single events (no agg/window)")
            if (a.type == "bool") != (c.op == "is"):
                raise ConfigError(f"{bad}: attribute {c.field}: use is: for booleans, comparisons for numbers")


def _load_file(path: Path) -> list[tuple[Rule, str]]:
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read rule file: {exc}") from None
    if doc is None:
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise ConfigError(f"{path}: a rule file is a mapping with a `rules:` list")
    out = []
    for i, raw in enumerate(doc["rules"]):
        out.append((parse_rule(raw, f"{path} #{i + 1}"), str(path)))
    return out


def _files(paths: Iterable[Path | str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        elif p.exists():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such rule file or directory")
    return files


def _collect(paths: Iterable[Path | str], errors: list[str]) -> dict[str, tuple[Rule, str]]:
    """Rules of one layer (shipped packs, or the override dir); duplicates are errors."""
    rules: dict[str, tuple[Rule, str]] = {}
    try:
        files = _files(paths)
    except ConfigError as exc:
        errors.append(str(exc))
        return rules
    for f in files:
        try:
            loaded = _load_file(f)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        for rule, where in loaded:
            if rule.id in rules:
                errors.append(f"{where}: rule {rule.id}: duplicate id (also in {rules[rule.id][1]})")
                continue
            rules[rule.id] = (rule, where)
    return rules


def check_rules(paths: Sequence[Path | str]) -> list[str]:
    """Validate rule files/directories layered in order (later ids replace earlier ones);
    returns the errors (empty when everything is valid)."""
    errors: list[str] = []
    for p in paths:
        _collect([p], errors)
    return errors


PACKS_DIR = DEFAULT_RULES_DIR / "packs"


def rule_packs() -> list[str]:
    """The regional packs shipped under `alerts/rules/packs/<name>/` (plus `default`)."""
    return ["default", *sorted(p.name for p in PACKS_DIR.iterdir() if p.is_dir())] if PACKS_DIR.is_dir() \
        else ["default"]


def pack_dir(pack: str | None) -> Path | None:
    """The overlay directory of a regional pack (`CW_RULE_PACK`); None for `default`."""
    if pack in (None, "", "default"):
        return None
    if not RULE_ID.fullmatch(pack) or not (PACKS_DIR / pack).is_dir():
        raise ConfigError(f"CW_RULE_PACK={pack!r}: unknown rule pack; shipped: {', '.join(rule_packs())}")
    return PACKS_DIR / pack


def load_rules(extra_dir: Path | str | None = None, *, defaults: Path | str | None = DEFAULT_RULES_DIR,
               pack: str | None = None) -> dict[str, Rule]:
    """The shipped packs, overlaid by id with the regional pack `pack` (CW_RULE_PACK), then
    with `extra_dir` (CW_RULES_DIR); disabled rules are dropped. Everything is validated
    before anything is returned."""
    errors: list[str] = []
    merged: dict[str, tuple[Rule, str]] = {}
    if defaults is not None:
        merged.update(_collect([defaults], errors))
    regional = pack_dir(pack)
    if regional is not None:
        merged.update(_collect([regional], errors))
    if extra_dir is not None:
        merged.update(_collect([extra_dir], errors))
    if errors:
        raise ConfigError("invalid alert rules:\n  " + "\n  ".join(errors))
    return {rid: r for rid, (r, _) in merged.items() if r.enabled}


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    return rule.model_dump(mode="json", by_alias=True, exclude_none=True)


def rules_check(args: Sequence[str] | argparse.Namespace | None = None) -> int:
    """`citywatch rules check [--dir D] [--pack P]`: validate the shipped packs, the regional
    pack P (CW_RULE_PACK) and D; 0 when valid."""
    if isinstance(args, argparse.Namespace):
        ns = args
    else:
        p = argparse.ArgumentParser(prog="citywatch rules check", description="validate alert rule files")
        p.add_argument("--dir", type=Path, default=None, help="extra/overriding rules (like CW_RULES_DIR)")
        p.add_argument("--pack", default=None, help="regional rule pack (like CW_RULE_PACK)")
        ns = p.parse_args(list(args) if args is not None else None)
    extra = getattr(ns, "dir", None)
    pack = getattr(ns, "pack", None)
    try:
        regional = pack_dir(pack)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 1
    paths: list[Path | str] = [DEFAULT_RULES_DIR] + ([regional] if regional else []) + ([extra] if extra else [])
    errors = check_rules(paths)
    if errors:
        for e in errors:
            print(f"error: {e}")
        print(f"{len(errors)} error(s)")
        return 1
    rules = load_rules(extra, pack=pack)
    print(f"ok: pack {pack or 'default'}, {len(rules)} rules ({', '.join(sorted(rules))})")
    return 0
