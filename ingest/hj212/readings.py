"""CP items of one data packet → canonical field values, quality flags and problems.

Policy (README "Data flags"): N and S are valid; any other flag is stored in
`Reading.quality[field]` with the value. A valid value outside the kind's physical range
rejects the packet (docs/contract.md §4); a flagged value outside it is dropped (the flag stays),
because a faulty sensor must not sink the healthy fields of the same monitor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from citywatch.registry import Device
from citywatch.schema import KindSpec
from ingest.hj212.codes import CODES, PARTICULATES, VALID_FLAGS, Cn
from ingest.hj212.packet import CpData, Problem

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FLAG = re.compile(r"[A-Za-z]")


@dataclass(frozen=True, slots=True)
class Values:
    values: dict[str, float]
    quality: dict[str, str]
    problems: tuple[Problem, ...]


def cp_values(cp: CpData, cn: Cn, device: Device, spec: KindSpec) -> Values:
    # Real-time packets carry -Rtd; minute/hour/day packets carry -Min/-Avg/-Max and the
    # interval value is the average.
    primary = "Rtd" if cn == Cn.REALTIME else "Avg"
    values: dict[str, float] = {}
    quality: dict[str, str] = {}
    problems: list[Problem] = list(cp.problems)

    def put(field: str, code: str, suffix: str, text: str | None, flag: str) -> None:
        if field in values or field in quality:
            problems.append(Problem(f"duplicate_field: {code}-{suffix} maps to {field}, which is already set"))
            return
        if flag not in VALID_FLAGS:
            quality[field] = flag
        if text is None:
            return
        if not _NUMBER.fullmatch(text) or not math.isfinite(value := float(text)):
            problems.append(Problem(f"bad_value: {code}-{suffix} {text[:20]!r} is not a number"))
            return
        if field in PARTICULATES:
            value *= device.hj212_scale
        fs = spec.fields[field]
        if (fs.min is not None and value < fs.min) or (fs.max is not None and value > fs.max):
            if flag in VALID_FLAGS:
                problems.append(Problem(
                    f"out_of_range: {field}={value:g} ({code}-{suffix}) outside [{_bound(fs.min, '-inf')}, "
                    f"{_bound(fs.max, 'inf')}] {fs.unit}"))
            return
        values[field] = value

    for code, slot in cp.items.items():
        field = device.hj212_aliases.get(code) or CODES.get(code)
        if field is None:
            continue  # codes without a canonical field (a34005 PM1.0, ...) are not stored
        spec_field = spec.fields.get(field)
        if spec_field is None or spec_field.type != "float":
            if code in device.hj212_aliases:
                problems.append(Problem(f"bad_alias: hj212_aliases maps {code} to {field!r}, "
                                        f"not a numeric field of kind {spec.name}"))
            continue  # a built-in code for a field this device's kind does not have
        flag = slot.get("Flag", "N")
        if not _FLAG.fullmatch(flag):
            problems.append(Problem(f"bad_flag_value: {code}-Flag {flag[:8]!r} is not a one-letter data flag"))
            continue
        flag = flag.upper()
        text = slot.get(primary)
        if text is None and "Flag" not in slot:
            problems.append(Problem(f"missing_value: {code} has no -{primary} value"))
            continue
        put(field, code, primary, text, flag)
        if field == "noise" and cn != Cn.REALTIME and "Max" in slot and "noise_max" in spec.fields:
            put("noise_max", code, "Max", slot["Max"], flag)

    if not values and not problems:
        problems.append(Problem("no_values: CP holds no value for any known field"))
    return Values(values, quality, tuple(problems))


def _bound(limit: float | None, open_end: str) -> str:
    """A range end for a reason; a field may have only a min or only a max in kinds.yaml."""
    return open_end if limit is None else f"{limit:g}"
