"""CP items of one data packet → canonical field values, flags, aggregates and problems.

Policy (README "Data flags", "Partial acceptance"):
- Every stored value keeps the flag its monitor sent (absent = N) in `flags[field]`.
- N and S are valid. A value flagged otherwise is stored with its flag (rules skip it); if
  it is outside the kind's physical range it is dropped and only its flag is stored,
  because a faulty sensor must not sink the healthy fields of the same monitor.
- A *valid* value outside the range, a value that is not a number, an unknown code: that
  item is a problem — dead-lettered with its reason while the other items are stored.
- Interval packets (minute/hour/day) carry `-Avg` (stored as the field), `-Min`, `-Max`
  and `-Cou` (stored as `<field>_min`, `<field>_max`, `<field>_cou`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from citywatch.registry import Device
from citywatch.schema import FieldSpec, KindSpec
from ingest.hj212.codes import CODES, PARTICULATES, VALID_FLAGS, Cn
from ingest.hj212.packet import CpData, Problem

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FLAG = re.compile(r"[A-Za-z]")
_STANDARD = {code.lower(): field for code, field in CODES.items()}
# Interval packets: suffix → stored field-name suffix ("" = the field itself).
_INTERVAL_SUFFIXES = (("Avg", ""), ("Min", "_min"), ("Max", "_max"), ("Cou", "_cou"))


@dataclass(frozen=True, slots=True)
class Values:
    values: dict[str, float]  # canonical field → the real-time value or the interval average
    flags: dict[str, str]  # canonical field → its data flag (every stored field)
    extra: dict[str, float]  # interval packets: <field>_min / _max / _cou
    problems: tuple[Problem, ...]  # items not stored, each with its reason


def field_for(code: str, device: Device, spec: KindSpec) -> str | None:
    """The canonical field of an item code: the device's alias, the kind's names, the standard's."""
    aliases = device.hj212_aliases
    if aliases:
        hit = aliases.get(code)
        if hit is not None:
            return hit
    low = code.lower()
    return spec.hj212_codes.get(low) or _STANDARD.get(low)


def cp_values(cp: CpData, cn: Cn, device: Device, spec: KindSpec) -> Values:
    realtime = cn == Cn.REALTIME
    values: dict[str, float] = {}
    flags: dict[str, str] = {}
    extra: dict[str, float] = {}
    problems: list[Problem] = list(cp.problems)

    def number(code: str, suffix: str, text: str, field: str, fs: FieldSpec, flag: str,
               ranged: bool = True) -> float | None:
        if not _NUMBER.fullmatch(text) or not math.isfinite(value := float(text)):
            problems.append(Problem(f"bad_value: {code}-{suffix} {text[:20]!r} is not a number"))
            return None
        if field in PARTICULATES:
            value *= device.hj212_scale
        if ranged and ((fs.min is not None and value < fs.min) or (fs.max is not None and value > fs.max)):
            if flag in VALID_FLAGS:
                problems.append(Problem(
                    f"out_of_range: {field}={value:g} ({code}-{suffix}) outside [{_bound(fs.min, '-inf')}, "
                    f"{_bound(fs.max, 'inf')}] {fs.unit}"))
            return None  # a flagged value out of range: dropped, its flag is still stored
        return value

    for code, slot in cp.items.items():
        if code in device.hj212_ignore:
            continue
        field = field_for(code, device, spec)
        fs = spec.fields.get(field) if field is not None else None
        if fs is None or fs.type != "float":
            if field is not None and code in device.hj212_aliases:
                problems.append(Problem(f"bad_alias: hj212_aliases maps {code} to {field!r}, "
                                        f"not a numeric field of kind {spec.name}"))
            else:
                problems.append(Problem(f"unknown_code: {code} has no numeric field in kind {spec.name} "
                                        f"(map it with hj212_aliases, or drop it with hj212_ignore)"))
            continue
        assert field is not None
        flag = slot.get("Flag", "N")
        if not _FLAG.fullmatch(flag):
            problems.append(Problem(f"bad_flag_value: {code}-Flag {flag[:8]!r} is not a one-letter data flag"))
            continue
        flag = flag.upper()
        if field in flags:
            problems.append(Problem(f"duplicate_field: {code} maps to {field}, which is already set"))
            continue
        if realtime:
            text = slot.get("Rtd")
            if text is None:
                if "Flag" in slot and flag not in VALID_FLAGS:
                    flags[field] = flag  # "sensor down", no value: the flag alone is stored
                else:
                    problems.append(Problem(f"missing_value: {code} has no -Rtd value"))
                continue
            value = number(code, "Rtd", text, field, fs, flag)
            if value is not None:
                values[field] = value
                flags[field] = flag
            elif flag not in VALID_FLAGS:
                flags[field] = flag
            continue
        got = False
        for suffix, stored in _INTERVAL_SUFFIXES:
            text = slot.get(suffix)
            if text is None:
                continue
            # A count/total (Cou) is not on the field's physical scale: only finite is checked.
            value = number(code, suffix, text, field, fs, flag, ranged=suffix != "Cou")
            if value is None:
                continue
            got = True
            if stored:
                extra[field + stored] = value
            else:
                values[field] = value
        if got or ("Flag" in slot and flag not in VALID_FLAGS):
            flags[field] = flag
        elif not any(s in slot for s, _ in _INTERVAL_SUFFIXES):
            problems.append(Problem(f"missing_value: {code} has no -Avg/-Min/-Max/-Cou value"))

    if not values and not extra:
        problems.append(Problem("no_values: CP holds no storable value for any field of kind " + spec.name))
    return Values(values, flags, extra, tuple(problems))


def _bound(limit: float | None, open_end: str) -> str:
    """A range end for a reason; a field may have only a min or only a max in kinds.yaml."""
    return open_end if limit is None else f"{limit:g}"
