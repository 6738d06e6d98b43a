"""JSON payloads (docs/contract.md §3), built with one %-format per message.

A template per kind (`{"ts":%s,"seq":%d,"values":{"pm10":%.1f,...}}`) is an order of
magnitude cheaper than json.dumps of a dict; payload faults, being rare, go through
json.dumps on purpose so they are malformed in exactly the intended way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from citywatch.schema import kinds as schema_kinds
from simulators.profiles import DeviceProfile
from simulators.timeutil import rfc3339


@dataclass(frozen=True, slots=True)
class Encoder:
    """Encodes one kind's readings and events."""

    kind: str
    ts_format: str
    offset_ms: int
    fields: tuple[str, ...]
    bools: frozenset[str]
    template: str
    ranges: dict[str, tuple[float | None, float | None]]

    @classmethod
    def for_profile(cls, profile: DeviceProfile, *, offset_ms: int) -> "Encoder":
        spec = schema_kinds()[profile.kind]
        parts, bools = [], set()
        for name, f in spec.fields.items():
            if f.type == "bool":
                parts.append(f'"{name}":%s')
                bools.add(name)
            else:
                parts.append(f'"{name}":%.{profile.decimals.get(name, 2)}f')
        template = '{"ts":%s,"seq":%d,"values":{' + ",".join(parts) + "}}"
        ranges = {n: (f.min, f.max) for n, f in spec.fields.items() if f.type == "float"}
        return cls(profile.kind, profile.ts_format, offset_ms, tuple(spec.fields), frozenset(bools), template, ranges)

    def ts_texts(self, ts_ms: np.ndarray) -> list[str]:
        """The `ts` member as JSON text: a quoted RFC 3339 string or bare epoch ms."""
        if self.ts_format == "epoch_ms":
            return [str(v) for v in ts_ms.tolist()]
        return ['"' + s + '"' for s in rfc3339(ts_ms, self.offset_ms)]

    def telemetry(self, ts_text: list[str], seq: np.ndarray, values: dict[str, np.ndarray]) -> list[bytes]:
        columns = [
            np.where(values[n], "true", "false").tolist() if n in self.bools else values[n].tolist()
            for n in self.fields
        ]
        template = self.template
        return [(template % row).encode() for row in zip(ts_text, seq.tolist(), *columns)]

    def event(self, ts_ms: int, type_: str, attrs: dict[str, Any]) -> bytes:
        ts: Any = ts_ms if self.ts_format == "epoch_ms" else rfc3339(np.array([ts_ms]), self.offset_ms)[0]
        return json.dumps({"ts": ts, "type": type_, **attrs}, ensure_ascii=False, separators=(",", ":")).encode()

    def malformed(self, fault: str, *, ts_text: str, seq: int, values: dict[str, Any], field: str,
                  rng: np.random.Generator) -> bytes:
        """A payload that must be rejected, broken in the way `fault` names."""
        doc: dict[str, Any] = {"ts": json.loads(ts_text), "seq": seq, "values": dict(values)}
        if fault == "not_json":
            good = (self.template % (ts_text, seq, *(
                ("true" if values[n] else "false") if n in self.bools else values[n] for n in self.fields))).encode()
            # A torn frame: cut mid-object (what a flaky modem delivers) or binary garbage.
            if rng.random() < 0.5:
                return good[: max(1, int(len(good) * rng.uniform(0.2, 0.9)))]
            return b"\xff\xfe" + rng.bytes(16)
        if fault == "wrong_type":
            doc["values"][field] = f"{doc['values'][field]}"  # a number sent as a string
        elif fault == "nan":
            doc["values"][field] = float("nan")  # json.dumps writes the non-standard NaN token
        elif fault == "missing_ts":
            del doc["ts"]
        elif fault == "out_of_range":
            lo, hi = self.ranges[field]
            doc["values"][field] = (lo - 100.0) if (lo is not None and rng.random() < 0.5) else (hi or 1e6) * 10
        return json.dumps(doc, separators=(",", ":")).encode()
