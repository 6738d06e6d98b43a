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

The models are in alerts/rule_models.py (re-exported here); this module loads and checks
rule files. Loading validates the whole set first (file, rule id, what is wrong) and only then is it
used; `CW_RULES_DIR` adds rules and replaces shipped ones with the same id.
"""


from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from citywatch.errors import ConfigError
from citywatch.schema import kinds as load_kinds

from alerts.rule_models import (  # the rule format, re-exported: `from alerts.rules import Cond` keeps working
    SIX100_ITEMS, Agg, Baseline, Citation, Cond, DEFAULT_RULES_DIR, DailyRatioRule, DeadmanRule, Duration, EventRule,
    MAX_TEMPLATE_CHARS, NUMBER_FORMAT_SPEC, NUMBER_TEMPLATE_FIELDS, Op, PerDay, RULE_ID, RULE_TYPES, Rule,
    RuleBase, SEVERITIES, Schedule, Severity, Six100Spec, StuckRule, TEMPLATE_FIELDS, Text, Threshold, ThresholdRule,
    check_template, parse_duration, parse_schedule, template_values)


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
    model = RULE_TYPES.get(rtype) if isinstance(rtype, str) else None
    if model is None:
        raise ConfigError(f"{where}: rule {rid}: type: must be one of {sorted(RULE_TYPES)}, got {rtype!r}")
    try:
        rule = model.model_validate({**doc, "type": rtype})
    except ValidationError as exc:
        raise ConfigError(f"{where}: rule {rid}: {_fmt_error(exc)}") from None
    _check_schema(rule, where)
    return rule


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
    if not pack or pack == "default":
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
